"""The ``file`` resolver: a regular file on this machine, copied into the staging.

A ``file:`` URL names this machine (host empty or ``localhost``; a relative path is taken from
the working directory). Only a regular file is read (a FIFO or a device is :class:`Refused`
without blocking on it); one whose size is not the piece's is refused before a byte is copied
(:class:`TooLarge` when larger, :class:`Corrupt` when smaller), a missing one is
:class:`NotFound`, and one that grows while it is read is cut at the piece's size. Reads run on
the job's worker threads through the content's lock, so a cancelled copy ends its reads before
anything is closed. A file copy never resumes: it starts from zero each time.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit
from urllib.request import url2pathname

from matchlock.downloads.resolvers.base import (
    Corrupt,
    NotFound,
    Refused,
    Resolver,
    ResolverContext,
    SourceError,
    Staging,
    TooLarge,
    Wanted,
)
from matchlock.downloads.sink import BATCH_BYTES

__all__ = ["FileResolver", "open_file"]


@asynccontextmanager
async def open_file(context: ResolverContext) -> AsyncIterator[Resolver]:
    """The job's :class:`FileResolver` (it holds nothing open between pieces)."""
    yield FileResolver()


class FileResolver:
    """Copies ``file:`` resolvables. See the module docs."""

    def host(self, url: str) -> str | None:
        """None: a local file has no host that could be down."""
        return None

    async def fetch(self, url: str, wanted: Wanted, staging: Staging, *, resume: bool) -> None:
        """Copy the file ``url`` names into ``staging`` from byte 0 (``resume`` is ignored)."""
        path = _local_path(url)
        await staging.begin(resume=False)
        try:
            source = await staging.run(_open_regular, path)
        except FileNotFoundError:
            raise NotFound(f"cannot read {path}: No such file or directory") from None
        except OSError as error:
            raise SourceError(f"cannot read {path}: {error.strerror or error}") from None
        with source:
            size = os.fstat(source.fileno()).st_size
            if size != wanted.size:
                mismatch = f"{path} has {size} bytes; the piece has {wanted.size}"
                raise TooLarge(mismatch) if size > wanted.size else Corrupt(mismatch)
            while chunk := await self._read(staging, source, path):
                await staging.write([chunk])  # TooLarge should it grow while it is read

    @staticmethod
    async def _read(staging: Staging, source: BinaryIO, path: Path) -> bytes:
        try:
            return await staging.run(source.read, BATCH_BYTES)
        except OSError as error:
            raise SourceError(f"cannot read {path}: {error.strerror or error}") from None


def _local_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise Refused(f"a file URL must name this machine, not {parts.netloc!r}")
    return Path(url2pathname(parts.path))


def _open_regular(path: Path) -> BinaryIO:
    # O_NONBLOCK: opening a FIFO must not hang; it is refused just below anyway.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused(f"{path} is not a regular file")
    return open(fd, "rb", buffering=0)
