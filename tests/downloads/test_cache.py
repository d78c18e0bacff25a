"""The content-addressed cache: hits make no request, damage is re-installed, installs are
atomic and exclusive."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from matchlock.core.events import Event, PieceFinished, PieceStarted
from matchlock.downloads import FolderRejected, download
from matchlock.downloads.cache import Cache
from tests.downloads.conftest import (
    FAST_POLICY,
    ContentServer,
    config,
    piece,
    sha256,
    zip_bytes,
)


async def run(
    pieces: dict[str, Any], cache: Path
) -> tuple[dict[str, Path], list[Event], list[FolderRejected]]:
    events: list[Event] = []
    notices: list[FolderRejected] = []
    folders = await download(
        config(pieces),
        cache,
        on_event=events.append,
        on_notice=notices.append,
        policy=FAST_POLICY,
    )
    return folders, events, notices


def piece_events(events: list[Event]) -> list[tuple[str, str]]:
    return [
        (e.type, getattr(e, "source", ""))
        for e in events
        if e.type not in ("download_opened", "download_closed")
    ]


async def test_a_cache_hit_makes_no_request(server: ContentServer, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    server.add("a", data)
    pieces = {"chars": {"pieces": {"kfm": piece(data, server.url("ok", "a"))}}}
    first, _, _ = await run(pieces, tmp_path)
    server.requests.clear()
    again, events, notices = await run(pieces, tmp_path)
    assert server.requests == []
    assert again == first
    assert piece_events(events) == [("piece_started", ""), ("piece_finished", "cache")]
    assert notices == []


async def test_the_cache_is_shared_by_content_not_by_config(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(50_000)
    server.add("a", data)
    await run({"chars": {"pieces": {"kfm": piece(data, server.url("ok", "a"))}}}, tmp_path)
    other = {"stages": {"pieces": {"arena": piece(data, server.url("norange", "a"))}}}
    folders, events, _ = await run(other, tmp_path)
    assert [r.route for r in server.requests] == ["ok"]
    assert folders["stages/arena"].name == f"{sha256(data)}-file-a"
    assert ("piece_finished", "cache") in piece_events(events)


async def test_a_damaged_cached_file_is_reported_and_installed_again(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(50_000)
    server.add("a", data)
    pieces = {"chars": {"pieces": {"kfm": piece(data, server.url("ok", "a"))}}}
    folders, _, _ = await run(pieces, tmp_path)
    installed = folders["chars/kfm"] / "a"
    installed.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # never the same byte again
    again, _, notices = await run(pieces, tmp_path)
    (notice,) = notices
    assert (notice.where, notice.piece, notice.folder) == ("cache", "chars/kfm", again["chars/kfm"])
    assert f"expected {sha256(data)}" in notice.reason
    assert installed.read_bytes() == data
    assert len(server.requests) == 2


async def test_a_cached_archive_without_folder_sha256_is_checked_against_its_install(
    server: ContentServer, tmp_path: Path
) -> None:
    data = zip_bytes({"kfm.def": b"name = kfm\n", "kfm.sff": os.urandom(1000)})
    server.add("k", data)
    pieces = {"chars": {"pieces": {"kfm": piece(data, server.url("ok", "k"), unpack="zip")}}}
    folders, _, _ = await run(pieces, tmp_path)
    (folders["chars/kfm"] / "extra.txt").write_text("added by someone")
    again, _, notices = await run(pieces, tmp_path)
    (notice,) = notices
    assert "folder digest" in notice.reason
    assert sorted(p.name for p in again["chars/kfm"].iterdir()) == ["kfm.def", "kfm.sff"]


async def test_concurrent_jobs_install_shared_content_once(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(600_000)  # ten slow steps: the second job must wait for the first
    server.add("a", data)
    pieces = {"chars": {"pieces": {"kfm": piece(data, server.url("slow", "a"))}}}
    (first, _, _), (second, events, _) = await asyncio.gather(
        run(pieces, tmp_path), run(pieces, tmp_path)
    )
    assert first == second
    assert len(server.requests) == 1
    assert piece_events(events)[-1][1] in ("cache", server.url("slow", "a"))


async def test_leftovers_of_a_dead_installer_are_cleared(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(10_000)
    server.add("a", data)
    cache = Cache(tmp_path)
    cache.prepare()
    stale = cache.tmp / f"{sha256(data)}-file-a.staging.dead01"
    (stale / "half").mkdir(parents=True)
    await run({"chars": {"pieces": {"kfm": piece(data, server.url("ok", "a"))}}}, tmp_path)
    assert list(cache.tmp.iterdir()) == []


async def test_the_lock_excludes_and_is_removed_after_use(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.prepare()
    order: list[str] = []

    async def hold(name: str) -> None:
        async with cache.locked("ab" * 32, executor):
            order.append(f"{name} in")
            await asyncio.sleep(0.05)
            order.append(f"{name} out")

    with ThreadPoolExecutor(2) as executor:
        await asyncio.gather(hold("one"), hold("two"), hold("three"))
    holders = [order[i].split()[0] for i in range(0, 6, 2)]
    assert order == [f"{name} {step}" for name in holders for step in ("in", "out")]
    assert list(cache.tmp.iterdir()) == [], "an empty part is only a lock: removed on release"


async def test_started_and_finished_bracket_every_piece(
    server: ContentServer, tmp_path: Path
) -> None:
    blobs = {f"p{i}": os.urandom(1000 + i) for i in range(20)}
    for name, data in blobs.items():
        server.add(name, data)
    pieces = {"chars": {"pieces": {n: piece(d, server.url("ok", n)) for n, d in blobs.items()}}}
    _, events, _ = await run(pieces, tmp_path)
    started = {e.piece: i for i, e in enumerate(events) if isinstance(e, PieceStarted)}
    finished = {e.piece: i for i, e in enumerate(events) if isinstance(e, PieceFinished)}
    assert started.keys() == finished.keys() == {f"chars/{n}" for n in blobs}
    assert all(started[key] < finished[key] for key in started)


async def test_many_concurrent_jobs_fetch_each_content_once(
    server: ContentServer, tmp_path: Path
) -> None:
    blobs = {f"b{i}": os.urandom(70_000) for i in range(12)}
    for name, data in blobs.items():
        server.add(name, data)
    pieces = {"c": {"pieces": {n: piece(d, server.url("ok", n)) for n, d in blobs.items()}}}
    results = await asyncio.gather(*(run(pieces, tmp_path) for _ in range(6)))
    assert all(folders == results[0][0] for folders, _, _ in results)
    assert sorted(r.name for r in server.requests) == sorted(blobs)
    for key, folder in results[0][0].items():
        assert (folder / key.split("/")[1]).read_bytes() == blobs[key.split("/")[1]]
    assert list((tmp_path / ".matchlock" / "tmp").iterdir()) == []


async def test_a_cache_hit_does_not_wait_for_the_contents_lock(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(20_000)
    server.add("a", data)
    pieces = {"chars": {"pieces": {"kfm": piece(data, server.url("ok", "a"))}}}
    first, _, _ = await run(pieces, tmp_path)
    with ThreadPoolExecutor(1) as executor:
        async with Cache(tmp_path).locked(sha256(data), executor):  # as another installer would
            again, _, _ = await asyncio.wait_for(run(pieces, tmp_path), timeout=5)
    assert again == first
