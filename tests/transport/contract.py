"""The transport contract: what every :class:`~matchlock.transport.Connection` must do.

:class:`TransportContract` holds the tests; ``test_contract.py`` subclasses it once per transport
(memory, ws, tcp, lan; ``test_registry.py`` for the ``memory://`` example of
docs/adding-a-transport.md), each saying only how to start a server around a handler, how to
connect to it, and (for a network transport) how to be a peer that connected and then froze. A
new transport proves itself by passing this suite: frames (binary data frames carried unchanged
among JSON ones), closing, a whole room, the handshake deadline, keepalives that keep a quiet
member and an idle timeout that drops a frozen one, and the connection caps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import pytest

from matchlock.app.hosting import RoomHost
from matchlock.core import events as ev
from matchlock.core.client import ClientProtocol
from matchlock.core.config import RoomConfig
from matchlock.core.protocol import MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES, data_frame
from matchlock.core.room import RoomState
from matchlock.store.eventlog import replay_file
from matchlock.tools.testing import insecure_key, pinned, signed_room
from matchlock.transport import Connection, ConnectionClosed, FrameTooLarge
from matchlock.transport.limits import ConnectionLimiter, Limits
from matchlock.transport.tcp import CLOSE_TIMEOUT, ConnectionHandler

ROOM_ID = "contract-room"
"""The room the full-room test plays (a ``lan://`` server announces it)."""

USERS = ("alice", "bob", "carol")
PIECES = {"chars/kfm": 1_000, "stages/dojo": 2_500}
SHORT = Limits(handshake_timeout=1.0, idle_timeout=0.6)
"""Deadlines short enough for tests, long enough for a websocket upgrade on a loaded machine."""


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


class Holding:
    """A handler like a RoomHost's: it counts the connections it serves and reads each until it
    closes."""

    def __init__(self, limits: Limits) -> None:
        self.limiter = ConnectionLimiter(limits)
        self.served = 0

    async def handle(self, conn: Connection) -> None:
        self.served += 1
        await closes(conn, timeout=60)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (5 s at most) until ``condition()`` holds."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


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


class Frozen(Protocol):
    """A peer that connected, got through its transport's own handshake, then stopped: it
    neither reads nor writes, as a process stopped by SIGSTOP."""

    def close(self) -> None:
        """Let go of the socket."""


class TransportContract:
    """Every transport passes these tests. Subclasses implement :meth:`start`, and a network
    transport :meth:`frozen_peer`."""

    enforces_frame_limit = True
    """Whether the transport itself closes on a frame over the host's limit (memory: no, the
    host core refuses it instead)."""

    networked = True
    """Whether connections come over a network: then an idle timeout drops a frozen peer and the
    caps apply at accept (memory: no, an in-process link cannot freeze or come from afar)."""

    async def start(self, handler: ConnectionHandler) -> Endpoint:
        """Start a server of this transport that serves ``handler``."""
        raise NotImplementedError

    async def frozen_peer(self, endpoint: Endpoint) -> Frozen:
        """Connect to ``endpoint`` as a peer that then freezes (see :class:`Frozen`)."""
        raise NotImplementedError

    @asynccontextmanager
    async def hosting(
        self, folder: Path, limits: Limits
    ) -> AsyncIterator[tuple[RoomHost, Endpoint]]:
        """A RoomHost logging to ``folder`` within ``limits``, served by this transport."""
        host = RoomHost(folder, limits=limits)
        await host.start()
        endpoint = await self.start(host)
        try:
            yield host, endpoint
        finally:
            await host.stop()
            await endpoint.close()

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

    async def test_data_frames_round_trip_between_json_frames(
        self, pair: tuple[Connection, Connection]
    ) -> None:
        client, host_end = pair
        awkward = bytes(range(256)) * 8  # newlines, 0x00, '{' and invalid UTF-8 inside
        sent = [
            frame_of(40),
            data_frame(1, 0, awkward),
            data_frame(2**32 - 1, 2**40, b"\n"),
            frame_of(50, mark="y"),
            data_frame(3, 5, b"z" * MAX_CHUNK_BYTES),
        ]
        for frame in sent:
            client.send_nowait(frame)
        async with asyncio.timeout(5):
            assert [await host_end.recv() for _ in sent] == sent
        for frame in reversed(sent):
            host_end.send_nowait(frame)
        async with asyncio.timeout(5):
            assert [await client.recv() for _ in sent] == sent[::-1]

    async def test_a_binary_frame_over_the_limit_closes_with_no_further_reads(
        self, pair: tuple[Connection, Connection]
    ) -> None:
        if not self.enforces_frame_limit:
            pytest.skip("this transport leaves the limit to the host core")
        client, host_end = pair
        client.send_nowait(b"\x01" + bytes(MAX_MESSAGE_BYTES))
        client.send_nowait(frame_of(10))
        with pytest.raises(FrameTooLarge):
            await host_end.recv()
        with pytest.raises(ConnectionClosed):
            await host_end.recv()

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
            conns = [await endpoint.connect() for _ in USERS]
            views = await asyncio.gather(
                *(play(conn, config, user) for conn, user in zip(conns, USERS, strict=True))
            )
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

    # -- deadlines, keepalives, caps ------------------------------------------------------------

    async def test_a_connection_that_never_joins_is_closed_at_the_handshake_deadline(
        self, tmp_path: Path
    ) -> None:
        async with self.hosting(tmp_path, SHORT) as (host, endpoint):
            silent = await endpoint.connect()
            assert await closes(silent) == []  # not even a refusal: it said nothing
            assert host.limiter.counts["handshake_timeout"] == 1
        assert list(tmp_path.rglob("*.log")) == []  # no room heard of it

    async def test_a_quiet_member_is_kept_by_keepalives_and_its_room_completes(
        self, tmp_path: Path
    ) -> None:
        config = signed_room(ROOM_ID, USERS, pinned(PIECES))
        limits = Limits(idle_timeout=1.2)  # keepalives every 0.4 s, answered within 0.8 s
        quiet = 3 * limits.idle_timeout  # joined, saying nothing, far beyond the idle timeout
        async with self.hosting(tmp_path, limits) as (_, endpoint), asyncio.timeout(30):
            conns = [await endpoint.connect() for _ in USERS]
            await asyncio.gather(
                *(play(conn, config, user, quiet) for conn, user in zip(conns, USERS, strict=True))
            )
        kinds: set[str] = set()
        state = replay_file(tmp_path / f"{ROOM_ID}.log", on_event=lambda _, e: kinds.add(e.type))
        assert state.state.status == "closed"
        assert "member_disconnected" not in kinds

    async def test_a_frozen_peer_is_dropped_after_the_idle_timeout(self) -> None:
        if not self.networked:
            pytest.skip("an in-process link cannot freeze")
        accepting = Accepting(Limits(idle_timeout=SHORT.idle_timeout))
        endpoint = await self.start(accepting)
        frozen = await self.frozen_peer(endpoint)
        try:
            # a websocket then waits out its close timeout for a closing handshake that the
            # frozen peer never answers
            assert await closes(await accepting.next(), timeout=CLOSE_TIMEOUT + 10) == []
        finally:
            frozen.close()
            accepting.released.set()
            await endpoint.close()

    @pytest.mark.parametrize(
        ("limits", "reason"),
        [
            (Limits(max_connections_per_address=2), "refused_max_connections_per_address"),
            (Limits(max_connections=2), "refused_max_connections"),
        ],
    )
    async def test_a_connection_over_a_cap_is_refused_at_accept_until_a_slot_frees(
        self, limits: Limits, reason: str
    ) -> None:
        if not self.networked:
            pytest.skip("in-process links are not counted")
        holding = Holding(limits)
        endpoint = await self.start(holding)
        try:
            first, second = await endpoint.connect(), await endpoint.connect()
            await until(lambda: holding.served == 2)
            await refused(endpoint)
            assert holding.served == 2  # the handler never saw it
            assert holding.limiter.counts == {reason: 1}
            await first.close()
            await until(lambda: holding.limiter.open_connections < 2)
            third = await endpoint.connect()  # its slot is free again
            await until(lambda: holding.served == 3)
            for conn in (second, third):
                await conn.close()
        finally:
            await endpoint.close()

    @pytest.mark.parametrize(
        ("limits", "reason"),
        [
            (Limits(max_connections_per_address=len(USERS) + 1), "max_connections_per_address"),
            (Limits(max_connections=len(USERS) + 1), "max_connections"),
        ],
    )
    async def test_legitimate_members_complete_while_a_cap_refuses_the_extra_connection(
        self, tmp_path: Path, limits: Limits, reason: str
    ) -> None:
        if not self.networked:
            pytest.skip("in-process links are not counted")
        config = signed_room(ROOM_ID, USERS, pinned(PIECES))
        async with self.hosting(tmp_path, limits) as (host, endpoint), asyncio.timeout(30):
            squatter = await endpoint.connect()  # holds a slot until its handshake deadline
            conns = [await endpoint.connect() for _ in USERS]
            await refused(endpoint)
            views = await asyncio.gather(
                *(play(conn, config, user) for conn, user in zip(conns, USERS, strict=True))
            )
            await squatter.close()
        assert host.limiter.counts[f"refused_{reason}"] == 1
        replayed = replay_file(tmp_path / f"{ROOM_ID}.log").state
        assert replayed.status == "closed"
        assert all(view == replayed for view in views)


async def refused(endpoint: Endpoint) -> None:
    """Connecting to ``endpoint`` fails, or the connection ends before any frame arrives."""
    try:
        conn = await endpoint.connect()
    except (OSError, ConnectionClosed):
        return
    assert await closes(conn) == []


async def play(conn: Connection, config: RoomConfig, user: str, quiet: float = 0.0) -> RoomState:
    """One member on ``conn``: join, then (after ``quiet`` seconds of reading and saying
    nothing) report every piece started, half done, finished; say goodbye when the room is all
    done; return the room as this member saw it once the host closed it."""
    member = ClientProtocol(config, user, insecure_key(user))
    conn.send_nowait(member.hello())

    def report() -> None:
        for piece, size in PIECES.items():
            for event in (
                ev.PieceStarted(at=0.0, user_id=user, piece=piece),
                ev.PieceProgress(at=0.0, user_id=user, piece=piece, done=size // 2),
                ev.PieceProgress(at=0.0, user_id=user, piece=piece, done=size),
                ev.PieceFinished(at=0.0, user_id=user, piece=piece, source="cache"),
            ):
                conn.send_nowait(member.report(event))

    while True:
        out = member.receive(await conn.recv())
        assert out.refused is None, out.refused
        for frame in out.sends:
            conn.send_nowait(frame)
        if out.joined:
            asyncio.get_running_loop().call_later(quiet, report)  # reading on meanwhile
        if out.closed:
            break
    assert await closes(conn) == []  # the host ends the connection of a closed room
    await conn.close()
    return member.room.snapshot()
