"""Every command raises its soft limit on open files to the hard limit: a real ``matchlock
serve`` started with a soft limit of 256 runs with its hard limit (read from ``/proc``)."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
from pathlib import Path

import pytest

from matchlock.cli.open_files import raise_open_files_limit
from tests.app.test_rooms_e2e import REPO


def soft_limit_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files limit")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc (Linux)")
async def test_serve_runs_with_the_hard_limit_on_open_files(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit is too low to see it raised")

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "matchlock", "serve", "--listen", "127.0.0.1:0",
        "--log-dir", str(tmp_path), cwd=REPO, env=env, preexec_fn=low,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(10):
            assert (await process.stdout.readline()).startswith(b"ws://")
        expected = hard if hard != resource.RLIM_INFINITY else 1 << 16
        assert soft_limit_of(process.pid) == expected
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await process.communicate()
    assert process.returncode == 0


def test_raising_it_again_changes_nothing() -> None:
    first = raise_open_files_limit()
    assert first is not None and raise_open_files_limit() == first
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == first
