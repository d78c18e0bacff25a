"""Serving the room: a member gives the pieces it holds to members that lack them.

When the host sends ``serve`` (it chose this member as the holder of a piece another member
wants), :class:`PieceServer` checks and streams it:

- only a piece of the signed room config, pinned in the asked form, is served, and only from
  where this member keeps it: form ``archive`` from the cache (the file of a piece that does
  not unpack, or the verified archive a job kept, :func:`~matchlock.downloads.piece.kept_archive`),
  form ``folder`` from the installed folder in the cache or the game's folder. The path comes
  from the config, never from the request;
- what is there is verified again first (the archive's sha256 and size; the folder's digest,
  whose listing is the head of the folder stream), so an edited file or folder is never
  offered: the answer is ``unheld`` with the reason. A file still exactly the one the download
  verified (same path, inode, size, modification and change times, recorded by
  :mod:`matchlock.downloads.kept`) is not hashed again: any change to it changes those;
- the bytes go out in data frames of at most ``MAX_CHUNK_BYTES``, never more than
  ``TRANSFER_WINDOW_BYTES`` beyond the requester's last ``ack`` (the server waits for acks), at
  most ``MAX_UPLOADS_PER_MEMBER`` transfers at once, at most ``upload_limit`` bytes a second when
  one is set; ``end`` once all are sent; a ``cut`` stops the transfer.

Each transfer ends in a member-local ``transfer_served`` event in this member's log. Reading and
hashing run on the loop's default executor, never on the loop.
This module must never serve a path outside the cache and game folders, nor a piece outside
the room config.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.config import MatchLockConfig, Piece, RoomConfig
from matchlock.core.errors import UsageError
from matchlock.downloads.cache import Cache, piece_file_name
from matchlock.downloads.engine import engine_folders
from matchlock.downloads.folder_stream import FolderChanged, encode_folder_stream
from matchlock.downloads.kept import kept_archive, verified_unchanged

__all__ = ["CUT_BY_HOST", "PieceServer"]

CUT_BY_HOST = "cut by the host: "
"""How a ``transfer_served`` reason begins when the host cut the transfer (its reason follows)."""

_READS_PER_HOP = 4
"""Reads (of at most a data frame's payload each, from an archive) per hop to a worker thread."""


class _Unheld(Exception):
    """This member cannot serve what was asked; the message says why."""


class _Stream(Protocol):
    """What one transfer sends: ``length`` bytes, read from any offset."""

    @property
    def length(self) -> int: ...

    def chunks(self, offset: int = 0) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class _Archive:
    """A verified archive file of ``length`` bytes, read as it is sent."""

    path: Path
    length: int

    def chunks(self, offset: int = 0) -> Iterator[bytes]:
        """The file's bytes from ``offset`` on (blocking reads); :class:`_Unheld` when it is
        no longer as long as it was verified."""
        flags = os.O_RDONLY | os.O_NOFOLLOW
        with open(os.open(self.path, flags), "rb", buffering=0) as file:
            file.seek(offset)
            left = self.length - offset
            while left > 0:
                chunk = file.read(min(tm.MAX_CHUNK_BYTES, left))
                if not chunk:
                    raise _Unheld(f"{self.path} became shorter than its {self.length} bytes")
                left -= len(chunk)
                yield chunk


class PieceServer:
    """Serves this member's pieces of ``room`` (found through ``config``, the cache at
    ``cache_root`` and the game's folder ``engine_root``) to the members the host names; see
    the module docs. ``record`` receives this member's ``transfer_served`` events."""

    def __init__(
        self,
        room: RoomConfig,
        config: MatchLockConfig,
        user_id: str,
        *,
        cache_root: Path,
        engine_root: Path | None,
        record: Callable[[ev.Event], None],
        clock: Callable[[], float],
        upload_limit: float | None = None,
    ) -> None:
        if upload_limit is not None and upload_limit <= 0:
            raise UsageError(
                f"an upload limit is a number of bytes a second above 0, not {upload_limit}"
            )
        self._room = room
        self._config = config
        self._user = user_id
        self._cache = Cache(cache_root)
        self._engine = engine_folders(config, engine_root)
        self._record = record
        self._clock = clock
        self._limit = upload_limit
        self._send: Callable[[bytes], None] | None = None
        self._uploads: dict[int, _Upload] = {}

    def link_up(self, send: Callable[[bytes], None]) -> None:
        """Welcomed by a host that speaks peers: frames go out through ``send``."""
        self._send = send

    def link_down(self) -> None:
        """The connection is gone: every upload stops (its transfer died with it)."""
        self._send = None
        for upload in list(self._uploads.values()):
            upload.stop("the connection to the host was lost")

    async def close(self) -> None:
        """Stop every upload and wait for them."""
        self.link_down()
        tasks = [upload.task for upload in self._uploads.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def receive(self, message: tm.Serve | tm.Ack | tm.Cut) -> None:
        """A ``serve``, ``ack`` or ``cut`` from the host for this member as a holder."""
        match message:
            case tm.Serve():
                self._serve(message)
            case tm.Ack(transfer=transfer, offset=offset):
                if (upload := self._uploads.get(transfer)) is not None:
                    upload.acked(offset)
            case tm.Cut(transfer=transfer, reason=reason):
                if (upload := self._uploads.get(transfer)) is not None:
                    upload.stop(f"{CUT_BY_HOST}{reason}")

    def _serve(self, serve: tm.Serve) -> None:
        if len(self._uploads) >= tm.MAX_UPLOADS_PER_MEMBER:
            why = f"{self._user} serves {len(self._uploads)} transfers already"
            self._unheld(serve, why, 0)
            return
        upload = _Upload(self, serve)
        self._uploads[serve.transfer] = upload
        upload.task = asyncio.create_task(upload.run())
        upload.task.add_done_callback(lambda _: self._uploads.pop(serve.transfer, None))

    # -- for _Upload ----------------------------------------------------------------------------

    def send(self, frame: bytes) -> bool:
        """Send ``frame``; False when there is no connection to send it on."""
        if self._send is None:
            return False
        self._send(frame)
        return True

    def _unheld(self, serve: tm.Serve, why: str, sent: int) -> None:
        self.send(pr.encode(tm.Unheld(transfer=serve.transfer, reason=ev.clip(why))))
        self.served(serve, sent, "unheld", why)

    def served(self, serve: tm.Serve, sent: int, outcome: str, why: str) -> None:
        """Record this member's ``transfer_served`` event."""
        self._record(
            ev.TransferServed(
                at=self._clock(), user_id=self._user, piece=serve.piece,
                requester=serve.requester, form=serve.form, offset=serve.offset, bytes=sent,
                outcome=outcome, reason=ev.clip(why),
            )
        )  # fmt: skip

    @property
    def upload_limit(self) -> float | None:
        """Bytes a second this member serves at most, over all uploads (None: no limit)."""
        return self._limit

    def stream_of(self, key: str, form: str) -> _Stream:
        """What serving ``key`` in ``form`` sends, verified now (blocking: run it on a worker
        thread); :class:`_Unheld` when this member cannot serve it."""
        pinned = self._room.content.get(key)
        piece = self._config.piece(key)
        if pinned is None or piece is None:
            raise _Unheld(f"{key} is not a piece of room {self._room.room_id}")
        if form == "archive":
            if pinned.archive is None or piece.sha256 != pinned.sha256:
                raise _Unheld(f"{key} has no archive pinned")
            return self._archive(key, piece)
        if pinned.folder is None or piece.folder_sha256 != pinned.folder_sha256:
            raise _Unheld(f"{key} has no folder pinned")
        return self._folder(key, piece)

    def _archive(self, key: str, piece: Piece) -> _Stream:
        assert piece.archive is not None
        sha256, size = piece.archive
        candidates = [kept_archive(self._cache, sha256)]
        if piece.unpack == "none":
            name = piece_file_name(key, piece)
            candidates.insert(0, self._cache.folder(key, piece) / name)
            if key in self._engine:
                candidates.append(self._engine[key] / name)
        problems = []
        for path in candidates:
            unchanged = verified_unchanged(self._cache, sha256, path)
            problem = None if unchanged else _file_problem(path, sha256, size)
            if problem is None:
                return _Archive(path, size)
            problems.append(f"{path}: {problem}")
        raise _Unheld(f"{self._user} holds no verified archive of {key} ({'; '.join(problems)})")

    def _folder(self, key: str, piece: Piece) -> _Stream:
        assert piece.folder is not None
        candidates = [self._cache.folder(key, piece)]
        if key in self._engine:
            candidates.append(self._engine[key])
        problems = []
        for folder in candidates:
            try:
                return encode_folder_stream(folder, *piece.folder)
            except FolderChanged as error:
                problems.append(str(error))
        raise _Unheld(f"{self._user} holds no verified folder of {key} ({'; '.join(problems)})")


class _Upload:
    """One transfer this member serves."""

    def __init__(self, server: PieceServer, serve: tm.Serve) -> None:
        self._server = server
        self._serve = serve
        self._acked = serve.offset
        self._sent = serve.offset
        self._moved = asyncio.Event()
        self._stopped: str | None = None
        self.task: asyncio.Task[None]

    def acked(self, offset: int) -> None:
        """The requester holds every byte before ``offset``."""
        self._acked = max(self._acked, offset)
        self._moved.set()

    def stop(self, why: str) -> None:
        """End the transfer early (a cut, the connection lost)."""
        self._stopped = why
        self._moved.set()

    async def run(self) -> None:
        """Verify, then send every byte from the asked offset within the window; ``end``."""
        serve, server = self._serve, self._server
        loop = asyncio.get_running_loop()
        try:
            stream = await loop.run_in_executor(None, server.stream_of, serve.piece, serve.form)
            if serve.offset > stream.length:
                raise _Unheld(f"offset {serve.offset} is past the {stream.length} bytes")
            chunks = stream.chunks(serve.offset)
            while batch := await loop.run_in_executor(None, _some, chunks):
                for payload in _frames(batch):
                    if not await self._window(len(payload)):
                        why = self._stopped or ""
                        server.served(serve, self._sent - serve.offset, self._ended(why), why)
                        return
                    server.send(pr.data_frame(serve.transfer, self._sent, payload))
                    self._sent += len(payload)
                    await self._pace(len(payload))
        except (_Unheld, FolderChanged, OSError) as error:
            server._unheld(serve, str(error), self._sent - serve.offset)
            return
        server.send(pr.encode(tm.End(transfer=serve.transfer)))
        server.served(serve, self._sent - serve.offset, "sent", "")

    def _ended(self, why: str) -> str:
        """``cancelled`` when the requester stopped the transfer (it cancelled, or asked for
        the piece again), ``cut`` for anything else (a side left, a broken window)."""
        requester = self._serve.requester
        asked = (f"{requester} cancelled it", f"{requester} asked for {self._serve.piece} again")
        return "cancelled" if why.removeprefix(CUT_BY_HOST).startswith(asked) else "cut"

    async def _window(self, count: int) -> bool:
        """Wait until ``count`` more bytes fit in the window; False once stopped."""
        while self._stopped is None and self._sent + count - self._acked > tm.TRANSFER_WINDOW_BYTES:
            self._moved.clear()
            await self._moved.wait()
        return self._stopped is None

    async def _pace(self, count: int) -> None:
        limit = self._server.upload_limit
        if limit is not None:
            await asyncio.sleep(count / limit)


def _some(chunks: Iterator[bytes]) -> list[bytes]:
    """The next few chunks of ``chunks`` (blocking reads: run on a worker thread)."""
    return list(itertools.islice(chunks, _READS_PER_HOP))


def _frames(batch: list[bytes]) -> Iterator[bytes]:
    """``batch`` cut into data frame payloads (only chunks longer than one are copied)."""
    for chunk in batch:
        if len(chunk) <= tm.MAX_CHUNK_BYTES:
            yield chunk
        else:
            for start in range(0, len(chunk), tm.MAX_CHUNK_BYTES):
                yield chunk[start : start + tm.MAX_CHUNK_BYTES]


def _file_problem(path: Path, sha256: str, size: int) -> str | None:
    """None when ``path`` is a regular file of ``size`` bytes hashing to ``sha256``."""
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if info.st_size != size:
            return f"{info.st_size} bytes, not {size}"
        digest = hashlib.sha256()
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb", buffering=0) as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        return "not there"
    except OSError as error:
        return f"cannot be read: {error.strerror}"
    if digest.hexdigest() != sha256:
        return f"its sha256 is {digest.hexdigest()}, not {sha256}"
    return None
