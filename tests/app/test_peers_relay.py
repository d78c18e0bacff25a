"""A real room host relays a transfer's frames at once, even while its log is held up: data
frames and acks tell of no room event, so they never wait behind a sync (they did: every data
frame waited for the group commit of the members' progress reports, and the window's round trip
was as long as the disk's fsync). Hand-written members (the real client core) on a real
websocket host whose log store blocks every append while the test says so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from matchlock.app.hosting import RoomHost
from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.client import ClientOutput, ClientProtocol
from matchlock.store.memory import MemoryRepository, MemoryStore
from matchlock.tools.testing import insecure_key
from matchlock.transport import Connection
from matchlock.transport.connect import listen, open_connection
from tests.app.peer_rooms import room_of

KFM = "chars/kfm"


class HeldRepository(MemoryRepository):
    """A memory repository whose appends wait while :attr:`open` is clear."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.open.set()

    def create(self, log_id: str) -> MemoryStore:
        return _held(super().create(log_id), self.open)

    def store(self, log_id: str) -> MemoryStore:
        return _held(super().store(log_id), self.open)


def _held(store: MemoryStore, gate: asyncio.Event) -> MemoryStore:
    append = store.append

    async def held_append(lines: Sequence[bytes], durable: bool) -> None:
        await gate.wait()
        await append(lines, durable)

    store.append = held_append  # type: ignore[method-assign]
    return store


class Peer:
    """One hand-written member: its client core and its connection."""

    def __init__(self, user: str, conn: Connection, *, serve: bool) -> None:
        self.client = ClientProtocol(ROOM, user, insecure_key(user), serve=serve)
        self.conn = conn

    async def until(self, done: Callable[[ClientOutput], bool]) -> ClientOutput:
        """Read frames (sending what the core says) until one's output satisfies ``done``."""
        while True:
            out = self.client.receive(await self.conn.recv())
            for frame in out.sends:
                self.conn.send_nowait(frame)
            if done(out):
                return out


def told(kind: type) -> Callable[[ClientOutput], bool]:
    """Whether an output holds a transfer message or data chunk of ``kind``."""
    return lambda out: any(isinstance(message, kind) for message in out.transfers)


ROOM = room_of("relay", ("alice", "bob"))


async def joined(url: str, user: str, *, serve: bool) -> Peer:
    peer = Peer(user, await open_connection(url), serve=serve)
    peer.conn.send_nowait(peer.client.hello())
    await peer.until(lambda out: out.joined)
    return peer


async def test_data_frames_and_acks_are_relayed_while_the_log_is_held_up() -> None:
    repo = HeldRepository()
    host = RoomHost(store=repo)
    await host.start()
    listener = await listen("ws://127.0.0.1:0", host)
    try:
        async with asyncio.timeout(10):
            alice = await joined(listener.url, "alice", serve=True)
            for event in (
                ev.PieceStarted(at=0.0, user_id="alice", piece=KFM),
                ev.PieceFinished(at=0.0, user_id="alice", piece=KFM, source="cache"),
            ):
                alice.conn.send_nowait(alice.client.report(event))
            bob = await joined(listener.url, "bob", serve=False)
            while "alice" not in bob.client.holders(KFM):
                await bob.until(lambda out: True)
            bob.conn.send_nowait(bob.client.want(KFM, "archive", 0, ()))
            serve = (await alice.until(told(tm.Serve))).transfers[-1]
            assert isinstance(serve, tm.Serve)
            await bob.until(told(tm.Sending))

            repo.open.clear()  # from now on the room's log cannot take a line
            bob.conn.send_nowait(
                bob.client.report(ev.PieceStarted(at=0.0, user_id="bob", piece="stages/dojo"))
            )
            payload = b"k" * 100
            alice.conn.send_nowait(alice.client.data(serve.transfer, 0, payload))
            out = await bob.until(told(pr.DataChunk))
            assert [m.payload for m in out.transfers if isinstance(m, pr.DataChunk)] == [payload]
            bob.conn.send_nowait(bob.client.ack(serve.transfer, len(payload)))
            ack = (await alice.until(told(tm.Ack))).transfers[-1]
            assert ack == tm.Ack(transfer=serve.transfer, offset=len(payload))
            repo.open.set()
    finally:
        repo.open.set()
        await listener.close()
        await host.stop()
