"""Verified archives a room member keeps after unpacking them, so it can serve them to the room.

A download job that may serve the room (it has the room's resolver) keeps each archive it
verified and unpacked as ``.matchlock/archives/<sha256>`` in the cache: a hard link of the
part, so no copy and no second write (:func:`keep_archive`). Once the part's own name is gone
(the content's lock released), ``<sha256>.verified`` records the verified file (the kept
archive, or the one file of a piece that does not unpack) as it is then
(:func:`record_verified`): its path, inode, size, modification and change times. A server
checks that record before serving: a file still exactly as recorded is the verified one (any
write, truncation, replacement, rename over it or chmod changes its change time or inode, which
no user can set back), anything else is hashed again in full (:func:`verified_unchanged`).

This module only names, links and records files in the cache; it never reads content.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from matchlock.downloads.cache import STATE_FOLDER, Cache, link_or_copy

__all__ = [
    "forget_kept",
    "keep_archive",
    "kept_archive",
    "kept_digests",
    "record_verified",
    "verified_unchanged",
]


def kept_archive(cache: Cache, sha256: str) -> Path:
    """Where the verified archive with this sha256 is kept in ``cache``."""
    return cache.root / STATE_FOLDER / "archives" / sha256


def keep_archive(part: Path, kept: Path) -> None:
    """Keep the verified ``part`` as ``kept`` (blocking; call under the content's lock, then
    :func:`record_verified` once it is released)."""
    kept.parent.mkdir(exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(kept)
    link_or_copy(part, kept)


def kept_digests(cache: Cache) -> list[str]:
    """The sha256 of every archive kept in ``cache``, sorted."""
    try:
        names = os.listdir(kept_archive(cache, "x").parent)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if len(name) == 64 and "." not in name)


def forget_kept(cache: Cache, sha256: str) -> int:
    """Remove the kept archive ``sha256`` and its record (blocking; call under the content's
    lock); the bytes this frees (none while another name still links the file)."""
    kept = kept_archive(cache, sha256)
    freed = 0
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(kept)
        os.unlink(kept)
        freed = info.st_size if info.st_nlink == 1 else 0
    _record_path(cache, sha256).unlink(missing_ok=True)
    return freed


def record_verified(cache: Cache, sha256: str, path: Path) -> None:
    """Record the file at ``path`` (a kept archive, or the one file of a piece that does not
    unpack) as the verified content ``sha256``, as it is now (blocking). Call only once nothing
    links or unlinks it any more: a change of its link count changes its change time."""
    record = _record_path(cache, sha256)
    if not os.path.lexists(path) or verified_unchanged(cache, sha256, path):
        return
    record.parent.mkdir(exist_ok=True)
    temporary = record.with_name(f"{record.name}.tmp")
    temporary.write_text(_stamp(path), "utf-8")
    os.replace(temporary, record)


def verified_unchanged(cache: Cache, sha256: str, path: Path) -> bool:
    """Whether ``path`` is still exactly the file recorded as the verified ``sha256``."""
    try:
        return _record_path(cache, sha256).read_text("utf-8") == _stamp(path)
    except (OSError, UnicodeDecodeError):
        return False


def _record_path(cache: Cache, sha256: str) -> Path:
    return kept_archive(cache, sha256).with_name(f"{sha256}.verified")


def _stamp(path: Path) -> str:
    info = os.lstat(path)
    stamp = f"{info.st_dev} {info.st_ino} {info.st_size} {info.st_mtime_ns} {info.st_ctime_ns}"
    return f"{path}\n{stamp}\n"
