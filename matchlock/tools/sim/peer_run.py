"""One seeded room of peers (:mod:`matchlock.tools.sim.peers`) under the transfer faults of
:mod:`matchlock.tools.sim.transfers`, from its seed to its verdict: :func:`simulate_transfers`.

The host is the real :class:`~matchlock.app.hosting.RoomHost` on the simulation's repository,
killed and started again on its logs (``host-mid-transfer``); the members are
:class:`~matchlock.tools.sim.peers.PeerMember` processes, killed and started again
(``peer-gone``); the network is the simulation's, always with its random latency. Every
:data:`~matchlock.tools.sim.run.TICK` the transfer checks and the live room's machines are
checked; at the end, the host's log, read from its disk and folded by the real fold, must be
a closed room. A broken invariant is a :class:`~matchlock.tools.sim.SimulationFailure` naming
the seed, the command that reproduces it and where the logs are (``host.log``, and each
member's own ``<user>.log`` with its ``transfer_received`` / ``transfer_served`` events).

Randomness: one generator per concern (the room's bytes, the network, the nonces, the faults,
the pauses), each seeded from the seed and the concern's name. It never reads the real clock;
it writes files only into ``log_dir``, after the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from matchlock.core.config import PinnedPiece, RoomConfig
from matchlock.core.errors import MatchlockError
from matchlock.core.room import replay
from matchlock.store.eventlog import EventLog
from matchlock.tools.sim import SimulationFailure
from matchlock.tools.sim.checks import Violation, check_machines, decode
from matchlock.tools.sim.loop import VirtualLoop
from matchlock.tools.sim.network import Link, Network
from matchlock.tools.sim.peers import CHUNK, HOLDERS, PLANTABLE, PeerMember
from matchlock.tools.sim.processes import SimHost
from matchlock.tools.sim.resolving import ResolverMember
from matchlock.tools.sim.run import START, STEP, TICK
from matchlock.tools.sim.transfers import TRANSFER_FAULTS, TransferWatch
from matchlock.tools.testing import signed_room

__all__ = ["PeerResult", "room_of", "simulate_transfers"]


@dataclass(frozen=True)
class PeerResult:
    """A run that broke nothing: whether the room closed (it must), after how many steps (10
    virtual ms each) and events, how many faults of each kind were dealt, how many pieces were
    installed from a peer with their pinned bytes checked, and the host's log."""

    seed: int
    closed: bool
    steps: int
    events: int
    dealt: dict[str, int]
    verified: int
    host_log: bytes


def room_of(
    seed: int, users: int, pieces: int, unit: int = 700
) -> tuple[RoomConfig, dict[str, bytes]]:
    """The seed's room and its pieces' bytes (1 to 8 ``unit`` bytes each: a few KiB by default)."""
    rng = random.Random(f"{seed}/peer-room")
    content = {f"chars/p{i}": rng.randbytes(rng.randint(1, 8) * unit) for i in range(pieces)}
    pins = {
        key: PinnedPiece(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        for key, data in content.items()
    }
    return signed_room(f"peers{seed}", [f"u{i}" for i in range(users)], pins), content


class _World:
    """The host, the members, the network and the watch of one seeded run."""

    def __init__(
        self, seed: int, *, users: int, pieces: int, faults: frozenset[str],
        planted: frozenset[str], budget: float, unit: int, chunk: int,
    ) -> None:  # fmt: skip
        self.seed, self.budget = seed, budget
        self.ended = 0.0  # the virtual time the room ended (or the budget ran out)
        self.room, content = room_of(seed, users, pieces, unit)
        self.dealt: dict[str, int] = {}
        self.network = Network(random.Random(f"{seed}/peer-network"), delay=True)
        nonces = random.Random(f"{seed}/peer-nonces")
        self.host = SimHost(
            self.network, self.clock, lambda: nonces.randbytes(16),
            durability="every", planted=frozenset(), on_io=lambda step: None,
        )  # fmt: skip
        member = PeerMember if planted else ResolverMember  # a planted bug is in the sim's
        self.members = {
            user: member(
                user, self.room, network=self.network,
                held=content if user in HOLDERS else {}, clock=self.clock,
                planted=planted if user not in HOLDERS else frozenset(), chunk=chunk,
            )
            for user in self.room.users
        }  # fmt: skip
        self.chaos = random.Random(f"{seed}/peer-chaos")
        self.watch = TransferWatch(
            self.room, random.Random(f"{seed}/transfers"), faults,
            user_of=self._user_of, kill=self._kill, deal=self._deal,
            dealing=lambda: asyncio.get_running_loop().time() < budget / 2,
            sources=HOLDERS,
        )  # fmt: skip
        self.network.on_member_frame = self.watch.member_frame
        self.network.on_member_read = self.watch.member_read

    @staticmethod
    def clock() -> float:
        return START + asyncio.get_running_loop().time()

    def _deal(self, fault: str) -> None:
        self.dealt[fault] = self.dealt.get(fault, 0) + 1

    def _user_of(self, link: Link) -> str | None:
        for user, member in self.members.items():
            if member.process is not None and member.process is link.member_end.process:
                return user
        return None

    def _kill(self, who: str) -> None:
        loop = asyncio.get_running_loop()
        pause = self.chaos.uniform(0.05, 0.3)
        if who == "host":
            if self.host.up:
                self.host.kill(None)
                loop.call_later(pause, lambda: loop.create_task(self._restart_host()))
        elif who.startswith("link:"):
            for link in list(self.network.links):
                if self._user_of(link) == who.removeprefix("link:"):
                    loop.call_soon(link.sever)
        else:
            member = self.members[who]
            loop.call_soon(member.kill)
            loop.call_later(pause, member.start)

    async def _restart_host(self) -> None:
        self.watch.host_restarted()
        await self.host.start()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await self.host.start()
        for member in self.members.values():
            member.start()
        while loop.time() < self.budget and not all(m.closed for m in self.members.values()):
            await asyncio.sleep(TICK)
            self.watch.check()
            if self.host.up and self.host.host is not None:
                hosted = self.host.host.core.rooms.get(self.room.room_id)
                if hosted is not None:
                    check_machines(hosted.room)
        self.watch.check()
        self.ended = loop.time()
        history = decode("host.log", self.host.lines(self.room.room_id))
        state = replay(history)
        if state.status != "closed":
            raise Violation(
                "room-completes",
                f"the room is {state.status} after {self.budget:.1f} virtual seconds: "
                + ", ".join(f"{u} lacks {m._lacking()}" for u, m in self.members.items()),
            )


def simulate_transfers(
    seed: int,
    *,
    users: int = 4,
    pieces: int = 2,
    steps: int = 2000,
    faults: Collection[str] = TRANSFER_FAULTS,
    planted: Collection[str] = (),
    log_dir: Path | None = None,
    unit: int = 700,
    chunk: int = CHUNK,
) -> PeerResult:
    """Run one seeded room of peers; raise :class:`~matchlock.tools.sim.SimulationFailure` at
    the first broken invariant (those of :mod:`matchlock.tools.sim.transfers`, the machines',
    and ``room-completes``: the room closes within ``steps`` x 10 virtual ms). With
    ``log_dir``, every log is written there (on failure too). Pieces are 1 to 8 times ``unit``
    bytes long, sent in data frames of ``chunk`` bytes (with 512 KiB ones and pieces of MiBs,
    the holders wait on the transfer window)."""
    unknown = set(faults) - set(TRANSFER_FAULTS) or set(planted) - PLANTABLE
    if unknown:
        raise ValueError(f"unknown transfer faults or bugs: {sorted(unknown)}")
    world = _World(
        seed, users=users, pieces=pieces, faults=frozenset(faults), planted=frozenset(planted),
        budget=steps * STEP, unit=unit, chunk=chunk,
    )  # fmt: skip
    loop = VirtualLoop()
    try:
        loop.run_until_complete(world.run())
    except (Violation, MatchlockError) as error:
        invariant = error.invariant if isinstance(error, Violation) else type(error).__name__
        step = round(loop.time() / STEP)
        head = f"matchlock simulate --seed {seed} --users {users} --pieces {pieces}"
        command = f"{head} --steps {steps} --faults {','.join(sorted(faults)) or 'transfers'}"
        command += f" --plant {','.join(sorted(planted))}" if planted else ""
        raise SimulationFailure(
            seed, step, invariant=invariant, detail=str(error), command=command, logs=log_dir
        ) from error
    finally:
        _end(world, loop)
        _write_logs(world, log_dir)
    lines = world.host.lines(world.room.room_id)
    steps_taken = round(world.ended / STEP)
    return PeerResult(
        seed,
        True,
        steps_taken,
        len(decode("host.log", lines)),
        dict(world.dealt),
        world.watch.verified,
        b"".join(lines),
    )


def _end(world: _World, loop: VirtualLoop) -> None:
    """Kill every process, cancel whatever still runs and close the loop."""
    for process in [world.host.process, *(m.process for m in world.members.values())]:
        if process is not None and process.alive:
            process.kill()
    while pending := asyncio.all_tasks(loop):  # a cancelled task may leave one more
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


def _write_logs(world: _World, log_dir: Path | None) -> None:
    """``host.log`` as the host's disk holds it; each member's own log, its room events and
    its transfer events in the order it recorded them."""
    if log_dir is None:
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "host.log").write_bytes(b"".join(world.host.lines(world.room.room_id)))
    for user, member in world.members.items():
        path = log_dir / f"{user}.log"
        path.unlink(missing_ok=True)
        log = EventLog.start(path, f"client/{world.room.room_id}/{user}", durability="none")
        log.buffer(*member.journal)
        asyncio.run(log.close())
