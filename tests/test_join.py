"""Whole rooms in one process: real keys, real downloads from a real HTTP server on 127.0.0.1,
real logs; the members reach the host through the in-memory transport (the transports' own
contract tests run the same flow over websockets and TCP)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from matchlock import events as ev
from matchlock.client import ClientProtocol
from matchlock.config import MatchLockConfig, PinnedPiece, RoomConfig
from matchlock.errors import JoinRefusedError, RestrictionError, RoomIncompleteError, UsageError
from matchlock.eventlog import EventLog, read_events, replay_file
from matchlock.hosting import RoomHost
from matchlock.joining import join
from matchlock.testing import insecure_key, signed_room
from matchlock.transport import Connection
from matchlock.transport.connect import listen, open_connection
from matchlock.transport.lan import serve_lan
from matchlock.transport.memory import memory_connector
from tests.downloads.conftest import ContentServer, config, piece, sha256, zip_bytes
from tests.room_content import DOJO, KFM, content

USERS = ("alice", "bob", "carol", "dave")


def match_lock(
    server: ContentServer, kfm_routes: tuple[str, ...] = ("missing", "ok")
) -> MatchLockConfig:
    return config(content(server, kfm_routes))


ROOM = signed_room(
    "match1",
    USERS,
    {
        "chars/kfm": PinnedPiece(sha256=sha256(KFM), size=len(KFM)),
        "stages/dojo": PinnedPiece(sha256=sha256(DOJO), size=len(DOJO)),
    },
)


async def member(
    host: RoomHost, tmp: Path, user: str, locks: MatchLockConfig, **options: Any
) -> dict[str, Path]:
    return await join(
        "memory://",
        room=ROOM,
        user_id=user,
        key=insecure_key(user),
        config=locks,
        dest=tmp / user / "cache",
        log_path=tmp / user / "room.log",
        connect=memory_connector(host),
        retry_delay=0.05,
        **options,
    )


async def test_four_members_complete_a_room_with_real_downloads(
    server: ContentServer, tmp_path: Path
) -> None:
    host = RoomHost(tmp_path / "host")
    await host.start()
    locks = match_lock(server)
    results = await asyncio.gather(*(member(host, tmp_path, u, locks, deadline=30) for u in USERS))
    await host.stop()
    for user, folders in zip(USERS, results, strict=True):
        assert set(folders) == {"chars/kfm", "stages/dojo"}
        assert (folders["chars/kfm"] / "kfm.def").read_bytes().startswith(b"[Info]")
        assert str(folders["chars/kfm"]).startswith(str(tmp_path / user))
    final = replay_file(tmp_path / "host" / "match1.log").state
    assert final.status == "closed"
    assert all(m.status == "goodbye" for m in final.members.values())
    kfm = final.members["alice"].pieces["chars/kfm"]
    assert [f.url for f in kfm.failures] == [server.url("missing", "kfm.zip")]
    for user in USERS:  # every member's own log replays to the host's end state
        assert replay_file(tmp_path / user / "room.log").state == final


async def test_a_piece_failing_for_one_member_is_seen_by_all(
    server: ContentServer, tmp_path: Path
) -> None:
    host = RoomHost(tmp_path / "host")
    await host.start()
    good, broken = match_lock(server), match_lock(server, kfm_routes=("missing",))
    seen: list[str] = []
    runs = [
        member(host, tmp_path, "alice", good, deadline=5, on_event=lambda e: seen.append(e.type)),
        member(host, tmp_path, "bob", broken, deadline=5, retries=0),
    ]
    outcomes = await asyncio.gather(*runs, return_exceptions=True)
    await host.stop()
    assert isinstance(
        outcomes[1], RoomIncompleteError
    ) and "bob could not install chars/kfm" in str(outcomes[1])
    assert "/missing/kfm.zip: HTTP 404" in str(outcomes[1])  # what was tried, and why
    assert isinstance(outcomes[0], RoomIncompleteError) and "did not complete within 5" in str(
        outcomes[0]
    )
    alice_view = outcomes[0].state
    assert alice_view.members["bob"].pieces["chars/kfm"].status == "error"
    assert alice_view.members["bob"].pieces["chars/kfm"].failures[0].reason
    assert "piece_failed" in seen


async def test_a_member_whose_config_differs_is_stopped_before_connecting(
    server: ContentServer, tmp_path: Path
) -> None:
    other = config(
        {
            "chars": {
                "mandatory": True,
                "pieces": {"kfm": piece(b"other bytes", server.url("ok", "kfm.zip"))},
            }
        }
    )
    host = RoomHost(None)
    with pytest.raises(RestrictionError) as caught:
        await member(host, tmp_path, "alice", other)
    text = str(caught.value)
    assert (
        "chars/kfm: the match-lock config has sha256" in text
        and "stages/dojo is not in the match-lock config" in text
    )


async def test_an_unexpected_user_is_refused(server: ContentServer, tmp_path: Path) -> None:
    host = RoomHost(None)
    await host.start()
    forged = ROOM.model_copy(
        update={"signatures": {**ROOM.signatures, "alice": ROOM.signatures["bob"]}}
    )
    with pytest.raises(JoinRefusedError) as caught:
        await join(
            "memory://",
            room=forged,
            user_id="alice",
            key=insecure_key("alice"),
            config=match_lock(server),
            dest=tmp_path,
            connect=memory_connector(host),
        )
    assert caught.value.code == "unsigned-config"
    await host.stop()


async def test_disconnect_and_rejoin_mid_download(server: ContentServer, tmp_path: Path) -> None:
    big = zip_bytes({"big.bin": random.Random(1).randbytes(1 << 20)})  # 1 MiB, served slowly
    server.add("big.zip", big)
    locks = config(
        {
            "chars": {
                "mandatory": True,
                "pieces": {"big": piece(big, server.url("slow", "big.zip"), unpack="zip")},
            }
        }
    )
    room = signed_room(
        "slow", ("alice", "bob"), {"chars/big": PinnedPiece(sha256=sha256(big), size=len(big))}
    )
    host = RoomHost(tmp_path / "host")
    await host.start()
    plain = memory_connector(host)
    cut: list[bool] = []

    class CutAfterProgress:
        """Bob's first connection: lost right after the room relays his first progress."""

        def __init__(self, conn: Any) -> None:
            self.conn = conn
            self.send_nowait, self.close = conn.send_nowait, conn.close

        async def recv(self) -> bytes:
            frame: bytes = await self.conn.recv()
            if b'"piece_progress","user_id":"bob"' in frame:
                await self.conn.close()
            return frame

    async def flaky(url: str) -> Any:
        conn = await plain(url)
        if cut:
            return conn
        cut.append(True)
        return CutAfterProgress(conn)

    async def run(user: str, connect: Any) -> dict[str, Path]:
        return await join(
            "memory://",
            room=room,
            user_id=user,
            key=insecure_key(user),
            config=locks,
            dest=tmp_path / user,
            log_path=tmp_path / f"{user}.log",
            connect=connect,
            retry_delay=0.05,
            deadline=30,
        )

    results = await asyncio.gather(run("bob", flaky), run("alice", plain))
    await host.stop()
    assert all(set(r) == {"chars/big"} for r in results)
    log = replay_file(tmp_path / "host" / "slow.log")
    assert log.state.status == "closed"
    bob_events = [
        (e.type, getattr(e, "reason", ""))
        for e in read_events(tmp_path / "host" / "slow.log").events
        if getattr(e, "user_id", "") == "bob"
    ]
    first_drop = bob_events.index(("member_disconnected", "connection closed"))
    assert ("member_joined", "") in bob_events[first_drop:]
    assert replay_file(tmp_path / "bob.log").state == log.state


async def test_an_embedded_installer_and_an_open_log(tmp_path: Path) -> None:
    """``install`` replaces the download engine; ``log`` is an open log ``join`` leaves open."""
    host = RoomHost(tmp_path / "host")
    await host.start()
    room = signed_room("embedded", ("alice",), {"chars/kfm": PinnedPiece(sha256="0" * 64, size=3)})
    installed: list[list[str]] = []

    async def install(keys: list[str], emit: Callable[[ev.Event], None]) -> dict[str, Path]:
        installed.append(keys)
        for key in keys:
            emit(ev.PieceStarted(at=0.0, user_id="local", piece=key))
            emit(ev.PieceFinished(at=0.0, user_id="local", piece=key, source="embedded"))
        return {key: tmp_path / "folder" for key in keys}

    log = await EventLog.create(tmp_path / "alice.log", "client/embedded/alice")
    locks = config({"chars": {"mandatory": True, "pieces": {"kfm": _pinned(room)}}})
    options: dict[str, Any] = dict(
        room=room, user_id="alice", key=insecure_key("alice"), config=locks, dest=tmp_path
    )
    with pytest.raises(UsageError, match="log_path or an open log"):
        await join("memory://", log=(log, []), log_path=tmp_path / "x.log", **options)
    connect = memory_connector(host)
    folders = await join("memory://", log=(log, []), install=install, connect=connect, **options)
    assert folders == {"chars/kfm": tmp_path / "folder"} and installed == [["chars/kfm"]]
    await log.append(ev.DownloadClosed(at=0.0))  # join left it open
    await log.close()
    await host.stop()
    assert replay_file(tmp_path / "host" / "embedded.log").state.status == "closed"


def _pinned(room: RoomConfig, key: str = "chars/kfm") -> dict[str, Any]:
    pinned = room.content[key]
    return {
        "sha256": pinned.sha256,
        "size": pinned.size,
        "resolvables": [{"url": "http://127.0.0.1:9/unused.zip"}],
    }


@pytest.mark.parametrize("scheme", ["ws", "tcp"])
@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webs",
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",  # a proxy, host down
    ],
)
async def test_a_member_retries_a_host_that_dies_during_the_handshake(
    server: ContentServer, tmp_path: Path, scheme: str, answer: bytes
) -> None:
    """Issue 9.5: whatever answers on the host's port first (a socket that closes at once, half
    an HTTP response, a proxy's 502), the member tries again until the real host comes up."""
    calls: list[bytes] = []

    async def dying_host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        calls.append(await reader.read(100))
        writer.write(answer)
        writer.close()

    impostor = await asyncio.start_server(dying_host, "127.0.0.1", 0)
    port = impostor.sockets[0].getsockname()[1]
    url = f"{scheme}://127.0.0.1:{port}"
    room = signed_room("retry", ("alice",), dict(ROOM.content))
    joining = asyncio.create_task(
        join(
            url,
            room=room,
            user_id="alice",
            key=insecure_key("alice"),
            config=match_lock(server, ("ok",)),
            dest=tmp_path / "cache",
            retry_delay=0.02,
            deadline=60,
        )
    )
    while len(calls) < 3 and not joining.done():
        await asyncio.sleep(0.02)
    assert not joining.done(), joining.exception()  # still trying, not dead
    impostor.close()
    await impostor.wait_closed()
    host = RoomHost(tmp_path / "host")
    await host.start()
    listener = await listen(url, host)
    folders = await joining
    await listener.close()
    await host.stop()
    assert set(folders) == {"chars/kfm", "stages/dojo"}
    assert replay_file(tmp_path / "host" / "retry.log").state.status == "closed"


async def test_piece_events_during_a_log_write_never_overtake_the_catch_up(tmp_path: Path) -> None:
    """Found by the simulation: a welcome's catch-up frames were sent only once the member's
    log had recorded the welcome, and a progress report made during that write went first;
    the catch-up's lower progress then arrived second and was refused. (Every append of this
    member's log is fsynced, so that each one waits for the disk.)"""
    room = signed_room(
        "order", ("alice",), {"chars/big": PinnedPiece(sha256="0" * 64, size=1 << 30)}
    )
    host = RoomHost(tmp_path / "host")
    await host.start()
    plain = memory_connector(host)
    connections: list[Any] = []

    class CutAtProgress:
        """The first connection: lost once it relays a progress, so the download goes on."""

        def __init__(self, conn: Any) -> None:
            self.conn = conn
            self.send_nowait, self.close = conn.send_nowait, conn.close

        async def recv(self) -> bytes:
            frame: bytes = await self.conn.recv()
            if b'"piece_progress"' in frame:
                await self.conn.close()
            return frame

    async def cut_once(url: str) -> Any:
        conn = await plain(url)
        connections.append(conn)
        return CutAtProgress(conn) if len(connections) == 1 else conn

    async def install(keys: list[str], emit: Callable[[ev.Event], None]) -> dict[str, Path]:
        emit(ev.PieceStarted(at=0.0, user_id="local", piece="chars/big"))
        done = after = 0
        while after < 500:  # a report at every turn of the loop, well past the reconnect
            done += 1
            after += len(connections) > 1
            emit(ev.PieceProgress(at=0.0, user_id="local", piece="chars/big", done=done))
            await asyncio.sleep(0)
        emit(ev.PieceFinished(at=0.0, user_id="local", piece="chars/big", source="here"))
        return {"chars/big": tmp_path}

    locks = config({"chars": {"mandatory": True, "pieces": {"big": _pinned(room, "chars/big")}}})
    log = await EventLog.create(tmp_path / "alice.log", "client/order/alice", durability="every")
    await join(
        "memory://", room=room, user_id="alice", key=insecure_key("alice"), config=locks,
        dest=tmp_path, log=(log, []), connect=cut_once, install=install, retry_delay=0.01,
        deadline=30,
    )  # fmt: skip
    await log.close()
    await host.stop()
    events = read_events(tmp_path / "host" / "order.log").events
    assert len(connections) >= 2
    assert [e for e in events if e.type == "member_refused"] == []
    assert replay_file(tmp_path / "host" / "order.log").state.status == "closed"


async def test_a_member_asks_the_lan_again_until_a_host_answers(
    server: ContentServer, tmp_path: Path
) -> None:
    """Issue 9.5 on ``lan://``: nobody answering discovery (the host is restarting) is a reason
    to ask again, not to give up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        discovery: int = probe.getsockname()[1]
    asked: list[str] = []

    async def connect(url: str) -> Connection:
        asked.append(url)
        return await open_connection(
            url, discovery_port=discovery, discovery_address="127.0.0.1", discovery_timeout=0.1
        )

    room = signed_room("lan-retry", ("alice",), dict(ROOM.content))
    joining = asyncio.create_task(
        join(
            "lan://lan-retry",
            room=room,
            user_id="alice",
            key=insecure_key("alice"),
            config=match_lock(server, ("ok",)),
            dest=tmp_path / "cache",
            connect=connect,
            retry_delay=0.02,
            deadline=60,
        )
    )
    while len(asked) < 3 and not joining.done():
        await asyncio.sleep(0.02)
    assert not joining.done(), joining.exception()  # still asking, not dead
    host = RoomHost(tmp_path / "host")
    await host.start()
    lan = await serve_lan(host, "127.0.0.1", 0, announce=("lan-retry",), discovery_port=discovery)
    folders = await joining
    await lan.close()
    await host.stop()
    assert set(folders) == {"chars/kfm", "stages/dojo"}


async def test_a_member_whose_last_connection_the_host_still_holds_joins_again_later(
    server: ContentServer, tmp_path: Path
) -> None:
    """A restarted member often comes back before the host noticed its old connection die:
    ``already-connected`` only delays it."""
    host = RoomHost(tmp_path / "host")
    await host.start()
    room = signed_room("again", ("alice",), dict(ROOM.content))
    plain = memory_connector(host)
    old = await plain("memory://")  # alice's previous process, not yet noticed gone
    previous = ClientProtocol(room, "alice", insecure_key("alice"))
    old.send_nowait(previous.hello())
    while previous.phase != "joined":
        for frame in previous.receive(await old.recv()).sends:
            old.send_nowait(frame)
    tries: list[str] = []

    async def connect(url: str) -> Any:
        tries.append(url)
        return await plain(url)

    joining = asyncio.create_task(
        join(
            "memory://",
            room=room,
            user_id="alice",
            key=insecure_key("alice"),
            config=match_lock(server, ("ok",)),
            dest=tmp_path / "cache",
            connect=connect,
            retry_delay=0.02,
            deadline=60,
        )
    )
    while len(tries) < 3 and not joining.done():
        await asyncio.sleep(0.02)
    assert not joining.done(), joining.exception()
    await old.close()
    assert set(await joining) == {"chars/kfm", "stages/dojo"}
    await host.stop()
