"""A real HTTP server on 127.0.0.1 for the download tests, and helpers to describe pieces.

:class:`ContentServer` serves named blobs through routes that misbehave on purpose, and logs
every request it receives (route, blob, Range header) so tests can assert on what was asked:

==================  ===========================================================================
``/ok/N``           the blob, honouring ``Range: bytes=N-`` with 206
``/norange/N``      the blob, always whole with 200 (Range ignored)
``/missing/N``      404
``/gone/N``         410
``/forbidden/N``    403
``/unavailable/N``  503 on the first request for N, then as ``/ok``
``/cut/N``          the first request for N sends half the body then resets; then as ``/ok``
``/cut-norange/N``  the same cut, then as ``/norange``
``/cut-badrange/N`` the same cut, then wrong bytes for a Range request, the blob without one
``/wrong/N``        as many bytes as the blob, but different ones
``/toomany/N``      chunked, the blob followed by 1,000 extra bytes
``/toolong/N``      announces a Content-Length 1,000 bytes larger than the blob
``/stall/N``        half the body, then silence until the client gives up
``/slow/N``         the blob in 64 KiB steps 20 ms apart, honouring Range (for kill tests)
``/redirect/N``     302 to ``/ok/N``
``/to-file/N``      302 to ``file:///etc/passwd``
``/elsewhere/N``    302 to the URL in its ``to`` query parameter
==================  ===========================================================================
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from matchlock.core.config import MatchLockConfig, parse_matchlock_config
from matchlock.downloads import FetchPolicy
from matchlock.tools.demo.mirror import Mirror, Route, range_start

FAST_POLICY = FetchPolicy(attempts=3, backoff=0.01, backoff_max=0.05, read_timeout=0.5)
"""Retries without waiting, and a stall detected within half a second."""


class ContentServer(Mirror):
    """See the module docs: the demo's :class:`~matchlock.tools.demo.mirror.Mirror` and its request
    log, with routes that misbehave on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self._closing = asyncio.Event()

    async def stop(self) -> None:
        """Wake stalled handlers and shut down."""
        self._closing.set()
        await super().stop()

    def routes(self) -> dict[str, Route]:
        """The mirror's routes and the misbehaving ones."""
        return {
            **super().routes(),
            "norange": self._norange,
            "missing": self._missing,
            "gone": self._gone,
            "forbidden": self._forbidden,
            "unavailable": self._unavailable,
            "cut": self._cut,
            "cut-norange": self._cut_norange,
            "cut-badrange": self._cut_badrange,
            "wrong": self._wrong,
            "toomany": self._toomany,
            "toolong": self._toolong,
            "stall": self._stall,
            "slow": self._slow,
            "redirect": self._redirect,
            "to-file": self._to_file,
            "elsewhere": self._elsewhere,
        }

    def _first(self, request: web.Request, route: str) -> bool:
        return self.seen[route, request.match_info["name"]] == 1

    async def _norange(self, request: web.Request, data: bytes) -> web.StreamResponse:
        return web.Response(body=data)

    async def _missing(self, request: web.Request, data: bytes) -> web.StreamResponse:
        return web.Response(status=404)

    async def _gone(self, request: web.Request, data: bytes) -> web.StreamResponse:
        return web.Response(status=410)

    async def _forbidden(self, request: web.Request, data: bytes) -> web.StreamResponse:
        return web.Response(status=403)

    async def _unavailable(self, request: web.Request, data: bytes) -> web.StreamResponse:
        if self._first(request, "unavailable"):
            return web.Response(status=503)
        return await self.serve_ok(request, data)

    async def _send_half_then_reset(self, request: web.Request, data: bytes) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        assert request.transport is not None
        request.transport.abort()
        return response

    async def _cut(self, request: web.Request, data: bytes) -> web.StreamResponse:
        if self._first(request, "cut"):
            return await self._send_half_then_reset(request, data)
        return await self.serve_ok(request, data)

    async def _cut_norange(self, request: web.Request, data: bytes) -> web.StreamResponse:
        if self._first(request, "cut-norange"):
            return await self._send_half_then_reset(request, data)
        return web.Response(body=data)

    async def _cut_badrange(self, request: web.Request, data: bytes) -> web.StreamResponse:
        if self._first(request, "cut-badrange"):
            return await self._send_half_then_reset(request, data)
        if range_start(request) is None:
            return web.Response(body=data)
        return await self.serve_ok(request, bytes(b ^ 0x5A for b in data))

    async def _wrong(self, request: web.Request, data: bytes) -> web.StreamResponse:
        return web.Response(body=bytes(b ^ 0x5A for b in data))

    async def _toomany(self, request: web.Request, data: bytes) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(data)
        await response.write(b"\0" * 1000)
        await response.write_eof()
        return response

    async def _toolong(self, request: web.Request, data: bytes) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(data) + 1000
        await response.prepare(request)
        await response.write(data[:100])
        return response

    async def _stall(self, request: web.Request, data: bytes) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        await asyncio.wait_for(self._closing.wait(), timeout=30)
        return response

    async def _slow(self, request: web.Request, data: bytes) -> web.StreamResponse:
        start = range_start(request) or 0
        response = web.StreamResponse(status=206 if start else 200)
        response.content_length = len(data) - start
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await response.prepare(request)
        for offset in range(start, len(data), 64 * 1024):
            await response.write(data[offset : offset + 64 * 1024])
            await asyncio.sleep(0.02)
        return response

    async def _redirect(self, request: web.Request, data: bytes) -> web.StreamResponse:
        raise web.HTTPFound(f"/ok/{request.match_info['name']}")

    async def _to_file(self, request: web.Request, data: bytes) -> web.StreamResponse:
        raise web.HTTPFound("file:///etc/passwd")

    async def _elsewhere(self, request: web.Request, data: bytes) -> web.StreamResponse:
        raise web.HTTPFound(request.query["to"])


@pytest.fixture
async def server() -> AsyncIterator[ContentServer]:
    """A started :class:`ContentServer`, stopped after the test."""
    content = ContentServer()
    await content.start()
    try:
        yield content
    finally:
        await content.stop()


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def piece(data: bytes, *urls: str, **fields: Any) -> dict[str, Any]:
    """A piece's JSON for ``data`` with these resolvables (extra fields: unpack, filename...)."""
    return {
        "sha256": sha256(data),
        "size": len(data),
        "resolvables": [{"url": url} for url in urls],
        **fields,
    }


def config(collections: dict[str, dict[str, Any]]) -> MatchLockConfig:
    """A match-lock config from ``{collection: {"mandatory": ..., "pieces": {...}}}``."""
    return parse_matchlock_config(json.dumps({"collections": collections}))


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A zip archive holding ``files`` (name -> content), deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    """A tar archive (gzip by default) holding ``files`` as regular files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
