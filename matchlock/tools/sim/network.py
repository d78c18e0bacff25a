"""The simulated network: the in-memory transport, with the faults of a real one.

Every connection is a real :func:`~matchlock.transport.memory.memory_pair`; a :class:`Link`
wraps its two ends (:class:`SimEnd`, a :class:`~matchlock.transport.Connection`) and decides,
from the seed, when each frame reaches the inner pair: frames keep their order within one
direction of one connection (as TCP and websockets do) but wait a random delay, so deliveries
are reordered across connections. A link can be **cut** (both ends closed at once, the frames
still in flight lost), after a given number of frames (a room handshake cut halfway: after
the hello, the challenge or the answer), during the transport's own opening handshake (then
``connect`` raises what the real transports raise when that happens: a reset, an end of stream
in the middle of the TCP hello line, a websocket upgrade answered with nothing valid; the
same when the host dies while a member's handshake is under way), or because the machine at
one end lost power. Closing an end closes the inner pair only after the frames it sent before
have arrived, as a real close does; so does the death of the process at one end (the frames
it had sent were the kernel's, which lives on: :meth:`Link.orphan`).

:class:`Network` is what the processes see: :meth:`Network.connector` gives a member the
``connect`` of :func:`matchlock.app.joining.join`, reaching whichever host process is listening
at the URL it is given (``sim://host``, or each node of a cluster at its own; none while the
host is down: ``OSError``, as a refused TCP connection), and it serves the host's end
with :meth:`matchlock.app.hosting.RoomHost.handle` inside the host's process.

This module carries frames and never interprets them, but for two tests of the adversary's:
whether a frame is a report (only those may be duplicated: a real network never duplicates a
frame, but a member that re-sends a report does) and whether it is an answer (an eavesdropper
keeps those, to replay them).

It must never read the real clock or open a socket.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Protocol

from matchlock.tools.sim.loop import CURRENT, Process
from matchlock.transport import Connection, ConnectionClosed
from matchlock.transport.connect import HandshakeFailed
from matchlock.transport.memory import MemoryConnection, memory_pair

__all__ = ["HANDSHAKE_ERRORS", "HOST_URL", "Link", "Network", "SimEnd"]

HOST_URL = "sim://host"
"""Where the host of a simulated room listens (the nodes of a cluster: ``sim://node1``, ...)."""

HANDSHAKE_ERRORS: tuple[Callable[[], Exception], ...] = (
    lambda: ConnectionResetError("the host reset the connection during the handshake"),
    lambda: asyncio.IncompleteReadError(b"", None),
    lambda: HandshakeFailed("ws://sim-host", "did not receive a valid HTTP response"),
)
"""What a real transport's ``connect`` raises when the host dies during the opening handshake
(a reset; the stream ending before the handshake's answer; the websocket upgrade never
answered, :class:`~matchlock.transport.connect.HandshakeFailed`)."""


class Served(Protocol):
    """Anything that serves a connection (a :class:`matchlock.app.hosting.RoomHost`)."""

    async def handle(self, conn: Connection) -> None:
        """Serve ``conn`` until it closes."""


class SimEnd:
    """One end of a simulated connection (a :class:`~matchlock.transport.Connection`)."""

    def __init__(self, link: Link, inner: MemoryConnection, process: Process | None) -> None:
        self.link = link
        self.inner = inner
        self.process = process
        self._last = 0.0  # when this direction's latest frame reaches the other end
        self._closing = False
        self.delivered = 0  # frames sent from this end that reached the other

    def send_nowait(self, frame: bytes) -> None:
        """Send ``frame``: it reaches the other end after a seeded delay, in order."""
        if self.link.cut or self._closing or self.inner.closed:
            raise ConnectionClosed("the simulated connection is closed")
        if self is self.link.member_end:  # a fault may change or withhold it (sim/transfers.py)
            changed = self.link.network.on_member_frame(self.link, frame)
            if changed is None:
                return
            frame = changed
        if b'"type":"answer"' in frame[:20]:
            self.link.network.overheard.append(frame)  # an eavesdropper keeps it, to replay
        self._later(lambda: self._deliver(frame))
        if self.link.duplicates and b'"type":"report"' in frame[:40]:
            self.link.duplicates -= 1
            self.link.injected += 1
            self._later(lambda: self._deliver(frame))

    async def recv(self) -> bytes:
        """The next frame from the other end."""
        frame = await self.inner.recv()
        if self is self.link.member_end:  # what the member really read (sim/transfers.py)
            self.link.network.on_member_read(self.link, frame)
        return frame

    async def close(self) -> None:
        """Close the connection once the frames sent before have arrived."""
        self.close_after_sent()

    def close_after_sent(self) -> None:
        """:meth:`close`, from synchronous code."""
        if not self._closing and not self.link.cut:
            self._closing = True
            self._later(self._close_inner)

    def _later(self, action: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        # Strictly later than this direction's previous frame: timers due at the same instant
        # may run in any order, and frames on one connection must not.
        self._last = max(self._last + 1e-6, loop.time() + self.link.network.delay())
        self.link.pending.append(loop.call_at(self._last, action))

    def _deliver(self, frame: bytes) -> None:
        if self.link.cut or self.inner.closed:
            return
        try:
            self.inner.send_nowait(frame)
        except ConnectionClosed:
            return
        self.delivered += 1
        self.link.delivered += 1
        if self is self.link.host_end:
            self.link.network.on_host_frame(self.link, frame)
        if self.link.delivered == self.link.cut_after:
            self.link.sever()

    def _close_inner(self) -> None:
        self.link.network.background(self.inner.close())


class Link:
    """One connection: a member's end, the host's end, and what the network does to it."""

    def __init__(
        self, network: Network, number: int, member: Process | None, host: Process
    ) -> None:
        self.network = network
        self.number = number
        client, served = memory_pair()
        self.member_end = SimEnd(self, client, member)
        self.host_end = SimEnd(self, served, host)
        self.pending: list[asyncio.TimerHandle] = []
        self.cut = False
        self.orphaned = False  # a process at one end died: the link is closing
        self.delivered = 0
        # Frames delivered before the network cuts it (0: during the transport's handshake).
        self.cut_after: int | None = None
        self.duplicates = 0  # reports the member's end is to send twice
        self.injected = 0  # frames the member never sent that the host got on its end

    def sever(self) -> None:
        """Cut the connection: both ends closed now, the frames in flight lost."""
        if self.cut:
            return
        self.cut = True
        for handle in self.pending:
            handle.cancel()
        self.pending.clear()
        for end in (self.member_end, self.host_end):
            self.network.background(end.inner.close())

    def orphan(self, process: Process) -> None:
        """The process at one end died: what it sent still arrives, then the link closes."""
        end = self.member_end if self.member_end.process is process else self.host_end
        self.orphaned = True
        end.close_after_sent()

    @property
    def joined(self) -> bool:
        """Whether the host has welcomed the member on it (its challenge and welcome arrived)."""
        live = not (self.cut or self.orphaned or self.member_end.inner.closed)
        return live and self.host_end.delivered >= 2

    @property
    def gone(self) -> bool:
        """Whether it is closed at both ends (nothing can happen on it any more)."""
        return self.cut or (self.member_end.inner.closed and self.host_end.inner.closed)

    def touches(self, process: Process) -> bool:
        """Whether ``process`` holds one of its ends."""
        return process in (self.member_end.process, self.host_end.process)


class Network:
    """The processes' network: who listens, every link, and the seeded fault model."""

    def __init__(self, rng: random.Random, *, delay: bool, max_delay: float = 0.02) -> None:
        self.rng = rng
        self.jitter = delay
        self.max_delay = max_delay
        self.links: list[Link] = []  # the links that are not cut
        self.everyone: list[Link] = []  # every link ever made
        self.overheard: list[bytes] = []  # answers seen on the wire
        self.listening: dict[str, tuple[Process, Served]] = {}  # URL -> who answers there
        self.on_connect: Callable[[Link], None] = lambda link: None
        self.on_host_frame: Callable[[Link, bytes], None] = lambda link, frame: None
        self.on_member_frame: Callable[[Link, bytes], bytes | None] = lambda link, frame: frame
        self.on_member_read: Callable[[Link, bytes], None] = lambda link, frame: None
        self._background: set[asyncio.Task[None]] = set()

    def delay(self) -> float:
        """How long a frame travels (the same small latency without the ``delay`` fault)."""
        if not self.jitter:
            return 0.001
        return self.rng.uniform(0.0, self.max_delay)

    def listen(self, process: Process, host: Served, url: str = HOST_URL) -> None:
        """``host``, in ``process``, now accepts connections at ``url``."""
        self.listening[url] = (process, host)

    def hang_up(self, url: str = HOST_URL) -> None:
        """Nothing accepts connections at ``url`` any more (its host died)."""
        self.listening.pop(url, None)

    def connector(self, process: Process) -> Callable[[str], Awaitable[Connection]]:
        """The ``connect`` for a member running in ``process``."""

        async def connect(url: str) -> Connection:
            answering = self.listening.get(url)
            await asyncio.sleep(2 * self.delay())  # the transport's own opening handshake
            if answering is not None and answering is not self.listening.get(url):
                raise self.rng.choice(HANDSHAKE_ERRORS)()  # the host died in the middle of it
            link = self.connect(process, url)
            if link.cut_after == 0:
                link.sever()
                raise self.rng.choice(HANDSHAKE_ERRORS)()
            return link.member_end

        return connect

    def connect(self, process: Process | None, url: str | None = None) -> Link:
        """A new link from ``process`` (None: the adversary) to the host listening at ``url``
        (None: the first that listens)."""
        answering = self.listening.get(url or next(iter(self.listening), HOST_URL))
        if answering is None or not answering[0].alive:
            raise ConnectionRefusedError(f"the simulated host at {url or HOST_URL} is down")
        host_process, host = answering
        link = Link(self, len(self.everyone) + 1, process, host_process)
        self.links = [known for known in self.links if not known.gone]
        self.links.append(link)
        self.everyone.append(link)
        self.on_connect(link)
        host_process.spawn(host.handle(link.host_end))
        return link

    def injected(self, processes: list[Process]) -> int:
        """Frames injected on the links of ``processes`` (duplicates and forgeries)."""
        return sum(link.injected for link in self.everyone if link.member_end.process in processes)

    def sever_all(self, process: Process, *, power: bool) -> None:
        """``process`` died: each of its links closes. After a process crash the frames it
        had sent still arrive first (they were the kernel's, which lives on); after a power
        loss they are lost with the machine."""
        for link in self.links:
            if link.touches(process):
                if power:
                    link.sever()
                else:
                    link.orphan(process)

    def background(self, closing: Awaitable[None]) -> None:
        """Run a close outside every process (the network's own doing)."""

        async def run() -> None:
            await closing

        token = CURRENT.set(None)
        try:
            task = asyncio.get_running_loop().create_task(run())
        finally:
            CURRENT.reset(token)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
