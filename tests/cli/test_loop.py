"""The command line's loop: uvloop's when installed, asyncio's with ``MATCHLOCK_UVLOOP=0``."""

from __future__ import annotations

import asyncio

import pytest

from matchlock.cli.loop import run

uvloop = pytest.importorskip("uvloop")


async def loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_uvloop_runs_the_command_line_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MATCHLOCK_UVLOOP", raising=False)
    assert issubclass(run(loop_type()), uvloop.Loop)


def test_matchlock_uvloop_0_keeps_the_asyncio_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATCHLOCK_UVLOOP", "0")
    kind = run(loop_type())
    assert not issubclass(kind, uvloop.Loop)
    assert issubclass(kind, asyncio.BaseEventLoop)
