"""The deterministic simulation: reproducible, clean on many seeds, and able to find bugs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from matchlock.cli import main
from matchlock.core.host import PLANTABLE_BUGS
from matchlock.store.eventlog import replay_file
from matchlock.tools.sim import FAULTS, SimulationFailure, simulate
from tests.tools.record_replay_logs import OUT, SIM_FINDINGS

SWEEP = int(os.environ.get("MATCHLOCK_SIM_SEEDS", "300" if os.environ.get("CI") else "60"))


def test_the_same_seed_gives_the_same_run_byte_for_byte() -> None:
    first, second = simulate(7), simulate(7)
    assert first == second
    assert first.logs["host.log"] and set(first.logs) == {"host.log", "u0.log", "u1.log", "u2.log"}
    assert simulate(8).logs != first.logs


def test_a_seed_gives_the_same_logs_in_another_process(tmp_path: Path) -> None:
    """Nothing depends on the process: not string hashing, not the wall clock, not threads."""
    simulate(4, log_dir=tmp_path / "here")
    command = [sys.executable, "-m", "matchlock", "simulate", "--seed", "4"]
    env = {**os.environ, "PYTHONHASHSEED": "4321"}
    subprocess.run([*command, "--log", str(tmp_path / "there")], check=True, env=env)
    here = sorted(p.name for p in (tmp_path / "here").iterdir())
    assert here == sorted(p.name for p in (tmp_path / "there").iterdir())
    for name in here:
        assert (tmp_path / "there" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()


def test_a_sweep_of_seeds_with_every_fault_breaks_no_invariant() -> None:
    closed = 0
    for seed in range(SWEEP):
        closed += simulate(seed).closed  # a failure raises with its reproduction command
    assert closed >= SWEEP * 9 // 10


@pytest.mark.parametrize("users,pieces", [(1, 1), (2, 4), (5, 2), (4, 12)])
def test_other_room_shapes(users: int, pieces: int) -> None:
    for seed in range(10):
        simulate(seed, users=users, pieces=pieces, steps=4000)


def test_each_fault_happens_in_a_sweep() -> None:
    results = [simulate(seed) for seed in range(20)]
    every = set(FAULTS) - {"delay", "resolvable", "partition"}  # partition: a cluster's only
    assert set().union(*(r.dealt for r in results)) == every
    text = b"".join(r.logs["host.log"] for r in results)
    for sign in (
        b"host restarted",
        b"connection closed",
        b'"resolvable_failed"',
        b'"not-yours"',
        b'"unknown-piece"',
    ):
        assert sign in text, sign


@pytest.mark.parametrize("bug", sorted(PLANTABLE_BUGS))
def test_a_planted_bug_is_found_by_some_seed(bug: str) -> None:
    found = []
    for seed in range(10):
        try:
            simulate(seed, planted=[bug])
        except SimulationFailure as failure:
            found.append(failure)
    assert found, f"no seed in 0..9 found the planted bug {bug}"
    assert f"--plant {bug}" in found[0].command


def test_a_failure_names_seed_step_invariant_and_reproduces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SimulationFailure) as caught:
        simulate(0, planted=["accept-any-answer"], log_dir=tmp_path / "first")
    failure = caught.value
    assert failure.invariant == "members-proved-who-they-are"
    assert f"seed 0, step {failure.step}" in str(failure)
    replay_file(tmp_path / "first" / "host.log")  # the logs it left replay
    argv = [*failure.command.split()[1:], "--log", str(tmp_path / "again")]
    assert main(argv) == 1
    assert (
        f"seed 0, step {failure.step}: invariant 'members-proved-who-they-are'"
        in capsys.readouterr().out
    )
    assert (tmp_path / "again" / "host.log").read_bytes() == (
        tmp_path / "first" / "host.log"
    ).read_bytes()


def test_simulation_logs_replay_to_the_live_end_state(tmp_path: Path) -> None:
    result = simulate(3, log_dir=tmp_path)
    state = replay_file(tmp_path / "host.log").state
    assert state.status == "closed" and result.closed
    assert replay_file(tmp_path / "u0.log").state.events <= state.events


def test_cli_sweep_and_fault_selection(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--seed", "0", "--seeds", "3", "--faults", "drop,delay"]) == 0
    out = capsys.readouterr().out
    assert "3 seeds, 3 rooms closed, no invariant broken" in out
    with pytest.raises(SystemExit):
        main(["simulate", "--faults", "meteor"])
    assert set(FAULTS) >= {"crash", "hostile"}


def test_every_finding_kept_in_replay_logs_is_named_and_documented() -> None:
    kept = {p.stem for p in OUT.glob("sim-seed*.log")} - {"sim-seed13-goodbye-lost"}
    assert kept == set(SIM_FINDINGS)
    docs = (OUT.parent / "docs" / "simulation.md").read_text()
    for name, (seed, *_) in SIM_FINDINGS.items():
        assert f"`{name}.log`" in docs and f"--seed {seed}" in docs, name


def test_a_host_syncs_before_it_sends_so_a_power_loss_takes_nothing_a_member_heard() -> None:
    """Found by the simulation: on ``durability="decisions"`` a power loss took progress lines
    the members had heard, and a member came back refused (``bad-since``). The host's default
    now syncs every batch before sending it."""
    for seed in (0, 14):
        simulate(seed, faults=("crash", "power"))
    with pytest.raises(SimulationFailure, match="bad-since"):
        simulate(0, faults=("crash", "power"), durability="decisions")
