"""Process crashes: the host's and the members', at a seeded moment or at a disk step.

A crash kills a machine's process (SIGKILL: :meth:`~matchlock.tools.sim.processes.SimHost.kill`),
sometimes with a power loss, and starts a new one on the same disk after a seeded pause: the
host's ``RoomHost.start()`` recovers its logs, a member's ``join()`` continues its log and
finds its cache. A crash strikes either at once (the chaos task's moment) or, armed, at the
process's n-th next disk step (:meth:`Crashes.on_io`: the instant a log file appears empty,
as lines leave for the operating system, once they reach it or while they are being synced,
once they are synced),
which is where a host's log and
the frames it sends can disagree: killed after ``member_goodbye`` reached the log and before
anyone heard it, after ``room_closed`` was written but not yet sent, the instant a room's log
file appeared.

The nodes of a cluster (:mod:`matchlock.tools.sim.cluster`, by their names in
:attr:`Crashes.nodes`) crash the same way; their disk step is the instant an append reached
the shared stream, before its acknowledgement came back.

A restart that fails is a violation (``the-host-restarts-from-its-logs``): it is kept in
:attr:`Crashes.failures` for the simulator to raise.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Protocol

from matchlock.tools.sim.checks import Violation
from matchlock.tools.sim.loop import CURRENT, Process
from matchlock.tools.sim.processes import SYNC_TIME, DiskFull, SimHost, SimMember

__all__ = ["HOST", "MAX_KILLS", "Crashes", "Machine"]


class Machine(Protocol):
    """A host machine the simulator kills and starts again (the host, a cluster's node)."""

    process: Process | None

    def kill(self, power: random.Random | None) -> None:
        """SIGKILL, and with ``power`` a power loss seeded by it."""

    async def start(self) -> None:
        """Start a fresh host process on the machine's logs."""


HOST = "host"
"""The name crashes give the host machine (members go by their user id)."""

MAX_KILLS = 3
"""Crashes of each machine per run at most."""

MAX_FILLS = 2
"""Disks that fill under each machine per run at most."""

MAX_STEPS_AHEAD = 6
"""An armed crash strikes at one of the process's next this many disk steps."""


class Crashes:
    """Kills and restarts, decided by ``rng``; power losses by ``power`` (None: never)."""

    def __init__(
        self,
        rng: random.Random,
        power: random.Random | None,
        deal: Callable[[str], None],
    ) -> None:
        self.rng = rng
        self.power = power
        self.deal = deal
        self.host: SimHost | None = None
        self.nodes: dict[str, Machine] = {}  # a cluster's nodes, by name
        self.members: dict[str, SimMember] = {}
        self.kills: dict[str, int] = {}
        self.armed: dict[str, tuple[int, bool]] = {}  # who -> (disk steps to wait, power loss)
        self.full: dict[str, int] = {}  # who -> writes to wait before the disk refuses one
        self.fills: dict[str, int] = {}
        self.failures: list[Violation] = []
        self.tasks: list[asyncio.Task[None]] = []

    def crash(self, who: str) -> None:
        """Crash ``who`` (:data:`HOST` or a user id): now, or at one of its next disk steps."""
        if who in self.armed or self.kills.get(who, 0) >= MAX_KILLS:
            return
        self.kills[who] = self.kills.get(who, 0) + 1
        power = self.power is not None and self.rng.random() < 0.5
        if self.rng.random() < 0.5:
            self.armed[who] = (self.rng.randrange(MAX_STEPS_AHEAD), power)
        else:
            self._kill(who, power)

    def fill(self, who: str) -> None:
        """Fill ``who``'s disk: one of its next writes is torn and refused (``ENOSPC``)."""
        if who in self.full or self.fills.get(who, 0) >= MAX_FILLS:
            return
        self.fills[who] = self.fills.get(who, 0) + 1
        self.full[who] = self.rng.randrange(MAX_STEPS_AHEAD)

    def disk_failed(self, who: str) -> None:
        """``who``'s process ended on its full disk's error (a host stopped, a member's join
        raised): its operator frees the disk and starts it again after a seeded pause."""
        machine = self._host(who) or self.members[who]
        if machine.process is not None and machine.process.alive:
            machine.kill(None)  # what is left of the process: it has stopped serving
        self._restart(who, self.rng.uniform(0.01, 0.3))

    def on_io(self, who: str) -> Callable[[str], None]:
        """The disk-step hook of ``who``'s stores: refuses a write when its disk is due to
        fill (:class:`~matchlock.tools.sim.processes.DiskFull`), strikes an armed crash when
        it is due."""

        def step(kind: str) -> None:
            if kind == "writing" and who in self.full:
                if self.full[who]:
                    self.full[who] -= 1
                else:
                    del self.full[who]
                    self.deal("disk")
                    raise DiskFull(self.rng.random())
            armed = self.armed.get(who)
            if armed is None:
                return
            if armed[0]:
                self.armed[who] = (armed[0] - 1, armed[1])
                return
            del self.armed[who]
            if kind == "write" and self.rng.random() < 0.5:  # while the sync is under way
                later = self.rng.uniform(0.0, SYNC_TIME)
                asyncio.get_running_loop().call_later(later, self._kill_if_up, who, armed[1])
            else:
                self._kill(who, armed[1])

        return step

    def _host(self, who: str) -> Machine | None:
        """The host machine named ``who`` (None: ``who`` is a member)."""
        return self.host if who == HOST else self.nodes.get(who)

    def _kill_if_up(self, who: str, power: bool) -> None:
        machine = self._host(who) or self.members[who]
        if machine.process is not None and machine.process.alive:
            self._kill(who, power)

    def _kill(self, who: str, power: bool) -> None:
        host = self._host(who)
        self.deal("crash" if host is not None else "restart")
        if power:
            self.deal("power")
        losing = self.power if power else None
        if host is not None:
            host.kill(losing)
        else:
            member = self.members[who]
            member.kill(losing)
            if self.rng.random() < 0.3:
                member.installer.reject_one()
        self._restart(who, self.rng.uniform(0.01, 0.3 if host is not None else 0.2))

    def _restart(self, who: str, pause: float) -> None:
        token = CURRENT.set(None)  # the restart is the simulator's doing, in no process
        try:
            task = asyncio.get_running_loop().create_task(self._revive(who, pause))
        finally:
            CURRENT.reset(token)
        self.tasks.append(task)

    async def _revive(self, who: str, pause: float) -> None:
        await asyncio.sleep(pause)
        host = self._host(who)
        if host is None:
            self.members[who].start()
            return
        try:
            await host.start()
        except Exception as error:  # a restart that fails is what is checked
            self.failures.append(
                Violation(
                    "the-host-restarts-from-its-logs",
                    f"RoomHost.start() raised {type(error).__name__}: {error}",
                )
            )
