"""Transports by scheme: the registry refuses what it cannot serve, naming what it can, and a
transport added as one module plus one registration (``named_memory.py``) is reached through
``open_connection`` and ``listen`` and passes the whole contract suite."""

from __future__ import annotations

import pytest

from matchlock.core.errors import UsageError
from matchlock.transport import connect
from matchlock.transport.base import BadURLError, RoomURL
from matchlock.transport.connect import TRANSPORTS, listen, open_connection
from matchlock.transport.registry import Registry
from matchlock.transport.tcp import TCP, ConnectionHandler
from matchlock.transport.ws import WEBSOCKET
from tests.transport.contract import Accepting, Endpoint, TransportContract
from tests.transport.named_memory import NAMED_MEMORY
from tests.transport.test_contract import UrlEndpoint


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """The built-in transports and ``memory://``, as the registry ``open_connection`` and
    ``listen`` use for this test."""
    registry = Registry()
    for scheme in TRANSPORTS:
        registry.register(TRANSPORTS.transport(RoomURL.parse(f"{scheme}://")), scheme)
    registry.register(NAMED_MEMORY, "memory")
    monkeypatch.setattr(connect, "TRANSPORTS", registry)
    return registry


async def test_an_unknown_scheme_is_refused_naming_every_registered_one() -> None:
    with pytest.raises(BadURLError, match=r"scheme 'http'; use ws://, wss://, tcp:// or lan://"):
        await open_connection("http://127.0.0.1:80")
    with pytest.raises(BadURLError, match=r"no scheme; use ws://, wss://, tcp:// or lan://"):
        await listen("127.0.0.1:7500", Accepting())


@pytest.mark.usefixtures("registered")
async def test_a_registered_transport_is_named_and_reached_with_nothing_else_edited() -> None:
    with pytest.raises(BadURLError, match=r"tcp://, lan:// or memory://"):
        await open_connection("udp://127.0.0.1:7500")
    with pytest.raises(BadURLError, match="use memory://NAME"):
        await open_connection("memory://room/deeper")
    with pytest.raises(ConnectionRefusedError, match="nothing listens on memory://nobody"):
        await open_connection("memory://nobody")
    listener = await listen("memory://somebody", Accepting())
    try:
        assert listener.url == "memory://somebody"
        with pytest.raises(OSError, match="in use"):
            await listen("memory://somebody", Accepting())
    finally:
        await listener.close()


def test_a_scheme_has_one_transport() -> None:
    registry = Registry()
    registry.register(WEBSOCKET, "ws", "wss")
    with pytest.raises(UsageError, match="wss already have a transport"):
        registry.register(TCP, "tcp", "wss")
    assert list(registry) == ["ws", "wss"]
    assert "tcp" not in registry
    with pytest.raises(UsageError, match="at least one scheme"):
        registry.register(TCP)


def test_the_refusal_reads_well_for_one_scheme_and_for_none() -> None:
    registry = Registry()
    with pytest.raises(BadURLError, match="use a registered transport"):
        registry.transport(RoomURL.parse("tcp://127.0.0.1:1"))
    registry.register(TCP, "tcp")
    with pytest.raises(BadURLError, match=r"scheme 'ws'; use tcp://$"):
        registry.transport(RoomURL.parse("ws://127.0.0.1:1"))
    assert registry.transport(RoomURL.parse("tcp://127.0.0.1:1")) is TCP


class TestNamedMemory(TransportContract):
    """The example transport passes the contract through ``listen`` and ``open_connection``."""

    enforces_frame_limit = False
    networked = False

    @pytest.fixture(autouse=True)
    def _registered(self, registered: Registry) -> None:
        """Every test of this class runs with ``memory://`` registered."""

    async def start(self, handler: ConnectionHandler) -> Endpoint:
        listener = await listen("memory://contract", handler)
        return UrlEndpoint(listener, listener.url)
