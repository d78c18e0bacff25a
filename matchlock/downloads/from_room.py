"""What a piece's turn of ``room:`` needs besides the room's resolver: the forms the piece can
come in, and checking what a holder sent before anything is installed.

:func:`room_forms` lists the forms a piece pins (its archive, bounded by its size; its folder
stream, bounded by :func:`~matchlock.core.folderstream.folder_stream_bound`), each with the
staging the resolver writes it through. :func:`archive_problem` says what arrived when the part
is not the pinned archive. (A folder stream is checked as it is unpacked:
:func:`~matchlock.downloads.folder_stream.decode_folder_stream`.) Nothing here does IO beyond
the part it is given.
"""

from __future__ import annotations

from matchlock.core.config import Piece
from matchlock.core.folderstream import folder_stream_bound
from matchlock.downloads.resolvers import Progress, Staging, Wanted
from matchlock.downloads.resolvers.room import ROOM_URL, Form
from matchlock.downloads.sink import PartFile

__all__ = ["archive_problem", "room_forms"]


def room_forms(key: str, piece: Piece, part: PartFile, progress: Progress) -> tuple[Form, ...]:
    """The forms ``piece`` can come from the room in, archive first, each with its staging."""
    forms: list[Form] = []
    if piece.archive is not None:
        sha256, size = piece.archive
        forms.append(Form("archive", Staging(part, Wanted(key, sha256, size), progress, ROOM_URL)))
    if piece.folder is not None:
        digest, size = piece.folder
        wanted = Wanted(key, digest, folder_stream_bound(size))
        capped = _capped(progress, size)
        forms.append(Form("folder", Staging(part, wanted, capped, f"{ROOM_URL}folder")))
    return tuple(forms)


def _capped(progress: Progress, size: int) -> Progress:
    """Progress of a folder stream, counted toward the folder's size (the stream's head is a
    few bytes more than its files)."""

    def report(done: int) -> None:
        progress(min(done, size))

    return report


async def archive_problem(piece: Piece, part: PartFile) -> str | None:
    """None when ``part`` holds exactly the piece's archive, else what arrived instead."""
    await part.drain()
    digest = part.hexdigest()
    if (part.size, digest) == (piece.size, piece.sha256):
        return None
    return f"{part.size} bytes whose sha256 is {digest}, not the pinned {piece.sha256}"
