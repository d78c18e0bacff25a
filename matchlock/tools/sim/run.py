"""One simulated room, from its seed to its verdict: the world and the faults the seed deals.

:class:`World` wires the simulated machines (:mod:`matchlock.tools.sim.processes`: the real
``RoomHost`` and the real ``join()`` of every member), the network
(:mod:`matchlock.tools.sim.network`), the installer (:mod:`matchlock.tools.sim.installer`) and the
adversary (:mod:`matchlock.tools.sim.adversary`), all on one
:class:`~matchlock.tools.sim.loop.VirtualLoop`. :meth:`World.run` starts the host and every member,
and a chaos task that, during the first part of the run (:data:`FAULT_SHARE` of the budget), deals
the enabled faults at seeded moments; then the world is left calm, so a correct room completes.
Every tick (:data:`TICK`) the live invariants are checked; once every member's ``join()`` has
returned (or the budget is spent) the end ones are (:mod:`matchlock.tools.sim.checks`).

With ``nodes`` of 2 or more, the room is hosted by a cluster instead
(:mod:`matchlock.tools.sim.cluster`: real ``ClusterHost`` nodes sharing one stream), each
member given every node's URL (starting from a different one, so that the members are spread
over the nodes); ``crash`` kills a node, ``partition`` cuts one from the stream for a while.

Randomness: one generator per concern, each seeded from the seed and the concern's name (the
network, the chaos, the nonces, the power losses, each member's installer, the adversary), so
that a run is the same byte for byte, and a change in one concern's draws leaves the others'
as they were.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from matchlock.core.config import RoomConfig
from matchlock.core.errors import UsageError
from matchlock.store.eventlog import Durability
from matchlock.tools.sim.adversary import Adversary
from matchlock.tools.sim.checks import (
    Violation,
    Wire,
    check_end,
    check_heard,
    check_live,
    check_members,
    check_no_fork,
    check_refusals,
    decode,
)
from matchlock.tools.sim.crashes import HOST, Crashes
from matchlock.tools.sim.installer import SimInstaller
from matchlock.tools.sim.loop import CURRENT
from matchlock.tools.sim.network import HOST_URL, Link, Network
from matchlock.tools.sim.processes import RETRIES, SimHost, SimMember

if TYPE_CHECKING:
    from matchlock.tools.sim.cluster import NodeStream, SimCluster

__all__ = ["FAULTS", "START", "TICK", "World"]

FAULTS = (
    "delay",
    "drop",
    "handshake",
    "resolvable",
    "crash",
    "restart",
    "power",
    "duplicate",
    "hostile",
    "partition",
    "disk",
)
"""What can go wrong: ``delay`` gives every frame a random latency (so deliveries are reordered
across connections); ``drop`` cuts a member's connection; ``handshake`` cuts a connection during
the transport's opening handshake or after its first one to three frames; ``resolvable`` makes
resolvables fail, stall or serve corrupt bytes (and, rarely, a piece that cannot be had at all);
``crash`` kills the host process and starts a fresh one on its logs; ``restart`` kills a
member's process and starts it again on its log and cache; ``power`` makes some of those crashes
power losses (what was not synced is lost, the last write torn at any byte); ``duplicate`` sends
a member's report twice; ``hostile`` brings intruders (forged and replayed answers, unknown
users, garbage, also after the room closed) and forges reports onto members' connections;
``partition`` (a cluster only, ``nodes`` >= 2) cuts a node from the shared stream for a while:
it stops serving the room, and its members move to another node. With a cluster, ``crash``
kills a node and starts it again. ``disk`` fills the disk under the host (a single host) or a
member: one of its next writes is torn where the disk ends and refused (``ENOSPC``); the host
stops (``HostFailedError``: it sends nothing of the batch) and a member's join raises
``LogWriteError``, and after a seeded pause its operator, having freed the disk, starts it
again on what its log holds."""

START = 1_700_000_000.0
"""The wall clock at virtual time 0 (what ``clock()`` gives the shells)."""

TICK = 0.05
"""Virtual seconds between two checks of the live invariants."""

STEP = 0.01
"""Virtual seconds per step of the budget (``steps``)."""

FAULT_SHARE = 0.3
"""The part of the budget during which faults are dealt."""

MEAN_GAP = 0.12
"""Mean virtual seconds between two faults."""

PARTITION = (0.05, 0.4)
"""The least and the most virtual seconds a partition lasts."""

MAX_FORGED = 2
"""Reports forged onto one connection at most (the host shuts out a connection that keeps
misbehaving, and then the member would rightly be refused)."""


class World:
    """Everything one seeded run needs; :meth:`run` runs it inside the virtual loop."""

    def __init__(
        self,
        seed: int,
        room: RoomConfig,
        faults: Collection[str],
        planted: Collection[str],
        steps: int,
        *,
        durability: Durability | None = None,
        nodes: int = 1,
    ) -> None:
        self.seed = seed
        self.nodes = nodes
        self.room = room
        self.faults = frozenset(faults)
        self.budget = steps * STEP
        self.chaos_rng = self._rng("chaos")
        self.dealt: dict[str, int] = {}  # faults that happened, by name
        self.crashes = Crashes(
            self._rng("crashes"),
            self._rng("power") if "power" in self.faults else None,
            self._deal,
        )
        nonce_rng = self._rng("nonces")
        self.network = Network(self._rng("network"), delay="delay" in self.faults)
        self.network.on_connect = self._on_connect
        self.wire = Wire()
        self.network.on_host_frame = self.wire.frame
        self.host: SimHost | SimCluster
        if nodes > 1:
            self.host = self._cluster(lambda: nonce_rng.randbytes(16), durability, planted)
            self.crashes.nodes = {node.name: node for node in self.host.nodes}
        else:
            self.host = self.crashes.host = SimHost(
                self.network,
                self.clock,
                lambda: nonce_rng.randbytes(16),
                # A power loss may take whatever was not synced; with "decisions", progress
                # lines the members already heard would be among it. "every" keeps them.
                durability=durability or "every",  # what RoomHost and matchlock serve default to
                planted=frozenset(planted),
                on_io=self.crashes.on_io(HOST),
                on_failed=lambda: self.crashes.disk_failed(HOST),
            )
        self.members = [self._member(user, n) for n, user in enumerate(room.users)]
        self.crashes.members = {member.user_id: member for member in self.members}
        self.adversary = Adversary(self._rng("adversary"), room, self.network)
        self.handshake_cuts = 0
        self.forged: dict[int, int] = {}

    def _cluster(
        self, nonces: Callable[[], bytes], durability: Durability | None, planted: Collection[str]
    ) -> SimCluster:
        """The nodes of a cluster on one shared stream (nats-py, the ``nats`` extra, is
        imported only here: the cluster's shell is the NATS store's)."""
        try:
            from matchlock.app.cluster import ClusterHost
            from matchlock.tools.sim.cluster import SharedStream, SimCluster, SimNode, node_names
        except ModuleNotFoundError as missing:
            raise UsageError(
                f"a cluster's simulation runs the NATS store's code, which needs {missing.name}: "
                "pip install 'matchlock[nats]'"
            ) from None
        from matchlock.core.host import HostProtocol

        def make(stream: NodeStream) -> ClusterHost:
            host = ClusterHost(
                stream, clock=self.clock, nonces=nonces, durability=durability or "every"
            )
            if planted:
                host.core = HostProtocol(planted_bugs=frozenset(planted))
            return host

        shared = SharedStream()
        return SimCluster(
            [
                SimNode(name, shared, self.network, make, self.crashes.on_io(name))
                for name in node_names(self.nodes)
            ],
            shared,
        )

    def _urls(self, n: int) -> list[str]:
        """The host URLs member ``n`` is given: every node's, from the ``n``-th on."""
        if self.nodes == 1:
            return [HOST_URL]
        urls = [f"sim://{name}" for name in sorted(self.crashes.nodes)]
        return urls[n % len(urls) :] + urls[: n % len(urls)]

    def _member(self, user: str, n: int) -> SimMember:
        installer = SimInstaller(
            self._rng(f"install/{user}"),
            self.room,
            user,
            self.clock,
            faults="resolvable" in self.faults,
            attempts=1 + RETRIES,
        )
        return SimMember(
            user,
            self.room,
            self.network,
            installer,
            clock=self.clock,
            on_io=self.crashes.on_io(user),
            urls=self._urls(n),
            on_failed=lambda: self.crashes.disk_failed(user),
        )

    def _rng(self, concern: str) -> random.Random:
        return random.Random(f"{self.seed}/{concern}")

    @staticmethod
    def clock() -> float:
        """The wall clock the shells read: virtual, from :data:`START`."""
        return START + asyncio.get_running_loop().time()

    @property
    def obtainable(self) -> bool:
        """Whether every member can get every piece (else the room cannot complete)."""
        return all(member.installer.obtainable for member in self.members)

    def _on_connect(self, link: Link) -> None:
        if self.handshake_cuts:
            self.handshake_cuts -= 1
            self._deal("handshake")
            link.cut_after = self.chaos_rng.randint(0, 3)

    async def run(self) -> None:
        """Run the room; raises :class:`~matchlock.tools.sim.checks.Violation` at the first broken
        invariant."""
        loop = asyncio.get_running_loop()
        await self.host.start()
        for member in self.members:
            member.start()
        chaos = loop.create_task(self._chaos())
        try:
            while loop.time() < self.budget:
                await asyncio.sleep(TICK)
                if chaos.done() and not chaos.cancelled() and chaos.exception() is not None:
                    raise chaos.exception()  # type: ignore[misc]
                self._check()
                if all(member.folders is not None for member in self.members):
                    break
        finally:
            chaos.cancel()
        if "hostile" in self.faults:  # an answer that comes late, after the room closed
            self.adversary.intrude("replayed")
        await asyncio.sleep(1.0)
        self._check()
        if all(member.folders is not None for member in self.members):
            check_end(self.host, self.room.room_id, self.members, self.injected())
        elif self.obtainable:
            history = decode("host.log", self.host.lines(self.room.room_id))
            check_heard(history, self.members)
            check_refusals(history, self.members, self.injected())
            stuck = [m.user_id for m in self.members if m.folders is None]
            raise Violation(
                "room-completes",
                f"every piece can be had, yet {stuck} had no result after {self.budget:.2f} "
                "virtual seconds",
            )

    def injected(self) -> dict[str, int]:
        """Frames forged or duplicated on each member's connections."""
        return {m.user_id: self.network.injected(m.processes) for m in self.members}

    def kill_all(self) -> None:
        """End every process still alive (the run is over)."""
        hosts = [process for process, _ in self.host.serving()]
        for process in [*hosts, *(m.process for m in self.members)]:
            if process is not None and process.alive:
                process.kill()

    def _check(self) -> None:
        if self.crashes.failures:
            raise self.crashes.failures[0]
        check_live(self.host, self.room.room_id, self.adversary.welcomed, self.wire)
        check_members(self.members, self.obtainable)
        if self.nodes > 1:  # what a node relays, the stream holds already
            check_heard(check_no_fork(self.host, self.room.room_id), self.members)

    async def _chaos(self) -> None:
        loop = asyncio.get_running_loop()
        calm = {"delay", "resolvable", "power"} | ({"partition"} if self.nodes == 1 else set())
        faults = sorted(self.faults - calm)
        while faults and loop.time() < self.budget * FAULT_SHARE:
            await asyncio.sleep(self.chaos_rng.expovariate(1 / MEAN_GAP))
            self._fault(self.chaos_rng.choice(faults))

    def _deal(self, fault: str) -> None:
        self.dealt[fault] = self.dealt.get(fault, 0) + 1

    def _fault(self, fault: str) -> None:
        rng = self.chaos_rng
        running = [m for m in self.members if m.running]
        live = [link for link in self.network.links if link.joined and link.member_end.process]
        if fault == "drop" and live:
            self._deal(fault)
            rng.choice(live).sever()
        elif fault == "handshake":
            self.handshake_cuts += 1
        elif fault == "duplicate" and live:
            self._deal(fault)
            rng.choice(live).duplicates = 1
        elif fault == "hostile":
            self._deal(fault)
            self._hostile(live)
        elif fault == "crash" and self.nodes > 1:
            self.crashes.crash(rng.choice(sorted(self.crashes.nodes)))
        elif fault == "crash" and isinstance(self.host, SimHost) and self.host.up:
            self.crashes.crash(HOST)
        elif fault == "partition":
            self._partition()
        elif fault == "restart" and running:
            self.crashes.crash(rng.choice(running).user_id)
        elif fault == "disk":
            single = isinstance(self.host, SimHost) and self.host.up
            disks = ([HOST] if single else []) + [member.user_id for member in running]
            if disks:
                self.crashes.fill(rng.choice(disks))

    def _partition(self) -> None:
        """Cut a node that runs from the stream, and heal it after a seeded while."""
        assert not isinstance(self.host, SimHost)
        rng = self.chaos_rng
        node = rng.choice(self.host.nodes)
        stream = node.stream
        if not node.up or stream is None or stream.cut_off:
            return
        self._deal("partition")
        stream.cut()
        token = CURRENT.set(None)  # the network's doing, in no process
        try:
            asyncio.get_running_loop().call_later(rng.uniform(*PARTITION), stream.heal)
        finally:
            CURRENT.reset(token)

    def _hostile(self, live: list[Link]) -> None:
        if live and self.chaos_rng.random() < 0.4:
            link = self.chaos_rng.choice(live)
            if self.forged.get(link.number, 0) < MAX_FORGED:
                self.forged[link.number] = self.forged.get(link.number, 0) + 1
                member = next(m for m in self.members if m.process is link.member_end.process)
                self.adversary.forge(link, member.user_id)
                return
        self.adversary.intrude()
