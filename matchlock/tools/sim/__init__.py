"""Deterministic simulation of whole rooms running the code users run: the same seed, the
same run, byte for byte.

:func:`simulate` runs the real room host (:class:`~matchlock.app.hosting.RoomHost`, what
``matchlock serve`` runs) and the real member shell (:func:`~matchlock.app.joining.join`, what
``matchlock join`` runs) for ``users`` members of a room of ``pieces`` pieces, inside a
deterministic event loop on virtual time (:mod:`matchlock.tools.sim.loop`), with the world injected:
an in-memory network that delays, reorders, drops and cuts connections
(:mod:`~matchlock.tools.sim.network`), an in-memory disk that loses what was not synced when the
power goes (:class:`~matchlock.store.MemoryRepository`), a clock and nonces from the seed, an
installer whose resolvables misbehave as the seed decides (:mod:`~matchlock.tools.sim.installer`),
process crashes and restarts of the host and of members, and an adversary
(:mod:`~matchlock.tools.sim.adversary`). Nothing of the shells is re-implemented here: what they
decide (catch-up after a reconnect, retries, recovery at start-up) is theirs.

The run ends when every member's ``join()`` has returned, or when its budget, ``steps`` x 10 ms
of virtual time, is spent; faults are dealt during its first 30 %. The invariants of
:mod:`matchlock.tools.sim.checks` are checked every 50 virtual ms and at the end; the first one
violated stops the run with a :class:`SimulationFailure` naming the seed, the virtual time, the
invariant, the command that reproduces it, and where the logs were written for
``matchlock replay``.

With ``nodes`` of 2 or more, the room is hosted by that many real cluster nodes
(:class:`~matchlock.app.cluster.ClusterHost`, what ``matchlock serve --store nats://`` runs)
sharing one in-memory stream with the NATS store's compare-and-append
(:mod:`~matchlock.tools.sim.cluster`): members are spread over the nodes and given every node's
URL; nodes crash and are cut from the stream (``partition``); the room's log must stay one
chain. This needs nats-py (``pip install 'matchlock[nats]'``).

``planted`` plants bugs in the host core (:data:`matchlock.core.host.PLANTABLE_BUGS`): tests use it
to prove that the simulation finds such bugs (and plant others in the shells themselves).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from matchlock.core.config import PinnedPiece, RoomConfig
from matchlock.core.errors import MatchlockError
from matchlock.store.eventlog import Durability
from matchlock.tools.sim.checks import Violation, decode
from matchlock.tools.sim.loop import VirtualLoop
from matchlock.tools.sim.processes import SimHost
from matchlock.tools.sim.run import FAULTS, STEP, World
from matchlock.tools.testing import signed_room

__all__ = ["FAULTS", "SimResult", "SimulationFailure", "simulate"]


@dataclass(frozen=True)
class SimResult:
    """A run that broke no invariant: did the room close, after how many steps (10 virtual
    ms each) and events, every log it wrote (``host.log``, ``<user>.log``; a cluster's
    ``host.log`` is the room's log in the shared stream) as bytes, how many faults of each kind
    were dealt (``dealt``), which hosts welcomed each member (``served``: ``host``, or the
    names of a cluster's nodes, in the order it was first welcomed by each), and how many
    appends of a cluster's nodes the stream refused because another node appended first
    (``conflicts``, each re-read and decided again)."""

    seed: int
    closed: bool
    steps: int
    events: int
    logs: dict[str, bytes]
    dealt: dict[str, int]
    served: dict[str, list[str]]
    conflicts: int


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


def room_of(seed: int, users: int, pieces: int) -> RoomConfig:
    """The seed's room: ``users`` members, ``pieces`` pieces of seeded sizes."""
    rng = random.Random(f"{seed}/room")
    sizes = {f"chars/p{i}": rng.randint(0, 5) * 1000 + rng.randint(1, 999) for i in range(pieces)}
    return signed_room(
        f"sim{seed}",
        [f"u{i}" for i in range(users)],
        {
            key: PinnedPiece(sha256=f"{i:064x}", size=size)
            for i, (key, size) in enumerate(sizes.items())
        },
    )


def simulate(
    seed: int,
    *,
    users: int = 3,
    pieces: int = 3,
    steps: int = 2000,
    faults: Collection[str] = FAULTS,
    planted: Collection[str] = (),
    durability: Durability | None = None,
    log_dir: Path | None = None,
    nodes: int = 1,
) -> SimResult:
    """Run one seeded room; raise :class:`SimulationFailure` at the first broken invariant.
    ``durability`` is the host's (default: ``every``, as
    :class:`~matchlock.app.hosting.RoomHost`'s). With ``log_dir``, every log is written there (on
    failure too). ``nodes`` of 2 or more hosts the room on a cluster of that many nodes."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    if nodes < 1:
        raise ValueError(f"nodes={nodes}: a room needs at least one host node")
    room = room_of(seed, users, pieces)
    world = World(seed, room, faults, planted, steps, durability=durability, nodes=nodes)
    command = _command(seed, users=users, pieces=pieces, steps=steps, faults=faults)
    command += f" --nodes {nodes}" if nodes > 1 else ""
    command += f" --plant {','.join(sorted(planted))}" if planted else ""
    command += f" --host-durability {durability}" if durability else ""
    loop = VirtualLoop()
    try:
        loop.run_until_complete(world.run())
    except (Violation, MatchlockError) as error:
        invariant = error.invariant if isinstance(error, Violation) else type(error).__name__
        _write_logs(world, log_dir)
        step = round(loop.time() / STEP)
        raise SimulationFailure(
            seed, step, invariant=invariant, detail=str(error), command=command, logs=log_dir
        ) from error
    else:
        _write_logs(world, log_dir)
        history = decode("host.log", world.host.lines(world.room.room_id))
        closed = bool(history) and history[-1].type == "room_closed"
        steps_taken = round(loop.time() / STEP)
        conflicts = 0 if isinstance(world.host, SimHost) else world.host.conflicts
        return SimResult(
            seed,
            closed,
            steps_taken,
            len(history),
            _logs(world),
            dict(world.dealt),
            _served(world),
            conflicts,
        )
    finally:
        _end(world, loop)


def _served(world: World) -> dict[str, list[str]]:
    """The hosts (their machines' names) that welcomed each member, in order."""
    served: dict[str, list[str]] = {m.user_id: [] for m in world.members}
    for link in world.network.everyone:
        member = next((m for m in world.members if link.member_end.process in m.processes), None)
        host = link.host_end.process
        if member is not None and host is not None and link.host_end.delivered >= 2:
            machine = host.name.rsplit("-", 1)[0]  # host-2, node1-3: the machine's name
            if machine not in served[member.user_id]:
                served[member.user_id].append(machine)
    return served


def _end(world: World, loop: VirtualLoop) -> None:
    """Kill every process, cancel whatever still runs (members waiting for a room that cannot
    complete, dead processes' last tasks) and close the loop. The logs were taken before:
    nothing here can change them."""
    world.kill_all()
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()

    async def drain() -> None:
        await asyncio.gather(*pending, return_exceptions=True)

    loop.run_until_complete(drain())
    loop.close()


def _command(seed: int, *, users: int, pieces: int, steps: int, faults: Collection[str]) -> str:
    """The command line of a run (its ``--plant`` and ``--host-durability`` are added)."""
    head = f"matchlock simulate --seed {seed} --users {users} --pieces {pieces} --steps {steps}"
    return f"{head} --faults {','.join(sorted(faults)) or 'none'}"


def _logs(world: World) -> dict[str, bytes]:
    logs = {"host.log": b"".join(world.host.lines(world.room.room_id))}
    logs.update({f"{m.user_id}.log": b"".join(m.store.lines) for m in world.members})
    return logs


def _write_logs(world: World, log_dir: Path | None) -> None:
    if log_dir is None:
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    for name, data in _logs(world).items():
        (log_dir / name).write_bytes(data)
