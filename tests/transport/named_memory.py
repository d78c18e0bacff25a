"""The worked example of docs/adding-a-transport.md: ``memory://NAME``, a transport in one module.

A host listens on ``memory://NAME`` in this process; ``open_connection("memory://NAME")`` gives
a member a :func:`~matchlock.transport.memory.memory_pair` whose other end that host serves.
It is not registered in matchlock: ``test_registry.py`` registers it for its tests only, to show
that a transport is one module, one registration and one contract-suite subclass, with nothing
else edited. It never looks inside a frame.
"""

from __future__ import annotations

import asyncio
import errno

from matchlock.transport.base import ConnectionHandler, ConnectOptions, ListenOptions, RoomURL
from matchlock.transport.memory import MemoryConnection, memory_pair

__all__ = ["NAMED_MEMORY", "NamedListener", "NamedMemory"]


class NamedListener:
    """A host listening on ``memory://NAME``: it serves each connection made to the name."""

    def __init__(self, transport: NamedMemory, name: str, host: ConnectionHandler) -> None:
        self._transport = transport
        self._name = name
        self._host = host
        self._serving: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """``memory://NAME``."""
        return f"memory://{self._name}"

    @property
    def address(self) -> tuple[str, int]:
        """The name, and no port."""
        return self._name, 0

    def serve(self) -> MemoryConnection:
        """A new connection whose far end the host serves; the member's end."""
        member, served = memory_pair()
        task = asyncio.get_running_loop().create_task(self._host.handle(served))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        return member

    async def close(self) -> None:
        """Free the name and stop serving every connection."""
        self._transport.listeners.pop(self._name, None)
        for task in list(self._serving):
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)


class NamedMemory:
    """The transport: the listeners of this process, by name."""

    def __init__(self) -> None:
        self.listeners: dict[str, NamedListener] = {}

    async def connect(self, url: RoomURL, options: ConnectOptions) -> MemoryConnection:
        """A connection to the host listening on the URL's name; refused when none is."""
        listener = self.listeners.get(_name(url))
        if listener is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"nothing listens on {url.text}")
        return listener.serve()

    async def listen(
        self, url: RoomURL, host: ConnectionHandler, options: ListenOptions
    ) -> NamedListener:
        """Serve ``host`` on the URL's name; a name taken is in use, as a port would be."""
        name = _name(url)
        if name in self.listeners:
            raise OSError(errno.EADDRINUSE, f"{url.text} is in use")
        listener = self.listeners[name] = NamedListener(self, name, host)
        return listener


def _name(url: RoomURL) -> str:
    """NAME of ``memory://NAME``, nothing after it."""
    if not url.parts.netloc or url.parts.path not in ("", "/") or url.parts.query:
        raise url.bad("use memory://NAME")
    return url.parts.netloc


NAMED_MEMORY = NamedMemory()
"""The one instance, as a registry would hold it."""
