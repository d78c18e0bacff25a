"""Real ``matchlock serve --store nats://...`` node processes and a room whose members are
spread over them, for the cluster tests (``tests/app/test_cluster*.py``).

A node is a real process on a free 127.0.0.1 port; a member is a real :func:`matchlock.join`
with its own log and cache, downloading the room's pieces from the tests' content server.
:func:`check_room` is the property every cluster test ends with: the room's log, read straight
from the stream, verifies and folds to a closed room where everyone said goodbye, and every
member heard exactly a prefix of it, in its order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matchlock.app.joining import join
from matchlock.core.client import ClientProtocol
from matchlock.core.config import MatchLockConfig, PinnedPiece, RoomConfig
from matchlock.core.errors import LogError
from matchlock.core.events import Event, PieceProgress, PieceStarted
from matchlock.store.eventlog import EventLog, fold_events, read_events, read_store
from matchlock.store.nats import NatsRepository
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport import Connection
from matchlock.transport.connect import open_connection
from tests.app.room_content import DOJO, KFM, KFM_DEF, content
from tests.app.test_rooms_e2e import REPO, free_port
from tests.downloads.conftest import ContentServer, config, piece, sha256, zip_bytes

BIG = zip_bytes({"big.sff": random.Random(15).randbytes(4 << 20)})
"""A piece served slowly (``/slow/``: 64 KiB every 20 ms, over a second), so that a room lasts
long enough for something to be killed in the middle of it."""

PINNED = {
    "chars/kfm": PinnedPiece(sha256=sha256(KFM), size=len(KFM)),
    "stages/dojo": PinnedPiece(sha256=sha256(DOJO), size=len(DOJO)),
}


@dataclass
class Node:
    """One ``matchlock serve --store`` process, restartable on its port."""

    store: str
    port: int
    directory: Path
    process: asyncio.subprocess.Process | None = None
    runs: int = 0

    @property
    def url(self) -> str:
        """Where members join."""
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the node and wait until it listens (it prints its URL)."""
        self.runs += 1
        stderr = (self.directory / f"node-{self.port}-run{self.runs}.err").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "matchlock", "-v", "serve", "--listen", f"127.0.0.1:{self.port}",
            "--store", self.store, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        stderr.close()
        assert self.process.stdout is not None
        async with asyncio.timeout(20):
            line = await self.process.stdout.readline()
        assert line.decode().strip() == self.url, line

    async def kill(self) -> None:
        """SIGKILL the node (a machine dying: nothing flushed, nobody told)."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM the node if it runs; its exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            return await self.process.wait()

    def stderr(self) -> str:
        """What every run of the node said on stderr."""
        return "".join(
            path.read_text(errors="replace")
            for path in sorted(self.directory.glob(f"node-{self.port}-run*.err"))
        )


async def start_nodes(store: str, count: int, directory: Path) -> list[Node]:
    """``count`` running nodes sharing the NATS servers ``store``."""
    nodes = [Node(store, free_port(), directory) for _ in range(count)]
    for node in nodes:
        await node.start()
    return nodes


class Room:
    """A signed room for ``users``, each with a cache and a log under ``directory``."""

    def __init__(self, room_id: str, users: tuple[str, ...], server: ContentServer,
                 directory: Path, slow: bool = False) -> None:  # fmt: skip
        self.room_id, self.users, self.directory = room_id, users, directory
        pinned, collections = dict(PINNED), content(server, ("ok",))
        if slow:  # and the big piece, slowly
            server.add("big.zip", BIG)
            pinned["chars/big"] = PinnedPiece(sha256=sha256(BIG), size=len(BIG))
            big = piece(BIG, server.url("slow", "big.zip"), unpack="zip")
            collections["chars"]["pieces"]["big"] = big
        self.config: RoomConfig = signed_room(room_id, users, pinned)
        self.lock: MatchLockConfig = config(collections)

    def log_of(self, user: str) -> Path:
        """The member's own log of the room."""
        return self.directory / user / "room.log"

    async def reached(self, store: str, kind: str, users: tuple[str, ...]) -> None:
        """Wait until the room's log in the stream holds an event of type ``kind`` about each
        of ``users``."""
        repository = NatsRepository(store)
        try:
            while True:
                with contextlib.suppress(LogError):  # not there yet
                    events = read_store(repository.store(self.room_id)).events
                    about = {getattr(e, "user_id", None) for e in events if e.type == kind}
                    if about >= set(users):
                        return
                await asyncio.sleep(0.02)
        finally:
            await repository.close()

    async def member(self, user: str, url: str | list[str], deadline: float = 60) -> Any:
        """Run ``user``'s join to the end; its ``piece -> folder`` map."""
        return await join(
            url, room=self.config, user_id=user, key=insecure_key(user), config=self.lock,
            dest=self.directory / user / "cache", log_path=self.log_of(user),
            retry_delay=0.1, deadline=deadline,
        )  # fmt: skip


async def stream_events(store: str, room_id: str) -> list[Event]:
    """The room's events, read straight from the stream (the hash chain checked)."""
    repository = NatsRepository(store)
    try:
        log, events = await EventLog.reopen(repository.store(room_id))
        await log.close()
        return events
    finally:
        await repository.close()


async def check_room(store: str, room: Room, results: dict[str, Any]) -> list[Event]:
    """The cluster property (see the module docstring); the stream's events."""
    events = await stream_events(store, room.room_id)
    state = fold_events(events, room.room_id).snapshot()
    assert state.status == "closed", state.status
    assert {u: m.status for u, m in state.members.items()} == dict.fromkeys(room.users, "goodbye")
    assert not [e for e in events if e.type == "member_refused"], "a correct member was refused"
    for user in room.users:
        heard = read_events(room.log_of(user)).events
        assert heard == events[: len(heard)], f"{user} heard what the stream does not hold"
        assert heard[-1].type == "room_closed", f"{user} did not hear the close"
        folder = Path(results[user]["chars/kfm"])
        assert (folder / "kfm.def").read_bytes() == KFM_DEF
    return events


async def joined(room: Room, url: str, user: str) -> tuple[ClientProtocol, Connection]:
    """``user`` joined over ``url`` with the bare member core."""
    member = ClientProtocol(room.config, user, insecure_key(user))
    conn = await open_connection(url)
    conn.send_nowait(member.hello())
    while member.phase != "joined":
        take(member, conn, await conn.recv())
    return member, conn


async def all_there(member: ClientProtocol, conn: Connection) -> None:
    """Read until ``member`` knows every member is connected."""
    while any(m.status != "connected" for m in member.room.members.values()):
        take(member, conn, await conn.recv())


async def burst(member: ClientProtocol, conn: Connection, reports: int) -> list[Event]:
    """Report ``reports`` progress steps as fast as the connection takes them, and read until
    the host relayed every one of them and of the other members'; every event heard since."""
    user, heard = member.user_id, []
    conn.send_nowait(member.report(PieceStarted(at=0, user_id=user, piece="chars/kfm")))
    for done in range(1, reports + 1):
        step = PieceProgress(at=0, user_id=user, piece="chars/kfm", done=done)
        conn.send_nowait(member.report(step))
    while not all(m.pieces["chars/kfm"].done == reports for m in member.room.members.values()):
        heard += take(member, conn, await conn.recv())
    await conn.close()
    return heard


def take(member: ClientProtocol, conn: Connection, frame: bytes) -> list[Event]:
    """Hand ``frame`` to ``member`` (it must refuse nothing), send its answers; its events."""
    out = member.receive(frame)
    assert out.refused is None, out.refused
    for send in out.sends:
        conn.send_nowait(send)
    return out.events
