"""Large downloads written around the page cache or into it: every byte in place, whatever the
sizes and whichever way each batch goes; and the pace that chooses the way."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from matchlock.downloads.direct import BLOCK, DirectWriter, Way, WritePace
from tests.downloads.conftest import ContentServer
from tests.downloads.test_fetch import fetch

MIB = 1024 * 1024


@pytest.fixture
def part(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A part file open in append mode, as the content's lock holds it."""
    path = tmp_path / "x.part"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        yield path, fd
    finally:
        os.close(fd)


def batches(data: bytes, seed: int) -> Iterator[list[bytes]]:
    """``data`` cut into batches of odd-sized chunks."""
    rng = random.Random(seed)
    offset = 0
    while offset < len(data):
        batch = []
        for _ in range(rng.randint(1, 5)):
            size = rng.randint(1, 400_000)
            batch.append(data[offset : offset + size])
            offset += size
        yield [chunk for chunk in batch if chunk]


class Ways(WritePace):
    """A pace that sends the batches the ways given, or each a random way (``seed``)."""

    def __init__(self, ways: list[Way] | None = None, seed: int = 0) -> None:
        super().__init__()
        self.ways = ways
        self._rng = random.Random(seed)

    def choose(self) -> Way:
        if self.ways is not None:
            return self.ways.pop(0) if self.ways else "direct"
        return self._rng.choice(["direct", "cache"])


@pytest.mark.parametrize("already", [0, 1, BLOCK - 1, BLOCK, 700_000])
def test_odd_batches_land_in_order_after_what_the_file_held(
    part: tuple[Path, int], already: int
) -> None:
    path, fd = part
    data = os.urandom(5 * MIB + 12_345)
    os.write(fd, data[:already])
    writer = DirectWriter(path, fd, capacity=MIB, pace=Ways([]))  # O_DIRECT only
    for batch in batches(data[already:], seed=already):
        writer.write(batch)
    assert os.fstat(fd).st_size <= len(data)
    assert os.fstat(fd).st_size % BLOCK == 0 or os.fstat(fd).st_size == already
    writer.flush()
    assert path.read_bytes() == data


@pytest.mark.parametrize("seed", range(6))
def test_batches_sent_either_way_land_in_order(part: tuple[Path, int], seed: int) -> None:
    path, fd = part
    data = os.urandom(6 * MIB + seed * 1_001)
    already = seed * 777
    os.write(fd, data[:already])
    writer = DirectWriter(path, fd, capacity=MIB, pace=Ways(seed=seed))
    for batch in batches(data[already:], seed=seed):
        writer.write(batch)
    writer.flush()
    assert path.read_bytes() == data


def test_the_pace_sends_batches_the_faster_way_and_looks_at_the_other_now_and_then() -> None:
    pace = WritePace()
    seconds_per_mib = {"direct": 0.010, "cache": 0.002}
    ways = []
    for _ in range(40):
        way = pace.choose()
        ways.append(way)
        pace.took(way, MIB, seconds_per_mib[way])
    assert ways[:2] == ["direct", "cache"]  # each way timed once, O_DIRECT first
    assert ways.count("direct") == 1 + 40 // WritePace.EXPLORE
    seconds_per_mib["direct"] = 0.001  # the disk got faster: noticed at the next look
    for _ in range(WritePace.EXPLORE + 4):
        way = pace.choose()
        ways.append(way)
        pace.took(way, MIB, seconds_per_mib[way])
    assert ways[-3:] == ["direct"] * 3


def test_small_writes_do_not_set_the_pace() -> None:
    pace = WritePace()
    pace.took("direct", 100, 1.0)  # a tail: the cost of the call, not of the bytes
    assert pace.choose() == "direct"


def test_bytes_written_through_the_descriptor_between_batches_keep_their_place(
    part: tuple[Path, int],
) -> None:
    path, fd = part
    data = os.urandom(3 * MIB + 99)
    writer = DirectWriter(path, fd, capacity=MIB)
    writer.write([data[: 2 * MIB + 5]])
    writer.flush()  # as before a small batch that goes through the descriptor
    os.write(fd, data[2 * MIB + 5 : 2 * MIB + 70])
    writer.write([data[2 * MIB + 70 :]])
    writer.flush()
    assert path.read_bytes() == data


def test_discarded_bytes_never_reach_the_file(part: tuple[Path, int]) -> None:
    path, fd = part
    writer = DirectWriter(path, fd, capacity=MIB)
    writer.write([os.urandom(MIB + 100)])
    writer.discard()
    os.ftruncate(fd, 0)
    writer.write([b"fresh"])
    writer.flush()
    assert path.read_bytes() == b"fresh"


def test_a_part_that_cannot_be_opened_again_is_written_through_its_descriptor(
    part: tuple[Path, int],
) -> None:
    path, fd = part
    data = os.urandom(2 * MIB + 3)
    writer = DirectWriter(path, fd, capacity=MIB)
    writer.write([data[: MIB + 7]])  # 7 bytes wait for a whole block
    path.unlink()  # O_DIRECT needs the path: every later byte goes through the descriptor
    writer.write([data[MIB + 7 : MIB + 10]])
    writer.write([data[MIB + 10 :]])
    writer.flush()
    assert os.pread(fd, len(data) + 1, 0) == data


async def test_a_large_odd_sized_piece_resumed_at_an_odd_offset_verifies(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(6 * MIB + 4321)
    server.add("a", data)
    await fetch(tmp_path, data, server.url("cut", "a"))  # the cut falls mid-block
    first, second = server.requests
    assert first.range is None and second.range is not None
