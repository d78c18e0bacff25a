"""A cluster of room hosts in the simulation: two (or more) real
:class:`~matchlock.app.cluster.ClusterHost` nodes sharing one room log, as ``matchlock serve
--store nats://`` nodes share a JetStream stream.

What is simulated is the NATS server, nothing of the nodes. :class:`SharedStream` is the
stream: the room logs in one :class:`~matchlock.store.MemoryRepository`, whose writers append
only where the log ended when they last read or wrote it (the NATS store's
``Nats-Expected-Last-Subject-Sequence``: two nodes can never both append at one position),
and the followers of each log. :class:`NodeStream` is one node's connection to it: a
:class:`~matchlock.store.nats.NatsRepository` whose requests are answered from the shared
stream instead of a socket, so that :class:`~matchlock.store.nats.NatsStore` and the
``ClusterHost`` run unchanged on it. A log's n-th line is its stream sequence n.

- An append takes :data:`ROUND_TRIP` to reach the stream and as long for its acknowledgement
  to come back; two nodes' appends race in between, and a node killed in between leaves its
  lines stored, unacknowledged (what a member never heard of).
- Followers hear each stored line after :data:`FOLLOW_TIME`, in order.
- A **partition** (:meth:`NodeStream.cut`) cuts a node from the stream: every request fails as
  a lost NATS connection does (:class:`~matchlock.core.errors.LogError`), the node is told
  (``watch``), nothing more is delivered to it; it stops relaying and its members move on.
  :meth:`NodeStream.heal` reconnects it.
- A node's process dies with its connection: nothing it still runs can append.

:class:`SimNode` is one node's machine (one ``ClusterHost`` process at a time, listening at its
own URL), :class:`SimCluster` the nodes and the stream, as the checks see them. A stream's
server is not killed here: JetStream's own replication is not what is tested.

This module decides nothing about a room, and never reads the real clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from matchlock.app.cluster import ClusterHost
from matchlock.core.errors import LogError, UsageError
from matchlock.store import MemoryRepository, MemoryStore
from matchlock.store.nats import PREFIX, STREAM, Following, NatsRepository, NatsStore
from matchlock.tools.sim.loop import Process
from matchlock.tools.sim.network import Network

__all__ = [
    "FOLLOW_TIME",
    "ROUND_TRIP",
    "NodeStream",
    "SharedStream",
    "SimCluster",
    "SimNode",
    "node_names",
]

T = TypeVar("T")

ROUND_TRIP = 0.002
"""Virtual seconds a request takes to reach the stream, and as long for its answer."""

FOLLOW_TIME = 0.001
"""Virtual seconds from a line stored to its delivery to each follower."""


class _Follower:
    """One node following one log: where its deliveries are due, whether it stopped."""

    def __init__(self, node: NodeStream, deliver: Callable[[int, bytes], None]) -> None:
        self.node = node
        self.deliver = deliver
        self.stopped = False
        self.due = 0.0

    @property
    def listening(self) -> bool:
        return not self.stopped and self.node.process.alive and not self.node.cut_off

    def send(self, sequence: int, line: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.due = max(self.due + 1e-6, loop.time() + FOLLOW_TIME)  # in order, strictly
        loop.call_at(self.due, self._arrive, sequence, line)

    def _arrive(self, sequence: int, line: bytes) -> None:
        if self.listening:
            self.deliver(sequence, line)


class SharedStream:
    """The stream every node appends to: the logs (``repository``) and their followers."""

    def __init__(self) -> None:
        self.repository = MemoryRepository()
        self.followers: dict[str, list[_Follower]] = {}

    def writer(self, log_id: str, last: int) -> MemoryStore:
        """A writer of the log ``log_id`` that expects it to end at line ``last``."""
        held = self.repository.stores.get(log_id)
        writer = self.repository.create(log_id) if held is None else held.writer(at_end=False)
        writer.last = last
        return writer

    def lines(self, log_id: str) -> list[bytes]:
        """The log's lines as the stream holds them."""
        held = self.repository.stores.get(log_id)
        return [] if held is None else list(held.lines)

    def stored(self, log_id: str, after: int) -> None:
        """Lines after ``after`` were stored: each follower hears them."""
        lines = self.lines(log_id)[after:]
        for follower in self.followers.get(log_id, []):
            if follower.listening:
                for sequence, line in enumerate(lines, start=after + 1):
                    follower.send(sequence, line)


class _SimFollowing(Following):
    """A follow of the shared stream; :meth:`stop` ends it."""

    def __init__(self, node: NodeStream, follower: _Follower) -> None:
        self._follower = follower
        super().__init__(node, follower)

    async def stop(self) -> None:
        """Deliver nothing more."""
        self._follower.stopped = True


class NodeStream(NatsRepository):
    """One node's connection to ``shared``, for its process ``process``: the requests a
    :class:`~matchlock.store.nats.NatsRepository` makes of a server, answered in memory.
    ``on_io`` hears ``"stored"`` when an append reached the stream, before its answer left."""

    def __init__(
        self, shared: SharedStream, process: Process, on_io: Callable[[str], None]
    ) -> None:
        # No connection and no thread of its own: every request is answered on the loop.
        self.servers = [f"sim-nats://{process.name}"]
        self.stream, self.prefix, self.replicas = STREAM, PREFIX, 1
        self.timeout, self.reconnects, self.patience = 1.0, 1, 1.0
        self.shared = shared
        self.process = process
        self.on_io = on_io
        self.cut_off = False
        self._watchers = []

    def _log_id(self, subject: str) -> str:
        return subject[len(self.prefix) + 1 :].replace("~", ".")

    def _reachable(self) -> None:
        if not self.process.alive:  # it ends the calling task, as its death did
            raise asyncio.CancelledError(f"{self.process.name} is dead: no request leaves it")
        if self.cut_off:
            raise LogError(f"{self.servers[0]}: cannot reach NATS (cut from the stream)")

    # -- what a partition does -----------------------------------------------------------

    def cut(self) -> None:
        """Cut this node from the stream: its requests fail, it is told, it hears nothing."""
        self.cut_off = True
        self._tell(up=False)

    def heal(self) -> None:
        """Reconnect this node to the stream (it is told)."""
        self.cut_off = False
        self._tell(up=True)

    def _tell(self, *, up: bool) -> None:
        for loop, changed in self._watchers:
            loop.call_soon(changed, up)

    # -- the requests ----------------------------------------------------------------------

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work``, which never waits (the stream is in memory), to its end."""
        try:
            work.send(None)
        except StopIteration as done:
            result: T = done.value
            return result
        work.close()
        raise UsageError("a request to the simulated stream waited where it cannot")

    async def wait(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``, once the node can reach the stream."""
        try:
            self._reachable()
        except BaseException:
            work.close()
            raise
        return await work

    async def ids(self) -> list[str]:
        """The id of every log the stream holds."""
        self._reachable()
        return await self.shared.repository.ids()

    async def remove(self, log_id: str) -> None:
        """Remove a log from the stream."""
        self._reachable()
        await self.shared.repository.remove(log_id)

    async def close(self) -> None:
        """Nothing to release."""

    async def last_sequence(self, subject: str) -> int:
        """The number of lines the log holds."""
        self._reachable()
        return len(self.shared.lines(self._log_id(subject)))

    async def publish(self, store: NatsStore, lines: Sequence[bytes]) -> int:
        """Append ``lines`` where ``store`` expects the log to end, after a round trip; the
        log's new end. Raises :class:`~matchlock.core.errors.LogConflictError` when another
        node appended first (nothing stored)."""
        self._reachable()
        await asyncio.sleep(ROUND_TRIP)
        self._reachable()  # cut meanwhile: the batch never arrived
        writer = self.shared.writer(store.log_id, store.last)
        await writer.append(lines, durable=True)
        self.shared.stored(store.log_id, store.last)
        self.on_io("stored")
        self._reachable()
        await asyncio.sleep(ROUND_TRIP)
        self._reachable()  # cut meanwhile: stored, but the answer is lost
        return writer.last

    def messages(self, subject: str, end: int) -> Iterator[bytes]:
        """The log's lines up to line ``end``."""
        self._reachable()
        return iter(self.shared.lines(self._log_id(subject))[:end])

    async def drop_last(self, store: NatsStore, size: int) -> int:
        """Remove a torn last line (the stream keeps lines whole: only one appended torn)."""
        self._reachable()
        writer = self.shared.writer(store.log_id, store.last)
        await writer.drop_torn(size)
        return writer.last

    async def follow(
        self, log_id: str, after: int, deliver: Callable[[int, bytes], None]
    ) -> Following:
        """Deliver every line of the log after line ``after``, and each one stored from now
        on, in order, until stopped."""
        self._reachable()
        follower = _Follower(self, deliver)
        self.shared.followers.setdefault(log_id, []).append(follower)
        for sequence, line in enumerate(self.shared.lines(log_id)[after:], start=after + 1):
            follower.send(sequence, line)
        return _SimFollowing(self, follower)


class SimNode:
    """One node's machine: one ``ClusterHost`` at a time, listening at ``url``, on its own
    connection to the shared stream (made again at each start)."""

    def __init__(
        self,
        name: str,
        shared: SharedStream,
        network: Network,
        make: Callable[[NodeStream], ClusterHost],
        on_io: Callable[[str], None],
    ) -> None:
        self.name = name
        self.url = f"sim://{name}"
        self.shared = shared
        self.network = network
        self.make = make
        self.on_io = on_io
        self.generation = 0
        self.process: Process | None = None
        self.host: ClusterHost | None = None
        self.hosts: list[ClusterHost] = []  # every one it ran
        self.stream: NodeStream | None = None

    @property
    def up(self) -> bool:
        """Whether its host process runs."""
        return self.process is not None and self.process.alive

    async def start(self) -> None:
        """Start a fresh ``ClusterHost`` (it loads rooms from the stream when asked)."""
        self.generation += 1
        process = Process(f"{self.name}-{self.generation}")
        self.stream = NodeStream(self.shared, process, self.on_io)
        self.process, self.host = process, self.make(self.stream)
        self.hosts.append(self.host)
        await process.spawn(self.host.start())
        self.network.listen(process, self.host, self.url)

    def kill(self, power: random.Random | None) -> None:
        """SIGKILL (a power loss takes nothing more: the node keeps no log of its own)."""
        assert self.process is not None
        self.process.kill()
        self.network.hang_up(self.url)
        self.network.sever_all(self.process, power=power is not None)


class SimCluster:
    """The nodes and their shared stream, as the simulator and its checks see them."""

    def __init__(self, nodes: Sequence[SimNode], shared: SharedStream) -> None:
        self.nodes = list(nodes)
        self.shared = shared

    @property
    def urls(self) -> list[str]:
        """Every node's URL."""
        return [node.url for node in self.nodes]

    def lines(self, room_id: str) -> list[bytes]:
        """The room's log as the stream holds it."""
        return self.shared.lines(room_id)

    @property
    def conflicts(self) -> int:
        """Appends the stream refused because another node appended first, every node's."""
        return sum(host.conflicts for node in self.nodes for host in node.hosts)

    def serving(self) -> Iterator[tuple[Process, ClusterHost]]:
        """Each node whose process runs, and its host."""
        for node in self.nodes:
            if node.up and node.process is not None and node.host is not None:
                yield node.process, node.host

    async def start(self) -> None:
        """Start every node."""
        for node in self.nodes:
            await node.start()


def node_names(count: int) -> list[str]:
    """The names of ``count`` nodes: ``node1``, ``node2``, ..."""
    return [f"node{n}" for n in range(1, count + 1)]
