"""A member given several host URLs (the nodes of a cluster): ``join([URL1, URL2])`` and
``matchlock join URL1 URL2`` try them in turn, moving on at every failure to connect and every
lost connection, and continue from what they hold.

With real parts: a URL where nothing listens first, then a live host; and real ``matchlock
serve`` processes, the first SIGKILLed mid-room and a second started on the same logs (the same
``--log-dir``, or the same NATS stream), its members finishing there with the issue's property:
the same ``piece -> folder`` everywhere, and every event a member heard in the host's log.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from matchlock.app.configfile import write_room_config
from matchlock.app.hosting import RoomHost
from matchlock.app.joining import join
from matchlock.app.keys import save_keypair
from matchlock.cli import main
from matchlock.core.config import PinnedPiece
from matchlock.core.errors import UsageError
from matchlock.core.events import Event
from matchlock.store.eventlog import read_events, read_store, replay_file
from matchlock.store.nats import NatsRepository
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport import Connection
from matchlock.transport.connect import listen, open_connection
from tests.app.room_content import DOJO, KFM
from tests.app.test_crash_kill import Process, events_in, write_lock
from tests.app.test_join import ROOM, match_lock
from tests.app.test_rooms_e2e import free_port
from tests.downloads.conftest import ContentServer, sha256, zip_bytes
from tests.store.nats_server import NatsServer, nats_server_fixture

__all__ = ["nats_server_fixture"]

USERS = ("alice", "bob", "carol")
BIG = zip_bytes({"big.sff": random.Random(15).randbytes(2 << 20)})
"""Served slowly (64 KiB every 20 ms): the room is still running when its host is killed."""

FAILOVER_ROOM = signed_room(
    "failover",
    USERS,
    {
        key: PinnedPiece(sha256=sha256(data), size=len(data))
        for key, data in (("chars/kfm", KFM), ("chars/big", BIG), ("stages/dojo", DOJO))
    },
)


@pytest.mark.parametrize("scheme", ["ws", "tcp"])
async def test_a_dead_url_first_then_a_live_host(
    server: ContentServer, tmp_path: Path, scheme: str
) -> None:
    """Nothing listens at the first URL: the member moves on to the second, a live host, and
    completes there, without waiting for the first to come up."""
    dead, live = f"{scheme}://127.0.0.1:{free_port()}", f"{scheme}://127.0.0.1:{free_port()}"
    host = RoomHost(tmp_path / "host")
    await host.start()
    listener = await listen(live, host)
    tried: list[str] = []

    async def connect(url: str) -> Connection:
        tried.append(url)
        return await open_connection(url)

    folders = await join(
        [dead, live],
        room=signed_room("urls", ("alice",), dict(ROOM.content)),
        user_id="alice",
        key=insecure_key("alice"),
        config=match_lock(server, ("ok",)),
        dest=tmp_path / "cache",
        connect=connect,
        retry_delay=30,  # a pause would outlast the deadline: moving on takes none
        deadline=20,
    )
    await listener.close()
    await host.stop()
    assert tried == [dead, live]
    assert set(folders) == {"chars/kfm", "stages/dojo"}
    assert replay_file(tmp_path / "host" / "urls.log").state.status == "closed"


async def test_join_needs_a_url(server: ContentServer, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="at least one host URL"):
        await join(
            [],
            room=ROOM,
            user_id="alice",
            key=insecure_key("alice"),
            config=match_lock(server, ("ok",)),
            dest=tmp_path / "cache",
        )


def test_join_hosts_at_one_url_only(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["join", "tcp://127.0.0.1:7500", "tcp://127.0.0.1:7501", "--host", "--room", "r.json"]
    assert main([*args, "--user", "alice", "--key", "a.key", "--config", "c.json"]) == 2
    assert "--host hosts the room at one URL, not 2" in capsys.readouterr().err


class Failover:
    """Two ``matchlock serve`` nodes on one store (``--log-dir`` or ``--store``) and three
    ``matchlock join URL_A URL_B`` members downloading from a slow HTTP server."""

    def __init__(self, tmp: Path, server: ContentServer, store: tuple[str, str]) -> None:
        self.tmp = tmp
        self.urls = [f"ws://127.0.0.1:{free_port()}" for _ in range(2)]
        self.nodes = [
            Process(f"node{n}", ("serve", "--listen", url[5:], *store), tmp)
            for n, url in enumerate(self.urls)
        ]
        write_room_config(FAILOVER_ROOM, tmp / "room.json")
        write_lock(tmp / "matchlock.json", server, BIG, kfm_route="ok")
        self.members = {user: Process(user, self._join_args(user), tmp) for user in USERS}

    def _join_args(self, user: str) -> tuple[str, ...]:
        save_keypair(insecure_key(user), self.tmp / f"{user}.key", overwrite=True)
        return (
            "join", *self.urls, "--room", "room.json", "--config", "matchlock.json", "--json",
            "--user", user, "--key", f"{user}.key", "--dest", f"{user}/cache",
            "--log", f"{user}/room.log", "--deadline", "60", "--retry-delay", "0.1",
        )  # fmt: skip

    def heard(self, user: str) -> list[dict[str, object]]:
        """The events ``user``'s log holds now."""
        return events_in(self.tmp / user / "room.log")

    async def run(self) -> None:
        """Node 0 hosts until every member has joined and one piece finished; then it is
        SIGKILLed and node 1 starts on the same store; the members finish on node 1."""
        await self.nodes[0].start(first_line=True)
        for member in self.members.values():
            await member.start()
        async with asyncio.timeout(60):
            while not any(e["type"] == "piece_finished" for e in self.heard("alice")):
                await asyncio.sleep(0.005)
            await self.nodes[0].kill()
            await self.nodes[1].start(first_line=True)
            await asyncio.gather(*(m.wait() for m in self.members.values()))
        await self.nodes[1].stop()

    def check(self, host_events: list[Event]) -> None:
        """Every member exited 0 with the same folders, after losing node 0 and moving on to
        node 1; every event it heard is the host's, up to the close; nobody was refused."""
        maps = {}
        for user, member in self.members.items():
            code, out, err = member.runs[-1]
            assert code == 0, f"{user} exited {code}:\n{out[-2000:]}\n{err[-3000:]}"
            result = json.loads(out.splitlines()[-1])
            cache = (self.tmp / user / "cache").resolve()
            maps[user] = {k: Path(v).relative_to(cache) for k, v in result["folders"].items()}
            assert f"at {self.urls[0]}" in err and f"; {self.urls[1]} next" in err, err
            heard = read_events(self.tmp / user / "room.log").events
            assert heard == host_events[: len(heard)], f"{user}'s log is not the host's"
            assert heard[-1].type == "room_closed"
        assert all(m == maps["alice"] for m in maps.values()), maps
        assert len(self.members["alice"].runs) == 1  # one process each: no restart helped
        assert not [e for e in host_events if e.type == "member_refused"]


@pytest.fixture
async def slow_server() -> AsyncIterator[ContentServer]:
    """The room's pieces on a real HTTP server; the big one served slowly."""
    content = ContentServer()
    for name, data in (("kfm.zip", KFM), ("big.zip", BIG), ("dojo.zip", DOJO)):
        content.add(name, data)
    await content.start()
    yield content
    await content.stop()


async def test_members_move_to_the_second_node_when_the_first_is_killed_mid_room(
    slow_server: ContentServer, tmp_path: Path
) -> None:
    room = Failover(tmp_path, slow_server, ("--log-dir", str(tmp_path / "logs")))
    await room.run()
    host_log = tmp_path / "logs" / "failover.log"
    state = replay_file(host_log).state
    assert state.status == "closed"
    assert {u: m.status for u, m in state.members.items()} == dict.fromkeys(USERS, "goodbye")
    room.check(list(read_events(host_log).events))


async def test_members_move_to_the_second_node_on_a_nats_store(
    slow_server: ContentServer, tmp_path: Path, nats_server: NatsServer
) -> None:
    room = Failover(tmp_path, slow_server, ("--store", nats_server.url))
    await room.run()
    repository = NatsRepository(nats_server.url)
    try:
        contents = read_store(repository.store("failover"))
    finally:
        await repository.close()
    assert contents.events[-1].type == "room_closed"
    room.check(list(contents.events))
