"""Whether a folder that already exists holds exactly a piece: the check before any trust.

A folder is trusted, in the game's files or in the cache, only when one of these holds:

1. the piece gives ``folder_sha256`` and the folder's digest
   (:func:`matchlock.downloads.folder_digest.folder_digest`) equals it;
2. the piece does not unpack and the folder holds exactly its one file, whose size and sha256
   are the piece's own;
3. the piece is an archive without ``folder_sha256``, the folder is in the cache, and its digest
   equals the one recorded when matchlock installed it.

Anything else is refused with the reason, which the engine reports before installing afresh.
The check reads every byte of the folder, so it runs on a worker thread; it never changes the
folder.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from matchlock.core.config import Piece
from matchlock.core.errors import FolderDigestError
from matchlock.downloads.folder_digest import folder_digest

__all__ = ["folder_problem"]

_CHUNK = 1024 * 1024


def folder_problem(folder: Path, piece: Piece, file_name: str, recorded: str | None) -> str | None:
    """None when ``folder`` holds exactly ``piece``; otherwise why it does not (blocking).

    ``file_name`` is the piece's file name when it does not unpack; ``recorded`` the digest the
    cache recorded at install time (None outside the cache).
    """
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return "it does not exist"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a folder"
    expected = piece.folder_sha256 or (recorded if piece.unpack != "none" else None)
    if expected is not None:
        return _digest_problem(folder, expected)
    if piece.unpack == "none":
        return _single_file_problem(folder, piece, file_name)
    return "it cannot be verified: the piece has no folder_sha256"


def _digest_problem(folder: Path, expected: str) -> str | None:
    try:
        digest = folder_digest(folder)
    except FolderDigestError as error:
        return str(error)
    if digest != expected:
        return f"its folder digest is {digest}, expected {expected}"
    return None


def _single_file_problem(folder: Path, piece: Piece, file_name: str) -> str | None:
    try:
        names = sorted(os.listdir(folder))
        if names != [file_name]:
            shown = ", ".join(repr(n) for n in names[:5]) or "nothing"
            return f"it holds {shown}, expected only {file_name!r}"
        path = folder / file_name
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            return f"{file_name!r} is not a regular file"
        if info.st_size != piece.size:
            return f"{file_name!r} has {info.st_size} bytes, expected {piece.size}"
        digest = _file_sha256(path)
    except OSError as error:
        return f"it cannot be read: {error.strerror}"
    if digest != piece.sha256:
        return f"{file_name!r} has sha256 {digest}, expected {piece.sha256}"
    return None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb", buffering=0) as f:
        while count := f.readinto(view):
            digest.update(view[:count])
    return digest.hexdigest()
