"""A real HTTP content mirror on 127.0.0.1, serving pieces from memory (for the demo and tests).

Routes: ``/ok/NAME`` serves the blob (honouring ``Range: bytes=N-`` with 206), ``/corrupt/NAME``
serves as many bytes, but different ones (a mirror that went bad). :meth:`Mirror.down_url` is
the URL of a mirror that is down: a port of 127.0.0.1 where nothing listens. Every request is
logged in :attr:`Mirror.requests`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["Mirror", "Request"]


@dataclass(frozen=True)
class Request:
    """One request the mirror received."""

    route: str
    name: str
    range: str | None


class Mirror:
    """See the module docs. ``url(route, name)`` builds a URL."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    def add(self, name: str, data: bytes) -> None:
        """Serve ``data`` as blob ``name``."""
        self.blobs[name] = data

    def url(self, route: str, name: str) -> str:
        """The URL of blob ``name`` through ``route``."""
        return f"http://127.0.0.1:{self.port}/{route}/{name}"

    @staticmethod
    def down_url(name: str) -> str:
        """A URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return f"http://127.0.0.1:{port}/ok/{name}"

    def routes(self) -> dict[str, web.RouteDef]:
        """The routes by name; a subclass adds its own."""
        return {
            "ok": web.get("/ok/{name}", self._ok),
            "corrupt": web.get("/corrupt/{name}", self._corrupt),
        }

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application(middlewares=[self._log])
        app.add_routes(self.routes().values())
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

    @web.middleware
    async def _log(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.path.split("/")[1] if request.path.count("/") >= 2 else ""
        name = request.match_info.get("name", "")
        self.requests.append(Request(route, name, request.headers.get("Range")))
        if name not in self.blobs:
            raise web.HTTPNotFound()
        response: web.StreamResponse = await handler(request)
        return response

    async def _ok(self, request: web.Request) -> web.StreamResponse:
        data = self.blobs[request.match_info["name"]]
        start = range_start(request)
        if start is None:
            return web.Response(body=data)
        if start >= len(data):
            return web.Response(status=416)
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        return web.Response(status=206, body=data[start:], headers=headers)

    async def _corrupt(self, request: web.Request) -> web.StreamResponse:
        data = self.blobs[request.match_info["name"]]
        return web.Response(body=bytes(b ^ 0x5A for b in data))


def range_start(request: web.Request) -> int | None:
    """The N of a ``Range: bytes=N-`` header, or None without one (or with another form)."""
    header = request.headers.get("Range", "")
    if not header.startswith("bytes=") or not header.endswith("-"):
        return None
    number = header[len("bytes=") : -1]
    return int(number) if number.isdigit() else None
