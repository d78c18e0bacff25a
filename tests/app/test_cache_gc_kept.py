"""``matchlock cache gc`` and the archives a room member keeps to serve the room
(``.matchlock/archives/<sha256>``, :mod:`matchlock.downloads.kept`): removed with their folder,
removed when their folder is gone and they are stale, kept while their folder is in use."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from matchlock.app.configfile import load_matchlock_config
from matchlock.downloads.cache import Cache
from matchlock.downloads.kept import keep_archive, kept_archive, kept_digests, record_verified
from matchlock.downloads.manage import list_cache, record_cache_use
from tests.app.test_cache_cli import DAY, cache, installed, run_json

__all__ = ["cache"]  # the fixture, shared with the cache's other tests


def keep(root: Path, sha256: str, data: bytes, *, age: float = 0.0) -> Path:
    """Keep ``data`` as the verified archive ``sha256`` of the cache at ``root``, as a member
    that unpacked it does (a hard link of its part, then the record)."""
    part = root / f"{sha256}.part"
    part.write_bytes(data)
    kept = kept_archive(Cache(root), sha256)
    keep_archive(part, kept)
    part.unlink()
    record_verified(Cache(root), sha256, kept)
    if age:
        os.utime(kept, (time.time() - age, time.time() - age))
    return kept


def test_gc_removes_the_kept_archives_of_removed_folders_and_stale_orphans(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    match, folders = installed(cache, tmp_path)
    record_cache_use(
        cache, folders, "download", load_matchlock_config(match.config),
        clock=lambda: time.time() - 40 * DAY,
    )  # fmt: skip
    entries = list_cache(cache)
    kept = {e.sha256: keep(cache, e.sha256, b"an archive of " + e.sha256.encode()) for e in entries}
    stale = keep(cache, "d" * 64, b"a piece removed long ago", age=40 * DAY)
    fresh = keep(cache, "e" * 64, b"a piece kept today")
    code, lines = run_json(capsys, "cache", "gc", "--keep-days", "30", "--json")
    assert code == 0
    removed = {line["path"] for line in lines if line["type"] == "removed_archive"}
    assert removed == {str(path) for path in [*kept.values(), stale]}
    assert kept_digests(Cache(cache)) == ["e" * 64] and fresh.is_file()
    records = sorted(p.name for p in fresh.parent.iterdir())
    assert records == ["e" * 64, f"{'e' * 64}.verified"]  # no record left without its archive


def test_gc_keeps_the_archive_of_a_folder_in_use(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    installed(cache, tmp_path)  # installed now: in use
    entry = list_cache(cache)[0]
    kept = keep(cache, entry.sha256, b"its archive", age=40 * DAY)
    capsys.readouterr()
    code, lines = run_json(capsys, "cache", "gc", "--keep-days", "30", "--json")
    assert code == 0 and lines == [] and kept.is_file()
