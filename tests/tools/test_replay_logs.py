"""Every log in replay-logs/ replays to its recorded end state, and ``matchlock replay`` works
on them as the README shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from matchlock.cli import main
from matchlock.core.room import RoomState
from matchlock.store.eventlog import replay_file

LOGS = sorted((Path(__file__).resolve().parents[2] / "replay-logs").glob("*.log"))


def expected(log: Path) -> RoomState:
    return RoomState.model_validate_json(log.with_suffix(".expected.json").read_text())


def test_there_are_recorded_logs_of_each_kind() -> None:
    names = {log.stem for log in LOGS}
    assert {"happy-room", "mirror-fallback", "corrupt-source", "disconnect-rejoin"} <= names
    assert {"impostor-refused", "cannot-complete", "happy-room.alice"} <= names


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.stem)
def test_log_replays_to_its_recorded_end_state(log: Path) -> None:
    assert replay_file(log).state == expected(log)


def test_replay_json_prints_the_end_state(capsys: pytest.CaptureFixture[str]) -> None:
    log = LOGS[0]
    assert main(["replay", str(log), "--json"]) == 0
    assert RoomState.model_validate_json(capsys.readouterr().out) == expected(log)


def test_replay_timeline_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    log = next(p for p in LOGS if p.stem == "disconnect-rejoin")
    assert main(["replay", str(log)]) == 0
    out = capsys.readouterr().out
    assert "bob disconnected: connection closed" in out
    assert "room closed" in out and "chars/big" in out


def test_replay_until_shows_an_earlier_state(capsys: pytest.CaptureFixture[str]) -> None:
    log = next(p for p in LOGS if p.stem == "happy-room")
    assert main(["replay", str(log), "--json", "--until", "4"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["events"] == 4 and state["status"] == "open"


def test_verify_names_the_first_damaged_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = next(p for p in LOGS if p.stem == "happy-room").read_bytes().splitlines(keepends=True)
    damaged = tmp_path / "damaged.log"
    damaged.write_bytes(b"".join(lines[:5] + lines[6:]))  # line 6 removed
    assert main(["replay", str(damaged), "--verify"]) == 1
    assert f"{damaged}:6:" in capsys.readouterr().err


def test_verify_reports_a_torn_tail_but_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = next(p for p in LOGS if p.stem == "happy-room").read_bytes()
    torn = tmp_path / "torn.log"
    torn.write_bytes(data[:-30])
    assert main(["replay", str(torn), "--verify"]) == 0
    captured = capsys.readouterr()
    assert "torn by a crash" in captured.err and "ok: 29 events" in captured.out


def test_replay_runs_as_a_command() -> None:
    log = next(p for p in LOGS if p.stem == "happy-room")
    done = subprocess.run(
        [sys.executable, "-m", "matchlock", "replay", str(log), "--verify"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    last_hash = replay_file(log).last_hash  # on the line it belongs to: output to a pipe is not
    assert f"chain intact, last hash {last_hash}\n" in done.stdout  # wrapped at 80 columns
