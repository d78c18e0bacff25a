"""A real HTTP content mirror on 127.0.0.1, serving pieces from memory (the demo's, and the
base of the tests' misbehaving server).

Routes, each ``/ROUTE/NAME``: ``ok`` serves the blob (honouring ``Range: bytes=N-`` with 206),
``corrupt`` serves as many bytes, but different ones (a mirror that went bad). A subclass adds
routes by extending :meth:`Mirror.routes`. :meth:`Mirror.down_url` is the URL of a mirror that
is down: a port of 127.0.0.1 where nothing listens. Every request is logged in
:attr:`Mirror.requests`, and :meth:`Mirror.asked` filters that log.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

__all__ = ["Mirror", "Request", "Route", "range_start"]


@dataclass(frozen=True)
class Request:
    """One request the mirror received."""

    route: str
    name: str
    range: str | None


Route = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]
"""Answers one request for a blob (its bytes are given)."""


class Mirror:
    """See the module docs. ``url(route, name)`` builds a URL."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self.seen: dict[tuple[str, str], int] = {}  # (route, name) -> requests so far
        self._runner: web.AppRunner | None = None
        self.port = 0

    def add(self, name: str, data: bytes) -> None:
        """Serve ``data`` as blob ``name``."""
        self.blobs[name] = data

    def url(self, route: str, name: str) -> str:
        """The URL of blob ``name`` through ``route``."""
        return f"http://127.0.0.1:{self.port}/{route}/{name}"

    def asked(self, name: str | None = None) -> list[Request]:
        """The requests logged, only for blob ``name`` if given."""
        return [r for r in self.requests if name is None or r.name == name]

    @staticmethod
    def down_url(name: str) -> str:
        """A URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return f"http://127.0.0.1:{port}/ok/{name}"

    def routes(self) -> dict[str, Route]:
        """The routes by name; a subclass adds its own."""
        return {"ok": self.serve_ok, "corrupt": self.serve_corrupt}

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application()
        for route, answer in self.routes().items():
            app.router.add_get(f"/{route}/{{name}}", self._logged(route, answer))
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        """Shut down."""
        if self._runner is not None:
            await self._runner.cleanup()

    def _logged(
        self, route: str, answer: Route
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            self.requests.append(Request(route, name, request.headers.get("Range")))
            self.seen[route, name] = self.seen.get((route, name), 0) + 1
            if name not in self.blobs:
                raise web.HTTPNotFound()
            return await answer(request, self.blobs[name])

        return handle

    async def serve_ok(self, request: web.Request, data: bytes) -> web.StreamResponse:
        """The blob, or its tail from ``Range: bytes=N-`` (206)."""
        start = range_start(request)
        if start is None:
            return web.Response(body=data)
        if start >= len(data):
            return web.Response(status=416)
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        return web.Response(status=206, body=data[start:], headers=headers)

    async def serve_corrupt(self, request: web.Request, data: bytes) -> web.StreamResponse:
        """As many bytes as the blob, every one of them different."""
        return web.Response(body=bytes(b ^ 0x5A for b in data))


def range_start(request: web.Request) -> int | None:
    """The N of a ``Range: bytes=N-`` header, or None without one (or with another form)."""
    header = request.headers.get("Range", "")
    if not header.startswith("bytes=") or not header.endswith("-"):
        return None
    number = header[len("bytes=") : -1]
    return int(number) if number.isdigit() else None
