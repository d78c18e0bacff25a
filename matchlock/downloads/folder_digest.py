"""The digest of an installed folder: one sha256 that is the same on every platform.

A piece that unpacks into a folder carries ``folder_sha256``, so a folder already in the game's
files can be trusted without downloading anything. The digest covers every regular file's
relative path, size and content, and nothing else: folders are implied by the paths (an empty
folder does not count), permissions, owners and times are ignored. The exact algorithm is in
``docs/folder-digest.md``; in short, sha256 over::

    matchlock-folder-v1 LF
    path NUL size NUL sha256hex LF      (one line per regular file)

with ``path`` the relative path, ``/``-separated, each name in Unicode NFC, UTF-8 encoded, and the
lines sorted by those bytes. A symbolic link, junction, device, FIFO or socket anywhere in the
folder raises :class:`~matchlock.core.errors.FolderDigestError` naming it: such an entry is never
installed content, and following it could read outside the folder.

This module is part of the shell (it reads files). Files are read in 1 MiB chunks into one reused
buffer, so memory stays flat whatever their size.
"""

from __future__ import annotations

import hashlib
import os
import stat
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from matchlock.core.errors import FolderDigestError

__all__ = [
    "CHUNK_BYTES",
    "FOLDER_DIGEST_HEADER",
    "folder_digest",
    "folder_files",
    "folder_listing",
]

FOLDER_DIGEST_HEADER = b"matchlock-folder-v1\n"
"""The first line of every listing; a new algorithm would change it."""

CHUNK_BYTES = 1024 * 1024
"""How much of a file is read at a time."""

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _special_kind(mode: int, attributes: int) -> str | None:
    """What makes an entry unacceptable, or None for a regular file or a real folder."""
    if stat.S_ISLNK(mode) or attributes & stat.FILE_ATTRIBUTE_REPARSE_POINT:
        return "a symbolic link or junction"
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _name_bytes(name: str, shown: Path) -> bytes:
    try:
        return unicodedata.normalize("NFC", name).encode("utf-8")
    except UnicodeEncodeError:
        # POSIX names that are not valid UTF-8 arrive as surrogate escapes: no portable spelling.
        raise FolderDigestError(f"{shown}: the name is not valid UTF-8") from None


def _regular_files(root: Path) -> list[tuple[bytes, Path]]:
    """Every regular file under ``root`` as (relative path bytes, path), sorted by the bytes."""
    found: dict[bytes, Path] = {}
    pending: list[tuple[bytes, Path]] = [(b"", root)]
    while pending:
        prefix, folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                path = folder / entry.name
                info = entry.stat(follow_symlinks=False)
                kind = _special_kind(info.st_mode, getattr(info, "st_file_attributes", 0))
                if kind is not None:
                    raise FolderDigestError(
                        f"{path}: {kind}; a folder digest covers regular files and folders only"
                    )
                relative = prefix + _name_bytes(entry.name, path)
                if stat.S_ISDIR(info.st_mode):
                    pending.append((relative + b"/", path))
                elif relative in found:
                    raise FolderDigestError(
                        f"{path} and {found[relative]}: two names that differ "
                        "only in Unicode normalization"
                    )
                else:
                    found[relative] = path
    return sorted(found.items())


def _file_size_and_sha256(path: Path, buffer: bytearray) -> tuple[int, str]:
    view = memoryview(buffer)
    digest = hashlib.sha256()
    size = 0
    # O_NOFOLLOW: a file swapped for a link after the listing is refused, not followed.
    with open(os.open(path, _OPEN_FLAGS), "rb", buffering=0) as file:
        while count := file.readinto(view):
            digest.update(view[:count])
            size += count
    return size, digest.hexdigest()


def folder_files(path: str | os.PathLike[str]) -> list[tuple[bytes, Path]]:
    """Every regular file under the folder at ``path``, in listing order: each file's listed
    path (NFC, ``/``-separated, UTF-8) and its path on disk (which may be spelled otherwise,
    say decomposed). Raises :class:`FolderDigestError` as :func:`folder_digest` does."""
    root = Path(path)
    if not root.is_dir():
        raise FolderDigestError(f"{root}: not a folder")
    try:
        return _regular_files(root)
    except OSError as error:
        where = error.filename if error.filename is not None else root
        raise FolderDigestError(f"{where}: cannot read: {error.strerror}") from None


def folder_listing(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """The exact bytes :func:`folder_digest` hashes: the header line, then one line per file.

    Comparing two folders' listings shows which file differs. Raises
    :class:`FolderDigestError` as :func:`folder_digest` does (possibly after some lines).
    """
    root = Path(path)
    if not root.is_dir():
        raise FolderDigestError(f"{root}: not a folder")
    yield FOLDER_DIGEST_HEADER
    buffer = bytearray(CHUNK_BYTES)
    try:
        for relative, file in _regular_files(root):
            size, sha256 = _file_size_and_sha256(file, buffer)
            yield b"%s\0%d\0%s\n" % (relative, size, sha256.encode("ascii"))
    except OSError as error:
        where = error.filename if error.filename is not None else root
        raise FolderDigestError(f"{where}: cannot read: {error.strerror}") from None


def folder_digest(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of the folder at ``path`` (see the module docs and ``docs/folder-digest.md``).

    Raises :class:`FolderDigestError` naming the entry when the folder holds a link or special
    file, a name that is not valid UTF-8, or a file that cannot be read.
    """
    digest = hashlib.sha256()
    for line in folder_listing(path):
        digest.update(line)
    return digest.hexdigest()
