"""``matchlock demo`` end to end, as a newcomer runs it, and its other shapes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from matchlock.core.errors import UsageError
from matchlock.store.eventlog import read_events, replay_file
from matchlock.tools.demo import run_demo


def test_demo_runs_a_whole_room_and_says_where_everything_is(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "matchlock", "demo", "--keep", str(folder)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for user in ("alice", "bob", "carol"):
        assert f"{user} got:" in out
    host_log = folder / "host-logs" / "demo-room.log"
    assert f"matchlock replay {host_log}" in out and "--html" in out
    state = replay_file(host_log).state
    assert state.status == "closed" and set(state.members) == {"alice", "bob", "carol"}
    for user in state.members:
        assert replay_file(folder / user / "room.log").state == state
    kfm = state.members["alice"].pieces["chars/kfm"]
    assert kfm.source == "engine"  # alice's game already had it
    rejected = [e for e in read_events(host_log).events if e.type == "folder_rejected"]
    assert [(e.user_id, e.piece, e.where) for e in rejected] == [("bob", "chars/kfm", "engine")]
    assert state.members["bob"].pieces["chars/kfm"].source.startswith("http://127.0.0.1:")
    failures = [
        f.url for m in state.members.values() for p in m.pieces.values() for f in p.failures
    ]
    assert any("/corrupt/" in url for url in failures)  # the bad mirror was tried, and passed over
    assert any(
        line.strip().startswith("chars/ryu -> ") and "bob/cache" in line
        for line in out.splitlines()
    )
    assert (folder / "room.json").is_file() and (folder / "keys" / "alice.key.pub").is_file()


async def test_demo_over_tcp_with_other_sizes(tmp_path: Path) -> None:
    result = await run_demo(tmp_path / "d", users=2, pieces=3, transport="tcp")
    assert result.url.startswith("tcp://127.0.0.1:")
    assert set(result.folders) == {"alice", "bob"}
    assert all(len(folders) == 3 for folders in result.folders.values())
    for folders in result.folders.values():
        for key, folder in folders.items():
            assert (folder / f"{key.split('/')[1]}.def").is_file()
    assert read_events(result.host_log).events[-1].type == "room_closed"


async def test_demo_refuses_a_folder_in_use_and_odd_sizes(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        await run_demo(tmp_path)
    with pytest.raises(UsageError):
        await run_demo(tmp_path / "new", users=1)
