"""The command line tunes its process's allocator (matchlock.cli.allocator): a process that has
run a command's loop reuses freed large buffers instead of faulting fresh pages in for each,
and ``MATCHLOCK_MALLOC=0`` leaves glibc's defaults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from matchlock.cli.allocator import tune_allocator

FAULTS = """
import asyncio, os, resource
from websockets.frames import Frame, Opcode
from matchlock.cli.loop import run

async def nothing() -> None:
    await asyncio.sleep(0)

run(nothing())  # what every command that runs a loop goes through
data = os.urandom(512 * 1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):  # a masked 512 KiB data frame, as websockets serialises it
    Frame(Opcode.BINARY, data).serialize(mask=True)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(**env: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


@pytest.mark.skipif(not tune_allocator(), reason="not glibc: the allocator is left as it is")
def test_a_command_s_process_reuses_large_buffers() -> None:
    tuned, untouched = page_faults(), page_faults(MATCHLOCK_MALLOC="0")
    assert untouched > 10_000  # glibc's defaults: fresh pages for every frame
    assert tuned * 10 < untouched


def test_matchlock_malloc_0_turns_the_tuning_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATCHLOCK_MALLOC", "0")
    assert tune_allocator() is False
