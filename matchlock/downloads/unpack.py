"""Safe unpacking of ``zip`` and ``tar`` archives into an empty folder.

An archive is hostile even when its sha256 matched: the config's author may not have looked
inside. So every member is checked before a byte of it is written, and extraction never goes
through :meth:`zipfile.ZipFile.extractall` or :meth:`tarfile.TarFile.extractall`:

- a member's name must be a relative path made of plain names: no leading ``/``, no ``..``, no
  drive or ``:``, no backslash, no NUL; two members may not land on the same path;
- only regular files and folders are unpacked: a symbolic or hard link, a device, a FIFO is
  refused (zip records links in the Unix mode of ``external_attr``);
- there are at most :attr:`UnpackLimits.max_members` members, and the bytes actually written
  (not the sizes the archive claims) stay within :meth:`UnpackLimits.budget`, so a zip bomb stops
  at the limit instead of filling the disk;
- files are created new (``O_EXCL``) with default permissions: modes, owners and times from the
  archive are ignored.

Any refusal raises :class:`~matchlock.downloads.errors.ArchiveError` naming the member; the caller
removes the half-filled folder. Blocking: run it on a worker thread.
"""

from __future__ import annotations

import lzma
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from matchlock.downloads.errors import ArchiveError

__all__ = ["UnpackLimits", "unpack_archive"]

_COPY_CHUNK = 1024 * 1024
_MIN_BUDGET = 64 * 1024 * 1024


@dataclass(frozen=True)
class UnpackLimits:
    """How much an archive may unpack to.

    ``max_members`` counts every entry (folders too). The byte budget of one archive is
    ``max_ratio`` times its size, at least 64 MiB, and never more than ``max_bytes``.
    """

    max_members: int = 100_000
    max_bytes: int = 32 * 1024**3
    max_ratio: int = 100

    def budget(self, archive_size: int) -> int:
        """The most bytes an archive of ``archive_size`` bytes may unpack to."""
        return min(self.max_bytes, max(self.max_ratio * archive_size, _MIN_BUDGET))


def unpack_archive(
    archive: Path, kind: Literal["zip", "tar"], into: Path, limits: UnpackLimits
) -> int:
    """Unpack ``archive`` into the existing empty folder ``into``; returns the bytes written.

    Raises :class:`ArchiveError` when the archive is unreadable or any member is refused.
    """
    budget = _Budget(limits.budget(archive.stat().st_size))
    try:
        if kind == "zip":
            _unpack_zip(archive, into, limits, budget)
        else:
            _unpack_tar(archive, into, limits, budget)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError) as error:
        raise ArchiveError("", f"not a readable {kind} archive: {error}") from None
    return budget.used


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, count: int, member: str) -> None:
        self.used += count
        if self.used > self.limit:
            raise ArchiveError(member, f"unpacks to more than {self.limit} bytes (the limit)")


def _member_path(name: str) -> PurePosixPath:
    """The member's relative path, or :class:`ArchiveError` if it could escape its folder."""
    if not name or "\0" in name or "\\" in name or ":" in name:
        raise ArchiveError(name, "the name holds a NUL, a backslash, a ':' or nothing")
    if name.startswith("/"):
        raise ArchiveError(name, "the name is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(name, "the name climbs out of the folder with '..'")
    if not parts:
        raise ArchiveError(name, "the name is empty")
    return PurePosixPath(*parts)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """``file``, ``folder``, or what else the member is (from its Unix mode, if any)."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "a symbolic link"
    if info.is_dir() or kind == stat.S_IFDIR:
        return "folder"
    if kind in (0, stat.S_IFREG):
        return "file"
    return "a device or other special file"


def _unpack_zip(archive: Path, into: Path, limits: UnpackLimits, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        if len(members) > limits.max_members:
            raise ArchiveError("", f"{len(members)} members, more than {limits.max_members}")
        claimed = sum(info.file_size for info in members)
        if claimed > budget.limit:
            raise ArchiveError("", f"claims {claimed} bytes, more than {budget.limit} (the limit)")
        seen: set[PurePosixPath] = set()
        for info in members:
            path = _claim(_member_path(info.filename), seen, info.filename)
            kind = _zip_kind(info)
            if kind == "folder":
                _make_folder(into, path, info.filename)
            elif kind == "file":
                try:
                    with bundle.open(info) as source:
                        _write_member(source, into, path, info.filename, budget)
                except (RuntimeError, NotImplementedError) as error:  # encrypted, odd method
                    raise ArchiveError(info.filename, str(error)) from None
            else:
                raise ArchiveError(info.filename, f"the member is {kind}")


def _unpack_tar(archive: Path, into: Path, limits: UnpackLimits, budget: _Budget) -> None:
    seen: set[PurePosixPath] = set()
    with tarfile.open(archive, "r:*") as bundle:
        for count, member in enumerate(bundle, start=1):
            if count > limits.max_members:
                raise ArchiveError("", f"more than {limits.max_members} members")
            path = _claim(_member_path(member.name), seen, member.name)
            if member.isdir():
                _make_folder(into, path, member.name)
            elif member.isfile():
                source = bundle.extractfile(member)
                assert source is not None  # a regular file always has contents
                with source:
                    _write_member(source, into, path, member.name, budget)
            else:
                raise ArchiveError(member.name, f"the member is {_tar_kind(member)}")


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a FIFO"
    return "not a regular file or folder"


def _claim(path: PurePosixPath, seen: set[PurePosixPath], name: str) -> PurePosixPath:
    if path in seen:
        raise ArchiveError(name, "a second member with the same path")
    seen.add(path)
    return path


def _make_folder(into: Path, path: PurePosixPath, name: str) -> None:
    try:
        (into / path).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ArchiveError(name, "collides with a file of the same path") from None


def _write_member(
    source: IO[bytes], into: Path, path: PurePosixPath, name: str, budget: _Budget
) -> None:
    target = into / path
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        destination = target.open("xb")
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise ArchiveError(name, "collides with another member of the same path") from None
    with destination:
        while chunk := source.read(_COPY_CHUNK):
            budget.take(len(chunk), name)
            destination.write(chunk)
