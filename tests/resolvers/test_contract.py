"""Every resolver passes the contract in :mod:`tests.resolvers.contract`: http against the
download tests' real server on 127.0.0.1, file against real files (a folder, a FIFO)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from matchlock.downloads.resolvers import (
    Corrupt,
    HostUnreachable,
    NotFound,
    Refused,
    ResolveFailed,
    SourceError,
    TooLarge,
    Transient,
)
from tests.downloads.conftest import ContentServer
from tests.resolvers.contract import ResolverContract, Source


class HttpSource:
    """Blobs on the download tests' :class:`ContentServer`, through its misbehaving routes."""

    def __init__(self, server: ContentServer) -> None:
        self.server = server

    def serve(self, name: str, data: bytes) -> str:
        self.server.add(name, data)
        return self.server.url("ok", name)

    def missing(self, name: str) -> str:
        return self.server.url("missing", name)

    def failures(self, name: str, data: bytes) -> list[tuple[str, type[ResolveFailed]]]:
        self.server.add(name, data)
        url = self.server.url
        return [
            (self.server.down_url(name), HostUnreachable),
            (url("unavailable", name), Transient),
            (url("cut", name), Transient),
            (url("stall", name), Transient),
            (url("gone", name), NotFound),
            (url("forbidden", name), SourceError),
            (url("wrong", name), Corrupt),
            (url("toomany", name), TooLarge),
            (url("toolong", name), TooLarge),
            (url("to-file", name), Refused),
        ]


class TestHttpResolver(ResolverContract):
    scheme = "http"

    @pytest.fixture
    async def source(self) -> AsyncIterator[Source]:
        server = ContentServer()
        await server.start()
        try:
            yield HttpSource(server)
        finally:
            await server.stop()


class FileSource:
    """Real files in a folder of the test's own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()

    def serve(self, name: str, data: bytes) -> str:
        path = self.folder / name
        path.write_bytes(data)
        return path.as_uri()

    def missing(self, name: str) -> str:
        return (self.folder / name).as_uri()

    def failures(self, name: str, data: bytes) -> list[tuple[str, type[ResolveFailed]]]:
        fifo = self.folder / f"{name}.fifo"
        os.mkfifo(fifo)
        (self.folder / f"{name}.dir").mkdir()
        short = self.serve(f"{name}.short", data[:-1])
        return [
            (fifo.as_uri(), Refused),
            ((self.folder / f"{name}.dir").as_uri(), Refused),
            (f"file://elsewhere.example{self.folder}/{name}", Refused),
            (short, Corrupt),
            (self.serve(f"{name}.long", data + b"x"), TooLarge),
        ]


class TestFileResolver(ResolverContract):
    scheme = "file"

    @pytest.fixture
    def source(self, tmp_path: Path) -> Source:
        return FileSource(tmp_path / "files")
