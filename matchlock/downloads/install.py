"""Turning a piece's verified bytes into a published folder of the cache.

:func:`install_part` takes the ``.part`` whose size and sha256 were checked and makes the
piece's folder from it through a staging folder: the part's file as a hard link (a piece that
does not unpack) or its archive unpacked safely (:mod:`matchlock.downloads.unpack`), the folder
digest checked against ``folder_sha256`` or recorded, the archive kept for a room member to serve
when asked, then one ``rename`` into place (:meth:`~matchlock.downloads.cache.Cache.publish`).
:func:`install_stream` does the same for a folder stream a room member sent.

Each function blocks; the caller holds the content's lock and runs it on a worker thread (or,
for a small piece that does not unpack, on the event loop: :mod:`matchlock.downloads.piece`).
This module never fetches, never hashes the download, and never publishes a folder that is not
whole: a failure removes the staging folder and leaves the final name as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from matchlock.core.config import Piece
from matchlock.core.folderstream import FolderStreamError
from matchlock.downloads.cache import Cache, link_or_copy, piece_file_name
from matchlock.downloads.folder_digest import folder_digest
from matchlock.downloads.folder_stream import decode_folder_stream
from matchlock.downloads.kept import keep_archive, kept_archive
from matchlock.downloads.unpack import UnpackLimits, unpack_archive

__all__ = ["InstallFailed", "install_part", "install_stream"]


class InstallFailed(Exception):
    """The verified bytes did not install (the unpacked folder is not the expected one)."""


def install_part(
    cache: Cache,
    key: str,
    piece: Piece,
    part: Path,
    *,
    folder: Path,
    limits: UnpackLimits,
    keep: bool,
) -> None:
    """Publish ``folder`` from the verified ``part`` of ``piece`` (addressed ``key``); with
    ``keep``, also keep its archive (:mod:`matchlock.downloads.kept`). Raises
    :class:`InstallFailed`, :class:`~matchlock.downloads.errors.ArchiveError` or
    :class:`~matchlock.core.errors.FolderDigestError` when the bytes cannot be installed."""
    staging = cache.new_staging(folder)
    try:
        if piece.unpack == "none":
            link_or_copy(part, staging / piece_file_name(key, piece))
        else:
            unpack_archive(part, piece.unpack, staging, limits)
        _check_unpacked(cache, piece, staging, folder)
        if keep:
            keep_archive(part, kept_archive(cache, piece.content_digest))
        cache.publish(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def install_stream(cache: Cache, piece: Piece, stream: Path, folder: Path) -> str | None:
    """Unpack the folder stream ``stream`` into ``folder``: None when published, else what is
    wrong with the stream (nothing is published then)."""
    assert piece.folder is not None
    digest, size = piece.folder
    staging = cache.new_staging(folder)
    try:
        try:
            decode_folder_stream(stream, staging, folder_sha256=digest, folder_size=size)
        except FolderStreamError as error:
            return str(error)
        cache.publish(staging, folder)
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when published


def _check_unpacked(cache: Cache, piece: Piece, staging: Path, folder: Path) -> None:
    if piece.folder_sha256 is not None:
        digest = folder_digest(staging)
        if digest != piece.folder_sha256:
            raise InstallFailed(
                f"the installed folder's digest is {digest}, "
                f"but the config says folder_sha256 {piece.folder_sha256}"
            )
    elif piece.unpack != "none":
        cache.record_digest(folder, folder_digest(staging))
