"""Installing many small pieces cheaply: where each piece's folder work runs, and which holder
clears a dead installer's leftovers (so that most pieces never list ``tmp/``)."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from matchlock.downloads import download
from matchlock.downloads.cache import Cache
from matchlock.downloads.piece import PieceInstaller
from matchlock.downloads.sink import INLINE_BYTES
from tests.downloads.conftest import FAST_POLICY, ContentServer, config, piece, sha256, zip_bytes


def leftovers_of(cache: Cache, digest: str) -> list[Path]:
    """A staging folder and a moved-aside folder of ``digest``, as a killed installer and a
    killed ``gc`` leave them."""
    made = [
        cache.tmp / f"{digest}-file-a.staging.dead01",
        cache.tmp / f"{digest}-file-a.old.dead02",
    ]
    for folder in made:
        (folder / "half").mkdir(parents=True)
    return made


@pytest.mark.parametrize("here", [False, True])
async def test_a_killed_holders_leftovers_are_cleared_by_the_next_holder(
    tmp_path: Path, here: bool
) -> None:
    cache = Cache(tmp_path)
    cache.prepare()
    digest = "ab" * 32
    cache.part_path(digest).write_bytes(b"the first bytes")  # a killed holder leaves its part
    made = leftovers_of(cache, digest)
    with ThreadPoolExecutor(1) as executor:
        async with cache.locked(digest, executor, here=here):
            assert not any(folder.exists() for folder in made)
    assert cache.part_path(digest).read_bytes() == b"the first bytes", "kept to be resumed"


async def test_a_holder_that_creates_the_part_leaves_tmp_alone_and_a_job_sweeps_it(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(10_000)
    server.add("a", data)
    cache = Cache(tmp_path)
    cache.prepare()
    made = leftovers_of(cache, sha256(data))  # their part was removed by hand
    with ThreadPoolExecutor(1) as executor:
        async with cache.locked(sha256(data), executor):
            assert all(folder.exists() for folder in made), "no dead holder had this part"
    await download(config({"c": {"pieces": {"a": piece(data, server.url("ok", "a"))}}}), tmp_path)
    assert list(cache.tmp.iterdir()) == []


async def test_the_sweep_leaves_the_leftovers_of_a_content_held_now(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.prepare()
    held, free = "ab" * 32, "cd" * 32
    with ThreadPoolExecutor(1) as executor:
        async with cache.locked(held, executor):
            kept, cleared = leftovers_of(cache, held), leftovers_of(cache, free)
            cache.sweep_leftovers()
            assert all(folder.exists() for folder in kept), "another holder has this content"
            assert not any(folder.exists() for folder in cleared)
    cache.sweep_leftovers()
    assert list(cache.tmp.iterdir()) == []


async def test_a_small_piece_is_installed_on_the_event_loop_the_others_on_a_worker(
    server: ContentServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = {
        "small": os.urandom(INLINE_BYTES),
        "large": os.urandom(INLINE_BYTES + 1),
    }
    archive = zip_bytes({"kfm.def": b"name = kfm\n"})
    for name, data in [*blobs.items(), ("zip", archive)]:
        server.add(name, data)
    where: dict[str, str] = {}
    install = PieceInstaller._install

    def spy(self: PieceInstaller, key: str, *args: Any) -> None:
        where[key] = threading.current_thread().name
        install(self, key, *args)

    monkeypatch.setattr(PieceInstaller, "_install", spy)
    pieces = {n: piece(d, server.url("ok", n)) for n, d in blobs.items()}
    pieces["zip"] = piece(archive, server.url("ok", "zip"), unpack="zip")
    folders = await download(config({"c": {"pieces": pieces}}), tmp_path, policy=FAST_POLICY)
    assert where["c/small"] == threading.main_thread().name
    assert where["c/large"].startswith("matchlock-download")
    assert where["c/zip"].startswith("matchlock-download"), "unpacking never runs on the loop"
    assert (folders["c/small"] / "small").read_bytes() == blobs["small"]
    assert list((tmp_path / ".matchlock" / "tmp").iterdir()) == []


async def test_a_small_piece_another_job_installs_meanwhile_is_found_under_the_lock(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(100_000)  # two slow steps: the second job waits for the first's lock
    server.add("a", data)
    pieces = {"c": {"pieces": {"a": piece(data, server.url("slow", "a"))}}}
    events: list[Any] = []
    first = asyncio.create_task(download(config(pieces), tmp_path, policy=FAST_POLICY))
    while not list((tmp_path / ".matchlock" / "tmp").glob("*.part")):
        await asyncio.sleep(0.005)  # the first job holds the content now
    second = await download(config(pieces), tmp_path, on_event=events.append)
    assert second == await first
    assert len(server.requests) == 1
    assert [getattr(e, "source", None) for e in events if e.type == "piece_finished"] == ["cache"]


@pytest.mark.parametrize("left", [b"", b"3f2a", None])
async def test_a_recorded_digest_a_power_cut_tore_means_installing_again(
    server: ContentServer, tmp_path: Path, left: bytes | None
) -> None:
    # The digest is recorded unsynced (cache.py): whatever a power cut leaves of it, empty,
    # torn or nothing, the folder is never trusted on it, but installed again.
    data = zip_bytes({"kfm.def": b"name = kfm\n"})
    server.add("k", data)
    pieces = {"chars": {"pieces": {"kfm": piece(data, server.url("ok", "k"), unpack="zip")}}}
    folders = await download(config(pieces), tmp_path)
    recorded = tmp_path / ".matchlock" / "digests" / folders["chars/kfm"].name
    whole = recorded.read_bytes()
    if left is None:
        recorded.unlink()
    else:
        recorded.write_bytes(left)
    events: list[Any] = []
    again = await download(config(pieces), tmp_path, on_event=events.append)
    assert again == folders and recorded.read_bytes() == whole
    assert [e.type for e in events if e.type in ("folder_rejected", "piece_finished")] == [
        "folder_rejected",
        "piece_finished",
    ]
    assert len(server.requests) == 2
