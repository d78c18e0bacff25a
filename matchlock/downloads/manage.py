"""Managing the shared cache: where it is by default, what it holds, whether it is whole, and
removing what no recent room used (``matchlock cache list | verify | gc``).

Every download and room installs into one cache (:mod:`matchlock.downloads.cache` describes its
layout) shared by every config and room: by default the platform's user cache folder
(:func:`default_cache_dir`), or ``MATCHLOCK_CACHE``. Beside each installed folder the cache
keeps a small use record, ``.matchlock/uses/<folder>.json``: which pieces it served (with the
folder digest their config expects, when it gives one) and, per user of it (a room id, or
``download``), when it was last used. :func:`record_cache_use` writes it once a room or a download
returns its folders; a folder without a record counts as used when it was installed (its
modification time).

Deleting is safe against a download in progress in another process: :func:`collect_garbage`
takes the content's lock (the same ``flock`` installing takes) before it moves a folder aside
and removes it, and skips a folder whose content is locked. :func:`verify_cache` reads a folder
under the same lock. This module is part of the shell; it never downloads anything.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from matchlock.core.config import MatchLockConfig
from matchlock.core.errors import FolderDigestError
from matchlock.downloads.cache import STATE_FOLDER, Cache
from matchlock.downloads.folder_digest import folder_digest
from matchlock.downloads.kept import forget_kept, kept_archive, kept_digests

__all__ = [
    "CACHE_ENVIRONMENT",
    "CachedFolder",
    "Collected",
    "Verdict",
    "cache_root",
    "collect_garbage",
    "default_cache_dir",
    "list_cache",
    "record_cache_use",
    "verify_cache",
]

CACHE_ENVIRONMENT = "MATCHLOCK_CACHE"
"""The environment variable that names the cache folder, overriding the platform default."""

_FOLDER_NAME = re.compile(r"^([0-9a-f]{64})-(zip|tar|folder|file-(.+))$")
_DAY = 86400.0


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The cache every config and room shares: ``$MATCHLOCK_CACHE`` when set and not empty,
    otherwise the platform's user cache folder for matchlock (``~/.cache/matchlock`` on Linux,
    ``~/Library/Caches/matchlock`` on macOS, ``%LOCALAPPDATA%\\matchlock\\Cache`` on Windows)."""
    import platformdirs  # only here: most commands never need it

    value = (os.environ if environ is None else environ).get(CACHE_ENVIRONMENT, "")
    return Path(value) if value else Path(platformdirs.user_cache_dir("matchlock", False))


def cache_root(dest: str | os.PathLike[str] | None) -> Path:
    """``dest`` when given, else :func:`default_cache_dir`."""
    return Path(dest) if dest is not None else default_cache_dir()


@dataclass(frozen=True)
class CachedFolder:
    """One installed folder of the cache and what its use record says of it.

    ``kind`` is ``zip``, ``tar``, ``file`` or ``folder`` (a folder-only piece: ``sha256`` is then
    its folder digest); ``pieces`` the ``collection/piece`` keys it served;
    ``last_used`` a Unix time, ``used_by`` the room id (or ``download``) that used it then, None
    when no use was recorded (``last_used`` is then its install time).
    """

    path: Path
    sha256: str
    kind: str
    size: int
    pieces: tuple[str, ...]
    last_used: float
    used_by: str | None

    def as_json(self) -> dict[str, object]:
        """The folder as one JSON object (``matchlock cache list --json``)."""
        return {
            "folder": str(self.path),
            "sha256": self.sha256,
            "kind": self.kind,
            "size": self.size,
            "pieces": list(self.pieces),
            "last_used": self.last_used,
            "used_by": self.used_by,
        }


Status = Literal["ok", "damaged", "unverifiable", "busy"]


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify_cache` found in one folder: ``ok``; ``damaged`` (``reason`` says how);
    ``unverifiable`` (no digest known for it); ``busy`` (another process installs it now)."""

    folder: CachedFolder
    status: Status
    reason: str = ""


@dataclass(frozen=True)
class Collected:
    """What :func:`collect_garbage` did: the folders removed, those skipped because another
    process held their content, the stale partial downloads removed, the bytes freed, and the
    archives kept for serving the room (:mod:`matchlock.downloads.kept`) removed with them."""

    removed: tuple[CachedFolder, ...]
    busy: tuple[CachedFolder, ...]
    parts: tuple[Path, ...]
    freed: int
    archives: tuple[Path, ...] = ()


def _uses_folder(root: Path) -> Path:
    return root / STATE_FOLDER / "uses"


def _uses_path(root: Path, name: str) -> Path:
    return _uses_folder(root) / f"{name}.json"


def _read_uses(root: Path, name: str) -> dict[str, Any]:
    """The folder's use record, or an empty one when it is missing or unreadable (a record torn
    by a crash only costs the memory of past uses)."""
    try:
        return _parse_uses(_uses_path(root, name).read_bytes())
    except OSError:
        return {"pieces": {}, "used": {}}


def _parse_uses(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {"pieces": {}, "used": {}}
    if not isinstance(data, dict):
        return {"pieces": {}, "used": {}}
    pieces, used = data.get("pieces"), data.get("used")
    return {
        "pieces": pieces if isinstance(pieces, dict) else {},
        "used": {k: v for k, v in used.items() if isinstance(v, int | float)}
        if isinstance(used, dict)
        else {},
    }


def record_cache_use(
    root: str | os.PathLike[str],
    folders: Mapping[str, Path],
    used_by: str,
    config: MatchLockConfig | None = None,
    *,
    clock: Callable[[], float],
) -> None:
    """Record that ``used_by`` (a room id, or ``download``) used ``folders`` now.

    Only folders directly in the cache at ``root`` are recorded (a folder in the game's own
    files is not the cache's). With ``config``, the folder digest each piece expects is kept,
    so ``verify`` can check the folder later without the config. Each record is updated under
    an ``flock`` of its file, so two processes recording at once both count.
    """
    root = Path(root).absolute()
    now = clock()
    made = False
    for key, given in folders.items():
        folder = Path(given).absolute()
        if folder.parent != root or _FOLDER_NAME.match(folder.name) is None:
            continue
        if not made:  # once, not once per folder
            _uses_folder(root).mkdir(parents=True, exist_ok=True)
            made = True
        piece = config.piece(key) if config is not None else None
        expected = piece.folder_sha256 if piece is not None else None
        _update_uses(_uses_path(root, folder.name), {key: expected}, used_by, now)


def _update_uses(path: Path, pieces: dict[str, str | None], used_by: str, now: float) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+b") as file:
        fcntl.flock(fd, fcntl.LOCK_EX)
        record = _parse_uses(file.read())
        for key, expected in pieces.items():
            known = record["pieces"].get(key) or {}
            record["pieces"][key] = {"folder_sha256": expected or known.get("folder_sha256")}
        record["used"][used_by] = now
        file.seek(0)
        file.truncate()
        file.write(json.dumps(record, sort_keys=True).encode("utf-8"))


def _size(folder: Path) -> int:
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            info = os.lstat(os.path.join(parent, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def _entries(root: Path) -> Iterator[CachedFolder]:
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return
    for name in names:
        match = _FOLDER_NAME.match(name)
        path = root / name
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        record = _read_uses(root, name)
        used: dict[str, float] = record["used"]
        last_by = max(used, key=lambda who: used[who]) if used else None
        yield CachedFolder(
            path=path,
            sha256=match[1],
            kind="file" if match[3] is not None else match[2],
            size=_size(path),
            pieces=tuple(sorted(record["pieces"])),
            last_used=used[last_by] if last_by is not None else path.stat().st_mtime,
            used_by=last_by,
        )


def list_cache(root: str | os.PathLike[str]) -> list[CachedFolder]:
    """Every installed folder of the cache at ``root``, by name (empty when there is none)."""
    return list(_entries(Path(root).absolute()))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _file_problem(entry: CachedFolder) -> tuple[Status, str]:
    name = entry.path.name.split("-file-", 1)[1]
    found = sorted(os.listdir(entry.path))
    if found != [name]:
        return "damaged", f"it holds {', '.join(found) or 'nothing'}, expected only {name!r}"
    digest = _file_sha256(entry.path / name)
    if digest != entry.sha256:
        return "damaged", f"{name!r} has sha256 {digest}, expected {entry.sha256}"
    return "ok", ""


def _problem(cache: Cache, entry: CachedFolder) -> tuple[Status, str]:
    """(status, reason) for one folder, read while its content is locked."""
    if entry.kind == "file":
        return _file_problem(entry)
    record = _read_uses(cache.root, entry.path.name)["pieces"].values()
    expected = {pin["folder_sha256"] for pin in record if pin.get("folder_sha256")}
    if entry.kind == "folder":
        expected = {entry.sha256}  # named by its own folder digest
    if (recorded := cache.recorded_digest(entry.path)) is not None:
        expected.add(recorded)
    if not expected:
        return (
            "unverifiable",
            "no folder digest is known for it (none recorded, no config gave one)",
        )
    try:
        digest = folder_digest(entry.path)
    except FolderDigestError as error:
        return "damaged", str(error)
    if digest not in expected:
        return "damaged", f"its folder digest is {digest}, expected {' or '.join(sorted(expected))}"
    return "ok", ""


def verify_cache(root: str | os.PathLike[str]) -> list[Verdict]:
    """Check every folder of the cache at ``root`` (reads every byte; skips, as ``busy``, a
    folder whose content another process holds)."""
    cache = Cache(Path(root))
    if not cache.root.is_dir():
        return []
    cache.prepare()
    verdicts = []
    for entry in list_cache(cache.root):
        with cache.held_now(entry.sha256) as held:
            if not held:
                verdicts.append(Verdict(entry, "busy", "another process is installing it"))
                continue
            status: Status
            try:
                status, reason = _problem(cache, entry)
            except OSError as error:
                status, reason = "damaged", f"it cannot be read: {error.strerror}"
        verdicts.append(Verdict(entry, status, reason))
    return verdicts


def _remove_folder(cache: Cache, entry: CachedFolder) -> None:
    """Move the folder aside (so its name never holds a half-removed folder), then delete it
    and its bookkeeping. Call under the content's lock."""
    aside = cache.tmp / f"{entry.path.name}.old.{secrets.token_hex(6)}"
    os.rename(entry.path, aside)
    shutil.rmtree(aside, ignore_errors=True)
    for path in (cache.digests / entry.path.name, _uses_path(cache.root, entry.path.name)):
        path.unlink(missing_ok=True)


def _stale_archives(
    cache: Cache, cutoff: float, removed: list[CachedFolder]
) -> tuple[list[Path], int]:
    """Remove the kept archives of the folders just removed, and those whose folder is gone
    (an older gc, a user) that were kept before ``cutoff``; skip what another process holds.
    The archives removed, and the bytes that freed."""
    gone = {entry.sha256 for entry in removed}
    installed = {entry.sha256 for entry in list_cache(cache.root)}
    archives, freed = [], 0
    for sha256 in kept_digests(cache):
        kept = kept_archive(cache, sha256)
        if sha256 in installed or (sha256 not in gone and not _older(kept, cutoff)):
            continue
        with cache.held_now(sha256) as held:
            if held:
                freed += forget_kept(cache, sha256)
                archives.append(kept)
    return archives, freed


def _older(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _stale_parts(cache: Cache, cutoff: float) -> list[Path]:
    removed = []
    for part in sorted(cache.tmp.glob("*.part")):
        sha256 = part.name.removesuffix(".part")
        try:
            if part.stat().st_mtime >= cutoff:
                continue
        except FileNotFoundError:
            continue
        with cache.held_now(sha256) as held:
            if held and part.exists():
                part.unlink()
                removed.append(part)
    return removed


def collect_garbage(
    root: str | os.PathLike[str], keep_days: float, *, clock: Callable[[], float]
) -> Collected:
    """Remove every folder of the cache at ``root`` not used in the last ``keep_days`` days,
    and partial downloads untouched for as long; skip what another process holds."""
    cache = Cache(Path(root))
    if not cache.root.is_dir():
        return Collected((), (), (), 0)
    cache.prepare()
    cutoff = clock() - keep_days * _DAY
    removed, busy = [], []
    for entry in list_cache(cache.root):
        if entry.last_used >= cutoff:
            continue
        with cache.held_now(entry.sha256) as held:
            if not held:
                busy.append(entry)
                continue
            _remove_folder(cache, entry)
        removed.append(entry)
    parts = _stale_parts(cache, cutoff)
    archives, archive_bytes = _stale_archives(cache, cutoff, removed)
    freed = sum(e.size for e in removed) + archive_bytes
    return Collected(tuple(removed), tuple(busy), tuple(parts), freed, tuple(archives))
