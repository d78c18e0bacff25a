"""The simulated processes: the real room host (:class:`~matchlock.app.hosting.RoomHost`) and the
real member shell (:func:`~matchlock.app.joining.join`), each started, killed and restarted on the
same in-memory disk.

:class:`SimHost` runs one ``RoomHost`` at a time in a :class:`~matchlock.tools.sim.loop.Process`, on
a :class:`~matchlock.store.MemoryRepository` that outlives it. :meth:`SimHost.kill` is SIGKILL:
the process's tasks are cancelled at once (never a graceful :meth:`RoomHost.stop`), its
connections are cut, and, for a power loss, every log keeps only a seeded prefix of what was
not yet synced (:meth:`MemoryStore.crash`). :meth:`SimHost.start` then runs a fresh
``RoomHost`` on the same repository, which recovers what it finds there, as ``matchlock serve``
does after a restart.

:class:`SimMember` runs ``join()`` for one user with the simulated network, the simulated
installer and its own log in a :class:`~matchlock.store.MemoryStore`, reopened with
:meth:`~matchlock.store.eventlog.EventLog.reopen` at each start, as ``matchlock join --log`` reopens
its file. It records what it heard (``on_event``) per process, and how ``join()`` ended.

Every store a process writes is reached through a :class:`FencedStore`: once the process is
dead, nothing it still runs (a ``finally`` block of a cancelled task) can write. It also takes
the time a real disk takes between the steps of an append (the file appears empty, then the
lines are on their way to the operating system, then they reach it, then the sync makes them
durable), so that a crash can fall between any two of them, as it can between a real host's
``open``, ``write`` and ``fsync``;
after each step it tells ``on_io`` (the simulator may kill the process right there).

Nothing here decides anything the shells decide: no catch-up, no retry, no recovery.
"""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matchlock.app.hosting import RoomHost
from matchlock.app.joining import join
from matchlock.core import events as ev
from matchlock.core.config import (
    Collection,
    MatchLockConfig,
    Piece,
    Resolvable,
    RoomConfig,
    split_piece_key,
)
from matchlock.core.errors import HostFailedError, LogWriteError
from matchlock.core.host import HostProtocol
from matchlock.store import LogStore, MemoryRepository, MemoryStore
from matchlock.store.eventlog import Durability, EventLog
from matchlock.tools.sim.installer import SimInstaller
from matchlock.tools.sim.loop import Process
from matchlock.tools.sim.network import HOST_URL, Network
from matchlock.tools.testing import insecure_key

__all__ = [
    "MEMBER_LOCAL",
    "FencedRepository",
    "FencedStore",
    "SimHost",
    "SimMember",
    "match_lock_of",
]

MEMBER_LOCAL = frozenset(kind.model_fields["type"].default for kind in ev.MEMBER_LOCAL)
"""The types of the events a member records in its own log only (never sent, never in the
host's log: :data:`matchlock.core.events.MEMBER_LOCAL`)."""

RETRY_DELAY = 0.05
"""The members' ``join(retry_delay=)``, in virtual seconds."""

RETRIES = 1
"""The members' ``join(retries=)``: install attempts after the first."""


OPEN_TIME = 0.0005
"""Virtual seconds between a log file appearing and the first lines reaching it."""

WRITE_TIME = 0.0001
"""Virtual seconds a write takes to reach the operating system."""

SYNC_TIME = 0.002
"""Virtual seconds an fsync takes."""


class DiskFull(Exception):
    """Raised by a disk step's hook at ``writing``: the disk is full, and takes only the first
    ``keep`` share of the write's bytes (the store then refuses it with ``ENOSPC``)."""

    def __init__(self, keep: float) -> None:
        super().__init__(keep)
        self.keep = keep


class FencedStore:
    """A log store as one process sees it: gone with the process. A full disk (the ``disk``
    fault) takes a prefix of a write, torn, and refuses it with ``ENOSPC``."""

    def __init__(self, inner: MemoryStore, process: Process, on_io: Callable[[str], None]) -> None:
        self.inner = inner
        self.process = process
        self.on_io = on_io

    @property
    def name(self) -> str:
        """The inner store's name."""
        return self.inner.name

    def _alive(self) -> None:
        if not self.process.alive:  # it ends the writing task, as its death did
            raise asyncio.CancelledError(f"{self.process.name} is dead: {self.name} unwritten")

    async def append(self, lines: Sequence[bytes], durable: bool) -> None:
        """Append, while the process lives, in the steps a file takes."""
        self._alive()
        if not self.inner.appended:  # the file appears before anything is written to it
            await self.inner.append([], durable=False)
            self._step("open")
            await asyncio.sleep(OPEN_TIME)
        try:
            self._step("writing")
        except DiskFull as full:
            await self._refuse(lines, full.keep)
        await asyncio.sleep(WRITE_TIME)  # the write's way to the operating system
        await self.inner.append(lines, durable=False)
        self._step("write")
        if durable:
            await asyncio.sleep(SYNC_TIME)
            await self.inner.append([], durable=True)
            self._step("sync")

    async def _refuse(self, lines: Sequence[bytes], keep: float) -> None:
        """Write the first ``keep`` share of ``lines``' bytes (the last line torn where the
        share ends), then refuse the write as a full disk does."""
        data = b"".join(lines)
        if kept := data[: int(len(data) * keep)]:
            await self.inner.append(kept.splitlines(keepends=True), durable=False)
        raise OSError(errno.ENOSPC, f"No space left on the simulated disk of {self.name}")

    def _step(self, step: str) -> None:
        self.on_io(step)
        self._alive()  # the process may have died at this very step

    def read(self, start: int = 0) -> Iterator[bytes]:
        """Read the inner store."""
        return self.inner.read(start)

    async def drop_torn(self, size: int) -> None:
        """Cut a torn tail, while the process lives."""
        self._alive()
        await self.inner.drop_torn(size)

    async def close(self) -> None:
        """Nothing to release."""


class FencedRepository:
    """A :class:`~matchlock.store.MemoryRepository` as one process sees it."""

    def __init__(
        self, inner: MemoryRepository, process: Process, on_io: Callable[[str], None]
    ) -> None:
        self.inner = inner
        self.process = process
        self.on_io = on_io

    async def ids(self) -> list[str]:
        """The inner repository's ids."""
        return await self.inner.ids()

    def create(self, log_id: str) -> LogStore:
        """A new log, fenced."""
        return FencedStore(self.inner.create(log_id), self.process, self.on_io)

    def store(self, log_id: str) -> LogStore:
        """A held log, fenced."""
        return FencedStore(self.inner.store(log_id), self.process, self.on_io)

    async def remove(self, log_id: str) -> None:
        """Remove a log, while the process lives."""
        if not self.process.alive:
            raise asyncio.CancelledError(f"{self.process.name} is dead: {log_id} kept")
        await self.inner.remove(log_id)


def power_loss(store: MemoryStore, rng: random.Random) -> None:
    """The machine lost power: a seeded prefix of the unsynced bytes survives."""
    store.crash(rng.randint(0, store.unsynced))


class SimHost:
    """The host machine: a repository of room logs and, when it runs, one ``RoomHost``."""

    def __init__(
        self,
        network: Network,
        clock: Callable[[], float],
        nonces: Callable[[], bytes],
        *,
        durability: Durability,
        planted: frozenset[str],
        on_io: Callable[[str], None],
        on_failed: Callable[[], None] = lambda: None,
    ) -> None:
        self.network = network
        self.on_io = on_io
        self.on_failed = on_failed
        self.clock = clock
        self.nonces = nonces
        self.durability: Durability = durability
        self.planted = planted
        self.repository = MemoryRepository()
        self.generation = 0
        self.process: Process | None = None
        self.host: RoomHost | None = None

    @property
    def up(self) -> bool:
        """Whether a host process runs."""
        return self.process is not None and self.process.alive

    async def start(self) -> None:
        """Start a fresh ``RoomHost`` on the repository (it recovers what it finds there)."""
        self.generation += 1
        process = Process(f"host-{self.generation}")
        host = RoomHost(
            store=FencedRepository(self.repository, process, self.on_io),
            clock=self.clock,
            nonces=self.nonces,
            durability=self.durability,
        )
        if self.planted:
            host.core = HostProtocol(planted_bugs=self.planted)
        self.process, self.host = process, host
        await process.spawn(host.start())
        self.network.listen(process, host, HOST_URL)
        process.spawn(self._exit_when_failed(host))

    async def _exit_when_failed(self, host: RoomHost) -> None:
        """As ``matchlock serve`` exits when its host could not write its logs: tell
        :attr:`on_failed` (its operator frees the disk and starts it again)."""
        try:
            await host.unless_failed(asyncio.get_running_loop().create_future())
        except HostFailedError:
            asyncio.get_running_loop().call_soon(self.on_failed)

    def kill(self, power: random.Random | None) -> None:
        """SIGKILL (and with ``power``, a power loss of the machine, seeded by it)."""
        assert self.process is not None
        self.process.kill()
        self.network.hang_up(HOST_URL)
        self.network.sever_all(self.process, power=power is not None)
        if power is not None:
            for store in self.repository.stores.values():
                power_loss(store, power)

    def lines(self, room_id: str) -> list[bytes]:
        """The room's log as the disk holds it."""
        store = self.repository.stores.get(room_id)
        return [] if store is None else list(store.lines)

    def serving(self) -> Iterator[tuple[Process, RoomHost]]:
        """The host process and its host, while it runs."""
        if self.up and self.process is not None and self.host is not None:
            yield self.process, self.host


@dataclass
class Incarnation:
    """One process of a member: the room events its log held when it started (its own
    member-local events left out), what it heard."""

    known: int
    heard: list[ev.Event] = field(default_factory=list)


def match_lock_of(room: RoomConfig) -> MatchLockConfig:
    """A match-lock config holding exactly the room's pieces (their resolvables are the
    simulated installer's business)."""
    collections: dict[str, dict[str, Piece]] = {}
    for key in room.piece_keys():
        collection, name = split_piece_key(key)
        pinned = room.content[key]
        collections.setdefault(collection, {})[name] = Piece(
            sha256=pinned.sha256,
            size=pinned.size,
            folder_sha256=pinned.folder_sha256,
            folder_size=pinned.folder_size,
            resolvables=(Resolvable(url=f"https://mirror-0.example/{key}"),)
            if pinned.archive is not None
            else (),
        )
    return MatchLockConfig(
        collections={
            name: Collection(mandatory=True, pieces=pieces) for name, pieces in collections.items()
        }
    )


class SimMember:
    """One user's machine: its log on disk, its download cache, and its ``join()`` process,
    given the host's URLs (``urls``: the nodes of a cluster, in the order it tries them)."""

    def __init__(
        self,
        user_id: str,
        room: RoomConfig,
        network: Network,
        installer: SimInstaller,
        *,
        clock: Callable[[], float],
        on_io: Callable[[str], None],
        urls: Sequence[str] = (HOST_URL,),
        on_failed: Callable[[], None] = lambda: None,
    ) -> None:
        self.user_id = user_id
        self.urls = list(urls)
        self.on_io = on_io
        self.on_failed = on_failed
        self.room = room
        self.network = network
        self.installer = installer
        self.clock = clock
        self.store = MemoryStore(f"memory:{user_id}.log")
        self.process: Process | None = None
        self.processes: list[Process] = []
        self.incarnations: list[Incarnation] = []
        self.folders: dict[str, Path] | None = None
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        """Whether its ``join()`` process is alive and has not ended."""
        return (
            self.process is not None
            and self.process.alive
            and self.folders is None
            and self.error is None
        )

    def start(self) -> None:
        """Start ``join()`` in a new process."""
        self.process = Process(f"{self.user_id}-{len(self.processes) + 1}")
        self.processes.append(self.process)
        self.process.spawn(self._run(self.process))

    def kill(self, power: random.Random | None) -> None:
        """SIGKILL (and with ``power``, a power loss, seeded by it)."""
        assert self.process is not None
        self.process.kill()
        self.network.sever_all(self.process, power=power is not None)
        if power is not None:
            power_loss(self.store, power)

    async def _run(self, process: Process) -> None:
        stream = f"client/{self.room.room_id}/{self.user_id}"
        disk = FencedStore(self.store, process, self.on_io)
        try:
            if self.store.appended:  # as join --log continues the file it finds
                log, events = await EventLog.reopen(disk, stream=stream)
            else:
                log, events = EventLog.new(disk, stream), []
            incarnation = Incarnation(sum(e.type not in MEMBER_LOCAL for e in events))
            self.incarnations.append(incarnation)
            self.folders = await join(
                self.urls,
                room=self.room,
                user_id=self.user_id,
                key=insecure_key(self.user_id),
                config=match_lock_of(self.room),
                dest="/sim-cache",
                log=(log, events),
                on_event=incarnation.heard.append,
                retries=RETRIES,
                retry_delay=RETRY_DELAY,
                connect=self.network.connector(process),
                install=self.installer,
                clock=self.clock,
            )
        except LogWriteError:  # its log's disk is full: its user frees it and joins again
            if process.alive:
                asyncio.get_running_loop().call_soon(self.on_failed)
        except Exception as error:  # how join() ended is what is checked
            if process.alive:  # a killed process ends however it ends: nobody sees it
                self.error = error
