"""The command line's memory allocator settings: large buffers are reused, not mapped afresh.

A room host, a member serving a piece and a download all move data in buffers of 256 KiB to
4 MiB (a socket read, a 512 KiB data frame, a range segment), each allocated, filled once and
freed. glibc's allocator maps a buffer that large with ``mmap``, or trims the heap under it once
it is freed, so the next one starts on fresh pages and the kernel faults every 4 KiB page in
again: measured here, serialising a masked 512 KiB websocket frame cost 0.94 ms of CPU per MB
that way and 0.09 ms with the thresholds below (``benchmarks/bench_peers.py`` has the whole
transfer's figures). :func:`tune_allocator` fixes both thresholds for the process, so that
such buffers come from the heap and are reused; the heap keeps at most
:data:`TRIM_THRESHOLD` bytes free at its top.

Only the shell does this, for its own process, on glibc (elsewhere it does nothing);
``MATCHLOCK_MALLOC=0`` in the environment leaves the allocator as it is. The library never
changes the allocator of a program that embeds it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_allocator"]

MMAP_THRESHOLD = 8 << 20
"""Allocations smaller than this come from the heap (glibc's default starts at 128 KiB)."""

TRIM_THRESHOLD = 32 << 20
"""Free bytes at the top of the heap kept for reuse before any is given back to the system."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docs); whether they were set."""
    if os.environ.get("MATCHLOCK_MALLOC", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
