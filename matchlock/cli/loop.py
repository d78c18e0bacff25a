"""The command line's event loop: uvloop's when it is installed, asyncio's own otherwise.

``pip install 'matchlock[speed]'`` installs uvloop; every command that runs a loop (``serve``,
``join``, ``download``, ``demo``, ``lan``) then runs on it, with nothing else to set.
``MATCHLOCK_UVLOOP=0`` in the environment keeps asyncio's loop even when uvloop is installed
(to compare the two, or to rule uvloop out when chasing a problem). What uvloop saves is the
loop's own work per event (sockets woken, callbacks run), which is most of a busy host's time
outside the protocol; the figures are in the README, from ``benchmarks/bench_host.py`` and
``benchmarks/bench_download.py`` run with and without it.

Only the shell chooses the loop: the library never imports uvloop, and a program embedding
matchlock runs it on whatever loop it has.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from matchlock.cli.allocator import tune_allocator
from matchlock.cli.open_files import raise_open_files_limit

__all__ = ["loop_factory", "run"]

_T = TypeVar("_T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is installed and not turned off with
    ``MATCHLOCK_UVLOOP=0``; None (asyncio's default loop) otherwise."""
    if os.environ.get("MATCHLOCK_UVLOOP", "1") == "0":
        return None
    try:
        import uvloop  # optional: the speed extra
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` to its end on a new loop (see the module docs), as :func:`asyncio.run`,
    with the allocator tuned for large buffers (:func:`~matchlock.cli.allocator.tune_allocator`)
    and the limit on open files raised (:mod:`matchlock.cli.open_files`)."""
    tune_allocator()
    raise_open_files_limit()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
