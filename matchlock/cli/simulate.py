"""``matchlock simulate``: run whole rooms deterministically from a seed, checking invariants.

Each run is the real room host and the real ``join()`` of every member on a virtual clock, with
the world simulated (:mod:`matchlock.tools.sim`; docs/simulation.md). ``--steps K`` is the run's
budget of virtual time, K x 10 ms (faults are dealt during its first 30 %). ``--nodes 2`` hosts
each room on a cluster of two nodes sharing one stream, which crash and are cut from it.

Exit codes: 0 no invariant broken; 1 an invariant broke (the seed, the step, the invariant and
the command that reproduces it are printed, and the logs are written for ``matchlock replay``).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path

from matchlock.core.errors import UsageError
from matchlock.core.host import PLANTABLE_BUGS
from matchlock.tools.sim import FAULTS, SimResult, SimulationFailure, simulate
from matchlock.tools.sim.peer_run import PeerResult, simulate_transfers
from matchlock.tools.sim.peers import PLANTABLE
from matchlock.tools.sim.transfers import TRANSFER_FAULTS


def _names(allowed: Collection[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        if text in ("", "none"):
            return ()
        if text == "all":
            return tuple(sorted(allowed))
        names = tuple(text.split(","))
        unknown = set(names) - set(allowed)
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {sorted(unknown)}; choose from {', '.join(sorted(allowed))}"
            )
        return names

    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of nodes (1, 2, ...)")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``simulate`` sub-command."""
    parser = commands.add_parser(
        "simulate",
        help="run seeded simulated rooms and check their invariants",
        description="Run whole rooms in one process from a seed (same seed, same run, byte for "
        "byte): the real room host and the real join() of every member, on a virtual clock, "
        "with the network, disks, downloads and crashes simulated as the seed decides, "
        "checking invariants while the room runs and at its end.",
    )
    parser.add_argument("--seed", type=int, default=0, help="the (first) seed")
    parser.add_argument(
        "--seeds", type=int, default=1, metavar="N", help="run N seeds from --seed on"
    )
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--pieces", type=int, default=3)
    parser.add_argument(
        "--steps",
        type=int,
        default=2000,
        help="the budget of each run, in steps of 10 virtual ms (faults come in its first 30%%)",
    )
    parser.add_argument(
        "--faults",
        type=_faults,
        default=FAULTS,
        help=f"comma-separated, all or none ({', '.join(FAULTS)}); default all. Or faults of "
        f"peer transfers, in a room whose members get pieces from each other: transfers (all "
        f"of them) or some of {', '.join(TRANSFER_FAULTS)}",
    )
    parser.add_argument(
        "--plant",
        type=_names(PLANTABLE_BUGS | PLANTABLE),
        default=(),
        help="plant bugs in the host core, or with transfer faults in the members (tests of "
        "the simulator)",
    )
    parser.add_argument(
        "--host-durability",
        choices=("decisions", "every", "none"),
        help="the host's durability (default: every, as matchlock serve's)",
    )
    parser.add_argument(
        "--nodes",
        type=_positive,
        default=1,
        metavar="N",
        help="host the room on a cluster of N nodes sharing one stream (needs the nats extra); "
        "default 1, one host",
    )
    parser.add_argument("--log", type=Path, help="folder for the logs (per seed with --seeds)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the seeds; print one line per seed, or the failure (with its logs written)."""
    shells = logging.getLogger("matchlock")
    level = shells.level
    if not args.verbose:  # the shells warn of every fault the seed deals: expected here
        shells.setLevel(logging.ERROR)
    try:
        return _run(args)
    finally:
        shells.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    closed = 0
    for seed in range(args.seed, args.seed + args.seeds):
        log_dir = args.log / f"seed-{seed}" if args.log and args.seeds > 1 else args.log
        try:
            result = _simulate(args, seed, log_dir)
        except SimulationFailure as failure:
            if failure.logs is None:  # the same seed gives the same run: run it again, logging
                try:
                    _simulate(args, seed, Path(tempfile.mkdtemp(prefix=f"matchlock-sim-{seed}-")))
                except SimulationFailure as logged:
                    failure = logged
            print(f"FAILED {failure}")
            return 1
        closed += result.closed
        outcome = "closed" if result.closed else "not closed (a piece that cannot be had)"
        where = f"; logs in {log_dir}" if log_dir else ""
        dealt = ", ".join(f"{n} {fault}" for fault, n in sorted(result.dealt.items()))
        raced = ""
        if isinstance(result, SimResult) and args.nodes > 1:
            raced = f"; {result.conflicts} appends refused and rebased"
        print(
            f"seed {seed}: room {outcome} after {result.steps} steps, {result.events} events"
            f" (faults: {dealt or 'none'}{raced}){where}"
        )
    if args.seeds > 1:
        print(f"{args.seeds} seeds, {closed} rooms closed, no invariant broken")
    return 0


def _faults(text: str) -> tuple[str, ...]:
    """``--faults``: the room's faults, or (``transfers`` or their names) a room of peers'."""
    if text == "transfers":
        return TRANSFER_FAULTS
    names = _names((*FAULTS, *TRANSFER_FAULTS))(text)
    if text != "all" and set(names) & set(TRANSFER_FAULTS) and set(names) - set(TRANSFER_FAULTS):
        raise argparse.ArgumentTypeError(
            f"{', '.join(sorted(set(names) - set(TRANSFER_FAULTS)))} do not combine with the "
            "faults of peer transfers, which run a room of peers of their own (docs/simulation.md)"
        )
    return FAULTS if text == "all" else names


def _simulate(args: argparse.Namespace, seed: int, log_dir: Path | None) -> SimResult | PeerResult:
    if set(args.faults) & set(TRANSFER_FAULTS):
        if set(args.plant) - PLANTABLE:
            raise UsageError(f"with transfer faults, --plant takes {', '.join(sorted(PLANTABLE))}")
        return simulate_transfers(
            seed, users=args.users, pieces=args.pieces, steps=args.steps, faults=args.faults,
            planted=args.plant, log_dir=log_dir,
        )  # fmt: skip
    if set(args.plant) - PLANTABLE_BUGS:
        raise UsageError(f"--plant {', '.join(sorted(PLANTABLE))} go with transfer faults only")
    return simulate(
        seed,
        users=args.users,
        pieces=args.pieces,
        steps=args.steps,
        faults=args.faults,
        planted=args.plant,
        durability=args.host_durability,
        log_dir=log_dir,
        nodes=args.nodes,
    )
