"""The transport contract: what every :class:`~matchlock.transport.Connection` must do.

:class:`TransportContract` holds the tests; ``test_contract.py`` subclasses it once per transport
(memory, ws, tcp, lan), each saying only how to start a server around a handler and how to
connect to it. A new transport proves itself by passing this suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import pytest

from matchlock import events as ev
from matchlock.client import ClientProtocol
from matchlock.config import RoomConfig
from matchlock.eventlog import replay_file
from matchlock.hosting import RoomHost
from matchlock.protocol import MAX_MESSAGE_BYTES
from matchlock.room import RoomState
from matchlock.testing import insecure_key, pinned, signed_room
from matchlock.transport import Connection, ConnectionClosed, FrameTooLarge
from matchlock.transport.limits import ConnectionLimiter, Limits
from matchlock.transport.tcp import ConnectionHandler

ROOM_ID = "contract-room"
"""The room the full-room test plays (a ``lan://`` server announces it)."""

USERS = ("alice", "bob", "carol")
PIECES = {"chars/kfm": 1_000, "stages/dojo": 2_500}


class Endpoint(Protocol):
    """A running server of the transport under test."""

    async def connect(self) -> Connection:
        """A new client connection to the server."""

    async def close(self) -> None:
        """Stop the server."""


class Accepting:
    """A handler that hands each accepted connection to the test and keeps it open, within
    ``limits`` (the defaults when None)."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limiter = ConnectionLimiter(limits)
        self.accepted: asyncio.Queue[Connection] = asyncio.Queue()
        self.released = asyncio.Event()

    async def handle(self, conn: Connection) -> None:
        await self.accepted.put(conn)
        await self.released.wait()

    async def next(self) -> Connection:
        async with asyncio.timeout(5):
            return await self.accepted.get()


def frame_of(size: int, mark: str = "x") -> bytes:
    """A JSON object frame of exactly ``size`` bytes (valid UTF-8, no newline)."""
    head, tail = b'{"pad":"', b'"}'
    return head + mark.encode() * (size - len(head) - len(tail)) + tail


async def closes(conn: Connection, timeout: float = 5.0) -> list[bytes]:
    """Receive until the connection closes; returns the frames that arrived before."""
    frames: list[bytes] = []
    async with asyncio.timeout(timeout):
        while True:
            try:
                frames.append(await conn.recv())
            except ConnectionClosed:
                return frames


class TransportContract:
    """Every transport passes these tests. Subclasses implement :meth:`start`."""

    enforces_frame_limit = True
    """Whether the transport itself closes on a frame over the host's limit (memory: no, the
    host core refuses it instead)."""

    async def start(self, handler: ConnectionHandler) -> Endpoint:
        """Start a server of this transport that serves ``handler``."""
        raise NotImplementedError

    @pytest.fixture
    async def pair(self) -> AsyncIterator[tuple[Connection, Connection]]:
        """(client end, host end) of one connection."""
        accepting = Accepting()
        endpoint = await self.start(accepting)
        try:
            client = await endpoint.connect()
            host_end = await accepting.next()
            yield client, host_end
            await client.close()
        finally:
            accepting.released.set()
            await endpoint.close()

    @pytest.fixture
    async def room_host(self, tmp_path: Path) -> AsyncIterator[tuple[RoomHost, Endpoint]]:
        """A RoomHost logging to ``tmp_path``, served by this transport."""
        host = RoomHost(tmp_path)
        await host.start()
        endpoint = await self.start(host)
        try:
            yield host, endpoint
        finally:
            await host.stop()
            await endpoint.close()

    # -- frames -------------------------------------------------------------------------------

    async def test_frames_arrive_in_order_both_ways(
        self, pair: tuple[Connection, Connection]
    ) -> None:
        client, host_end = pair
        sent = [frame_of(20 + i % 50, mark=str(i % 10)) for i in range(300)]
        for frame in sent:
            client.send_nowait(frame)
        async with asyncio.timeout(5):
            assert [await host_end.recv() for _ in sent] == sent
        for frame in reversed(sent):
            host_end.send_nowait(frame)
        async with asyncio.timeout(5):
            assert [await client.recv() for _ in sent] == sent[::-1]

    async def test_frames_up_to_the_limit_pass(self, pair: tuple[Connection, Connection]) -> None:
        client, host_end = pair
        largest = frame_of(MAX_MESSAGE_BYTES)
        client.send_nowait(largest)
        welcome = frame_of(4 * MAX_MESSAGE_BYTES, mark="w")  # host to client: a big welcome
        host_end.send_nowait(welcome)
        async with asyncio.timeout(5):
            assert await host_end.recv() == largest
            assert await client.recv() == welcome

    async def test_a_frame_over_the_limit_closes_with_no_further_reads(
        self, pair: tuple[Connection, Connection]
    ) -> None:
        if not self.enforces_frame_limit:
            pytest.skip("this transport leaves the limit to the host core")
        client, host_end = pair
        client.send_nowait(frame_of(MAX_MESSAGE_BYTES + 1))
        client.send_nowait(frame_of(10))
        with pytest.raises(FrameTooLarge) as caught:
            await host_end.recv()
        assert caught.value.limit == MAX_MESSAGE_BYTES
        with pytest.raises(ConnectionClosed):
            await host_end.recv()  # the frame after it is never read

    async def test_a_frame_over_the_limit_ends_the_connection_to_a_room_host(
        self, room_host: tuple[RoomHost, Endpoint]
    ) -> None:
        _, endpoint = room_host
        client = await endpoint.connect()
        client.send_nowait(frame_of(MAX_MESSAGE_BYTES + 1))
        frames = await closes(client)
        assert all(b'"too-large"' in frame for frame in frames)  # at most the core's refusal

    # -- closing ------------------------------------------------------------------------------

    async def test_closing_the_client_end_closes_both(
        self, pair: tuple[Connection, Connection]
    ) -> None:
        client, host_end = pair
        client.send_nowait(frame_of(30))
        client.send_nowait(frame_of(40))
        await client.close()
        assert await closes(host_end) == [frame_of(30), frame_of(40)]
        with pytest.raises(ConnectionClosed):
            await client.recv()
        with pytest.raises(ConnectionClosed):
            client.send_nowait(frame_of(30))

    async def test_closing_the_host_end_closes_both(
        self, pair: tuple[Connection, Connection]
    ) -> None:
        client, host_end = pair
        host_end.send_nowait(frame_of(50))
        await host_end.close()
        assert await closes(client) == [frame_of(50)]
        with pytest.raises(ConnectionClosed):
            await host_end.recv()
        with pytest.raises(ConnectionClosed):
            host_end.send_nowait(frame_of(30))

    # -- a whole room -------------------------------------------------------------------------

    async def test_a_small_room_completes_and_its_log_replays_closed(
        self, room_host: tuple[RoomHost, Endpoint], tmp_path: Path
    ) -> None:
        host, endpoint = room_host
        config = signed_room(ROOM_ID, USERS, pinned(PIECES))
        async with asyncio.timeout(15):
            views = await asyncio.gather(*(play(endpoint, config, user) for user in USERS))
        await host.stop()
        replayed = replay_file(tmp_path / f"{ROOM_ID}.log").state
        assert replayed.status == "closed"
        assert {m.status for m in replayed.members.values()} == {"goodbye"}
        assert all(
            piece.status == "finished" and piece.done == PIECES[key]
            for member in replayed.members.values()
            for key, piece in member.pieces.items()
        )
        assert all(view == replayed for view in views)  # every member saw the host's room


async def play(endpoint: Endpoint, config: RoomConfig, user: str) -> RoomState:
    """One member: join, report every piece started, half done, finished; say goodbye when the
    room is all done; return the room as this member saw it once the host closed it."""
    member = ClientProtocol(config, user, insecure_key(user))
    conn = await endpoint.connect()
    conn.send_nowait(member.hello())
    while True:
        out = member.receive(await conn.recv())
        assert out.refused is None, out.refused
        for frame in out.sends:
            conn.send_nowait(frame)
        if out.joined:
            for piece, size in PIECES.items():
                for event in (
                    ev.PieceStarted(at=0.0, user_id=user, piece=piece),
                    ev.PieceProgress(at=0.0, user_id=user, piece=piece, done=size // 2),
                    ev.PieceProgress(at=0.0, user_id=user, piece=piece, done=size),
                    ev.PieceFinished(at=0.0, user_id=user, piece=piece, source="cache"),
                ):
                    conn.send_nowait(member.report(event))
        if out.closed:
            break
    assert await closes(conn) == []  # the host ends the connection of a closed room
    await conn.close()
    return member.room.snapshot()
