"""The folder stream: a folder's files as one byte stream, checked against a pinned folder digest.

A member that holds a piece pinned by its folder (``folder_sha256``, ``folder_size``) sends it
to another member as a *folder stream* (the form ``folder`` of a transfer)::

    matchlock-folder-stream-v1 LF
    <length of the listing, decimal ASCII, no leading zero> LF
    <the listing: exactly the bytes of docs/folder-digest.md, so sha256(listing) == folder_sha256>
    <every listed file's content, in listing order, back to back>

Its length is known once the head is read (head + listing + ``folder_size``), and bounded
before a byte is read by :func:`folder_stream_bound`. :func:`stream_head` writes the head for a
listing; :class:`FolderStreamReader` reads a stream fed in pieces of any size and says where
each file begins and ends, after checking, in this order: the header line, the listing's length
(at most :data:`MAX_FOLDER_LISTING_BYTES`), the listing's sha256 against the pin, every path
(before any content: relative, ``/``-separated, no empty, ``.`` or ``..`` name, no NUL,
backslash, ``:`` or absolute form, Unicode NFC, no file inside another file's path), the sizes
summing to ``folder_size``, each file's sha256 as it completes, and the stream ending exactly
where announced. Each failure is a :class:`FolderStreamError` subclass naming what is wrong.

Everything the reader says before :meth:`FolderStreamReader.finish` returns is provisional: a
caller writes the files into a staging folder and installs it only once ``finish`` returned.

This module is part of the core: it parses bytes it is given and never touches files, sockets
or the clock (hashlib only hashes).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

from matchlock.core.errors import InputError

__all__ = [
    "FOLDER_LISTING_HEADER",
    "FOLDER_STREAM_HEADER",
    "MAX_FOLDER_LISTING_BYTES",
    "BadListing",
    "BadStreamHeader",
    "FileBegins",
    "FileChunk",
    "FileCorrupt",
    "FileEnds",
    "FolderSizeMismatch",
    "FolderStreamError",
    "FolderStreamReader",
    "ListedFile",
    "ListingMismatch",
    "ListingTooLong",
    "StreamPart",
    "StreamTooLong",
    "StreamTooShort",
    "UnsafePath",
    "folder_stream_bound",
    "parse_listing",
    "stream_head",
    "stream_length",
]

FOLDER_STREAM_HEADER = b"matchlock-folder-stream-v1\n"
"""The first line of every folder stream; another format would change it."""

FOLDER_LISTING_HEADER = b"matchlock-folder-v1\n"
"""The first line of every listing (docs/folder-digest.md), the same bytes as
:data:`matchlock.downloads.folder_digest.FOLDER_DIGEST_HEADER` (a test checks it)."""

MAX_FOLDER_LISTING_BYTES = 16 * 1024 * 1024
"""The longest listing a stream may announce (about 150,000 files of 50-byte names)."""

_LENGTH_DIGITS = len(str(MAX_FOLDER_LISTING_BYTES))
_HEAD_BOUND = len(FOLDER_STREAM_HEADER) + _LENGTH_DIGITS + 1
_DECIMAL = re.compile(rb"0|[1-9][0-9]*")
_HEX64 = re.compile(rb"[0-9a-f]{64}")


def folder_stream_bound(folder_size: int) -> int:
    """The most bytes a folder stream of a folder of ``folder_size`` bytes can have: what a
    host lets a transfer of form ``folder`` carry before anything is read."""
    return len(FOLDER_STREAM_HEADER) + 9 + MAX_FOLDER_LISTING_BYTES + folder_size


def stream_head(listing: bytes) -> bytes:
    """The bytes before the files' contents: the header line, the listing's length, the listing.

    Raises :class:`ListingTooLong` for a listing over :data:`MAX_FOLDER_LISTING_BYTES`.
    """
    if len(listing) > MAX_FOLDER_LISTING_BYTES:
        raise ListingTooLong(
            f"the listing is {len(listing)} bytes, more than the {MAX_FOLDER_LISTING_BYTES} "
            "a folder stream can carry"
        )
    return b"%s%d\n%s" % (FOLDER_STREAM_HEADER, len(listing), listing)


def stream_length(listing_length: int, folder_size: int) -> int:
    """The exact length of the folder stream of a listing of ``listing_length`` bytes."""
    return len(FOLDER_STREAM_HEADER) + len(str(listing_length)) + 1 + listing_length + folder_size


# --- errors -------------------------------------------------------------------------------------


class FolderStreamError(InputError):
    """A folder stream is not the pinned folder; the message says what arrived instead."""


class BadStreamHeader(FolderStreamError):
    """The stream does not start with the header line and a listing length in decimal."""


class ListingTooLong(FolderStreamError):
    """The announced listing is longer than :data:`MAX_FOLDER_LISTING_BYTES`."""


class ListingMismatch(FolderStreamError):
    """The listing's sha256 is not the pinned ``folder_sha256``."""


class BadListing(FolderStreamError):
    """The listing (whose digest matched) is not a well-formed listing."""


class UnsafePath(BadListing):
    """A listed path could escape the folder or is not a portable relative path."""


class FolderSizeMismatch(BadListing):
    """The listed files' sizes do not sum to the pinned ``folder_size``."""


class FileCorrupt(FolderStreamError):
    """A file's content does not hash to the sha256 its listing line gives."""


class StreamTooLong(FolderStreamError):
    """Bytes arrived after the last announced byte."""


class StreamTooShort(FolderStreamError):
    """The stream ended before its last announced byte."""


# --- the listing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedFile:
    """One file of a listing: its relative ``/``-separated path, size and sha256 (hex)."""

    path: str
    size: int
    sha256: str


def _unsafe(path: str) -> str | None:
    """Why ``path`` is not a safe relative file path, or None when it is."""
    if path.startswith("/"):
        return "it is absolute"
    for bad, name in (("\\", "a backslash"), ("\0", "a NUL"), (":", "a ':' (a drive or stream)")):
        if bad in path:
            return f"it contains {name}"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "it has an empty, '.' or '..' name"
    if unicodedata.normalize("NFC", path) != path:
        return "it is not in Unicode NFC"
    return None


def _entry(listing: bytes, start: int) -> tuple[ListedFile, int]:
    """The entry at ``start`` and where the next one begins; raises :class:`BadListing`."""
    path_end = listing.find(b"\0", start)
    size_end = listing.find(b"\0", path_end + 1) if path_end >= 0 else -1
    if size_end < 0 or listing[size_end + 65 : size_end + 66] != b"\n":
        raise BadListing(
            f"the listing's entry at byte {start} is not 'path NUL size NUL sha256 LF'"
        )
    raw_path, raw_size = listing[start:path_end], listing[path_end + 1 : size_end]
    raw_sha = listing[size_end + 1 : size_end + 65]
    if _DECIMAL.fullmatch(raw_size) is None or _HEX64.fullmatch(raw_sha) is None:
        raise BadListing(f"the listing's entry at byte {start} has a malformed size or sha256")
    try:
        path = raw_path.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafePath(f"the listed path {raw_path!r} is not UTF-8") from None
    why = _unsafe(path)
    if why is not None:
        raise UnsafePath(f"the listed path {path!r} is refused: {why}")
    return ListedFile(path, int(raw_size), raw_sha.decode("ascii")), size_end + 66


def parse_listing(listing: bytes, folder_size: int) -> tuple[ListedFile, ...]:
    """The files of a listing (docs/folder-digest.md), checked: the header line, each entry
    well formed, each path safe, sorted strictly by path bytes, no file where another file's
    folder is, sizes summing to ``folder_size``.

    Raises :class:`BadListing`, :class:`UnsafePath` or :class:`FolderSizeMismatch`.
    """
    if not listing.startswith(FOLDER_LISTING_HEADER):
        raise BadListing(f"the listing does not start with {FOLDER_LISTING_HEADER!r}")
    files: list[ListedFile] = []
    position = len(FOLDER_LISTING_HEADER)
    while position < len(listing):
        entry, position = _entry(listing, position)
        if files and entry.path.encode() <= files[-1].path.encode():
            raise BadListing(f"the listed path {entry.path!r} is out of order or listed twice")
        files.append(entry)
    _no_file_as_folder(files)
    total = sum(entry.size for entry in files)
    if total != folder_size:
        raise FolderSizeMismatch(
            f"the listed files hold {total} bytes; the pinned folder_size is {folder_size}"
        )
    return tuple(files)


def _no_file_as_folder(files: list[ListedFile]) -> None:
    paths = {entry.path for entry in files}
    for entry in files:
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in paths:
                raise UnsafePath(f"the listed path {entry.path!r} lies inside the file {parent!r}")


# --- the reader ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileBegins:
    """The next bytes belong to ``file`` (the ``index``-th of the listing)."""

    index: int
    file: ListedFile


@dataclass(frozen=True)
class FileChunk:
    """Content of the file that began last, in order."""

    data: bytes


@dataclass(frozen=True)
class FileEnds:
    """The file that began last is complete and its sha256 is the listed one."""

    index: int
    file: ListedFile


StreamPart = FileBegins | FileChunk | FileEnds
"""What :meth:`FolderStreamReader.feed` reports."""


class FolderStreamReader:
    """Reads one folder stream pinned by ``folder_sha256`` and ``folder_size``.

    Call :meth:`feed` with the bytes as they arrive (any split); it returns what they hold, in
    order (every file, empty ones too, is a :class:`FileBegins`, its :class:`FileChunk` s, a
    :class:`FileEnds`), or raises a :class:`FolderStreamError` (then the reader is spent). Call
    :meth:`finish` at the end of the stream: it raises :class:`StreamTooShort` unless every
    announced byte arrived. Only then is the folder the pinned one.
    """

    def __init__(self, folder_sha256: str, folder_size: int) -> None:
        self.folder_sha256 = folder_sha256
        self.folder_size = folder_size
        self.received = 0
        self.files: tuple[ListedFile, ...] | None = None
        self.length: int | None = None
        self._head = bytearray()
        self._listing_length: int | None = None
        self._index = -1
        self._left = 0
        self._hash = hashlib.sha256()

    def feed(self, data: bytes) -> list[StreamPart]:
        """What ``data``, the next bytes of the stream, hold (see the class docs)."""
        self.received += len(data)
        if self.length is not None and self.received > self.length:
            raise StreamTooLong(f"more than the announced {self.length} bytes arrived")
        parts: list[StreamPart] = []
        view = memoryview(data)
        if self.files is None:
            view = self._read_head(view)
            if self.files is None:
                return parts
            parts.extend(self._next_files())
        # The announced length bounds ``received``, and the listed sizes sum to folder_size,
        # so every byte left in ``view`` belongs to a file still open.
        while view:
            take = min(self._left, len(view))
            # The common case, a chunk wholly inside one file, is handed on without a copy.
            chunk = data if take == len(data) else bytes(view[:take])
            view = view[take:]
            self._hash.update(chunk)
            self._left -= take
            parts.append(FileChunk(chunk))
            parts.extend(self._next_files())
        return parts

    def finish(self) -> None:
        """Return when the stream was whole; raise :class:`StreamTooShort` otherwise."""
        if self.length is None or self.received < self.length:
            expected = "its head" if self.length is None else f"{self.length} bytes"
            raise StreamTooShort(f"the stream ended after {self.received} bytes, before {expected}")

    def _read_head(self, view: memoryview) -> memoryview:
        """Buffer the head (header, length, listing) and parse it once whole; the rest of
        ``view`` is returned."""
        if self._listing_length is None:
            taken = min(len(view), _HEAD_BOUND - len(self._head))
            self._head += view[:taken]
            self._check_header()
            newline = self._head.find(b"\n", len(FOLDER_STREAM_HEADER))
            if newline < 0:
                if len(self._head) >= _HEAD_BOUND:
                    raise ListingTooLong(
                        f"the listing length has more than {_LENGTH_DIGITS} digits: the "
                        f"listing would be longer than {MAX_FOLDER_LISTING_BYTES} bytes"
                    )
                return view[len(view) :]
            digits = bytes(self._head[len(FOLDER_STREAM_HEADER) : newline])
            self._listing_length = self._parse_length(digits)
            # What followed the length is the listing's start: read it with the rest.
            view = memoryview(bytes(self._head[newline + 1 :]) + bytes(view[taken:]))
            self._head.clear()
        wanted = self._listing_length - len(self._head)
        self._head += view[:wanted]
        if len(self._head) == self._listing_length:
            self._accept_listing(bytes(self._head))
            self._head.clear()
        return view[wanted:]

    def _check_header(self) -> None:
        seen = bytes(self._head[: len(FOLDER_STREAM_HEADER)])
        if not FOLDER_STREAM_HEADER.startswith(seen):
            raise BadStreamHeader(f"the stream starts with {seen!r}, not {FOLDER_STREAM_HEADER!r}")

    def _parse_length(self, digits: bytes) -> int:
        if _DECIMAL.fullmatch(digits) is None:
            raise BadStreamHeader(f"the listing length {digits!r} is not a decimal number")
        length = int(digits)
        if length > MAX_FOLDER_LISTING_BYTES:
            raise ListingTooLong(
                f"the stream announces a listing of {length} bytes, more than the "
                f"{MAX_FOLDER_LISTING_BYTES} a folder stream can carry"
            )
        self.length = stream_length(length, self.folder_size)
        if self.received > self.length:
            raise StreamTooLong(f"more than the announced {self.length} bytes arrived")
        return length

    def _accept_listing(self, listing: bytes) -> None:
        digest = hashlib.sha256(listing).hexdigest()
        if digest != self.folder_sha256:
            raise ListingMismatch(
                f"the listing's sha256 is {digest}, not the pinned folder_sha256 "
                f"{self.folder_sha256}"
            )
        self.files = parse_listing(listing, self.folder_size)

    def _next_files(self) -> list[StreamPart]:
        """End the current file when complete, then begin the next (ending empty ones too)."""
        assert self.files is not None
        parts: list[StreamPart] = []
        while self._left == 0 and self._index < len(self.files):
            if self._index >= 0:
                parts.append(self._end_file(self.files[self._index]))
            self._index += 1
            if self._index < len(self.files):
                entry = self.files[self._index]
                self._left, self._hash = entry.size, hashlib.sha256()
                parts.append(FileBegins(self._index, entry))
        return parts

    def _end_file(self, entry: ListedFile) -> FileEnds:
        digest = self._hash.hexdigest()
        if digest != entry.sha256:
            raise FileCorrupt(
                f"{entry.path!r}: its {entry.size} bytes have sha256 {digest}, "
                f"not the listed {entry.sha256}"
            )
        return FileEnds(self._index, entry)
