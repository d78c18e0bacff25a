"""Deterministic simulation of whole rooms: the same seed, the same run, byte for byte.

:func:`simulate` builds a room (``users`` x ``pieces``), then lets a seeded scheduler choose
``steps`` times what happens next (:mod:`matchlock.sim.world`): deliver a frame on some
connection, advance some member's download, or, with ``faults``, drop a connection, crash the
host, duplicate a report, or let an impostor or a misbehaving member in. After every step the
invariants of :mod:`matchlock.sim.invariants` are checked; the first one violated stops the run
with a :class:`SimulationFailure` naming the seed, the step, the invariant, the command that
reproduces it, and where the logs were written for ``matchlock replay``.

``planted`` plants bugs in the host (:data:`matchlock.host.PLANTABLE_BUGS`): tests use it to
prove that the simulation finds such bugs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from matchlock.config import PinnedPiece
from matchlock.errors import MatchlockError
from matchlock.sim.invariants import Violation, check_end, check_liveness, check_step
from matchlock.sim.world import FAULTS, SimMember, World
from matchlock.testing import signed_room

__all__ = ["FAULTS", "SimResult", "SimulationFailure", "simulate"]

MAX_MISDEEDS = 3
"""Bad reports a member sends at most: a member that keeps misbehaving is rightly shut out, and
then no room would ever complete."""

MAX_INTRUSIONS = 6
"""Impostors per run."""


@dataclass(frozen=True)
class SimResult:
    """A run that broke no invariant: did the room close, after how many steps and events,
    and every log it wrote (``host.log`` and ``<user>.log``) as bytes."""

    seed: int
    closed: bool
    steps: int
    events: int
    logs: dict[str, bytes]


class SimulationFailure(MatchlockError):
    """An invariant was violated. ``command`` reproduces the run; ``logs`` is the folder that
    holds its logs (when the run was given one)."""

    def __init__(
        self, seed: int, step: int, *, invariant: str, detail: str, command: str, logs: Path | None
    ) -> None:
        self.seed, self.step, self.invariant, self.detail = seed, step, invariant, detail
        self.command, self.logs = command, logs
        where = f"\n  logs: {logs} (matchlock replay {logs / 'host.log'})" if logs else ""
        super().__init__(
            f"seed {seed}, step {step}: invariant {invariant!r} violated: {detail}\n"
            f"  reproduce: {command}{where}"
        )


def simulate(
    seed: int,
    *,
    users: int = 3,
    pieces: int = 3,
    steps: int = 2000,
    faults: Collection[str] = FAULTS,
    planted: Collection[str] = (),
    log_dir: Path | None = None,
) -> SimResult:
    """Run one seeded room; raise :class:`SimulationFailure` at the first broken invariant.
    With ``log_dir``, every log is written there (on failure too)."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    rng = random.Random(seed)
    sizes = {f"chars/p{i}": rng.randint(0, 5) * 1000 + rng.randint(1, 999) for i in range(pieces)}
    room = signed_room(
        f"sim{seed}",
        [f"u{i}" for i in range(users)],
        {
            key: PinnedPiece(sha256=f"{i:064x}", size=size)
            for i, (key, size) in enumerate(sizes.items())
        },
    )
    world = World(rng, room, frozenset(faults), frozenset(planted))
    command = _command(
        seed, users=users, pieces=pieces, steps=steps, faults=faults, planted=planted
    )
    step = 0
    try:
        for step in range(1, steps + 1):
            world.step_no = step
            _one_step(world)
            check_step(world)
            if _settled(world):
                check_end(world)
                break
        else:
            check_liveness(world)
    except (Violation, MatchlockError) as error:
        invariant = error.invariant if isinstance(error, Violation) else type(error).__name__
        _write_logs(world, log_dir)
        raise SimulationFailure(
            seed, step, invariant=invariant, detail=str(error), command=command, logs=log_dir
        ) from error
    _write_logs(world, log_dir)
    state = world.host.core.rooms[room.room_id].room
    return SimResult(seed, state.status == "closed", step, state.events, _logs(world))


def _command(
    seed: int,
    *,
    users: int,
    pieces: int,
    steps: int,
    faults: Collection[str],
    planted: Collection[str],
) -> str:
    parts = [f"matchlock simulate --seed {seed} --users {users} --pieces {pieces} --steps {steps}"]
    parts.append(f"--faults {','.join(sorted(faults)) or 'none'}")
    if planted:
        parts.append(f"--plant {','.join(sorted(planted))}")
    return " ".join(parts)


def _settled(world: World) -> bool:
    hosted = world.host.core.rooms.get(world.room.room_id)
    return hosted is not None and hosted.room.status == "closed" and not any(world.queues.values())


def _one_step(world: World) -> None:
    """Choose what happens next: the seed's generator and the enabled faults decide."""
    rng, faults = world.rng, world.faults
    choices: list[tuple[float, Callable[[], None]]] = []
    busy = [key for key, queue in world.queues.items() if queue]
    if busy:
        key = rng.choice(busy) if "delay" in faults else min(busy)
        choices.append((6.0, lambda: world.deliver(key)))
    for member in world.members.values():
        work = world.pending_work(member)
        if work:
            choices.append((2.0, partial(world.work, member, rng.choice(work))))
        if member.conn is None and member.client.phase != "closed":
            choices.append((1.0, partial(world.rejoin, member)))
        elif member.conn is not None:
            _member_faults(world, member, choices)
    if "crash" in faults:
        choices.append((0.02, lambda: world.crash_host(tear=rng.random() < 0.5)))
    if "hostile" in faults and world.intrusions < MAX_INTRUSIONS:
        away = any(m.conn is None for m in world.members.values())
        choices.append(
            (0.3 if away else 0.02, world.intrude)
        )  # impostors strike when someone is away
    if not choices:
        return
    weights = [weight for weight, _ in choices]
    rng.choices(choices, weights)[0][1]()


def _member_faults(
    world: World, member: SimMember, choices: list[tuple[float, Callable[[], None]]]
) -> None:
    conn = member.conn
    assert conn is not None
    if "drop" in world.faults:
        choices.append((0.05, lambda: world.close(conn, tell_host=True)))
    joined = member.client.phase == "joined"
    if "duplicate" in world.faults and member.last_report and joined:
        choices.append((0.1, lambda: world.duplicate(member)))
    if "hostile" in world.faults and joined and member.misdeeds < MAX_MISDEEDS:
        choices.append((0.03, lambda: world.misbehave(member)))


def _logs(world: World) -> dict[str, bytes]:
    logs = {"host.log": b"".join(world.host.lines)}
    logs.update({f"{m.user_id}.log": b"".join(m.lines) for m in world.members.values()})
    return logs


def _write_logs(world: World, log_dir: Path | None) -> None:
    if log_dir is None:
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    for name, data in _logs(world).items():
        (log_dir / name).write_bytes(data)
