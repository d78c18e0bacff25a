"""The staging every resolver writes into: bounded by the pinned size whatever the resolver
does, and progress that never goes backwards, even when the source starts again from zero."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from matchlock.downloads.cache import Cache
from matchlock.downloads.resolvers import Staging, TooLarge, Wanted
from matchlock.downloads.sink import PartFile

DATA = os.urandom(600_000)
WANTED = Wanted("chars/kfm", hashlib.sha256(DATA).hexdigest(), len(DATA))


async def test_a_batch_past_the_pinned_size_is_refused_before_it_is_written(
    tmp_path: Path,
) -> None:
    cache = Cache(tmp_path)
    cache.prepare()
    with ThreadPoolExecutor(2) as executor:
        async with cache.locked(WANTED.sha256, executor) as held:
            part = PartFile(held)
            staging = Staging(part, WANTED, lambda done: None, "test:")
            await staging.begin(resume=False)
            await staging.write([DATA[:500_000]])
            with pytest.raises(TooLarge, match=f"more than the piece's {len(DATA)} bytes"):
                await staging.write([DATA[500_000:], b"x"])
            assert staging.size == 500_000
            await part.drain()
            assert held.path.read_bytes() == DATA[:500_000]


async def test_progress_never_goes_backwards_when_the_source_starts_again(
    tmp_path: Path,
) -> None:
    cache = Cache(tmp_path)
    cache.prepare()
    reported: list[int] = []
    with ThreadPoolExecutor(2) as executor:
        async with cache.locked(WANTED.sha256, executor) as held:
            staging = Staging(PartFile(held), WANTED, reported.append, "test:")
            await staging.begin(resume=False)
            await staging.write([DATA[:300_000]])
            await staging.restart()  # a server that ignored the resume: from byte 0 again
            for start in range(0, len(DATA), 200_000):
                await staging.write([DATA[start : start + 200_000]])
    assert reported == [0, 300_000, 400_000, 600_000]
