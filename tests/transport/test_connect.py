"""Room URLs: a URL that cannot be used fails with BadURLError before any socket opens."""

from __future__ import annotations

import socket

import pytest

from matchlock.core.errors import InputError
from matchlock.transport.connect import BadURLError, listen, open_connection
from matchlock.transport.lan import NoHostFound
from matchlock.transport.tcp import joinable_url
from tests.transport.contract import Accepting

BAD_URLS = {
    "http://127.0.0.1:80": "scheme 'http'",
    "127.0.0.1:7500": "no scheme",
    "localhost:7500": "scheme 'localhost'",
    "no-scheme": "no scheme",
    "tcp://127.0.0.1": "no port",
    "tcp://:7500": "no host",
    "tcp://127.0.0.1:70000": "out of range",
    "tcp://127.0.0.1:7500/room": "nothing may follow the port",
    "tcp://127.0.0.1:7500?x=1": "nothing may follow the port",
    "tcp://[::1:7500": "IPv6",
    "tcp://user:pw@127.0.0.1:7500": "no user name",
    "ws://": "no host",
    "ws://127.0.0.1:7500/#top": "#fragment",
    "lan://": "not a room id",
    "lan://bad room": "not a room id",
    "lan://..": "not a room id",
    "lan://room/deeper": "use lan://ROOM_ID",
    "lan://room?port=7500": "for hosting",
}


@pytest.mark.parametrize(("url", "reason"), BAD_URLS.items())
async def test_a_bad_url_is_refused_with_its_reason(url: str, reason: str) -> None:
    with pytest.raises(BadURLError, match=reason) as raised:
        await open_connection(url)
    assert raised.value.url == url
    assert isinstance(raised.value, InputError)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("wss://127.0.0.1:0", "TLS"),
        ("ws://127.0.0.1", "no port"),
        ("lan://room?port=x", "bad query"),
        ("lan://room?port=99999", "0-65535"),
        ("lan://room?colour=red", "unknown option"),
        ("udp://127.0.0.1:0", "scheme 'udp'"),
    ],
)
async def test_a_bad_url_to_listen_on_is_refused(url: str, reason: str) -> None:
    with pytest.raises(BadURLError, match=reason):
        await listen(url, Accepting())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("scheme", ["ws", "tcp"])
async def test_nobody_listening_is_an_os_error(scheme: str) -> None:
    with pytest.raises(OSError):
        await open_connection(f"{scheme}://127.0.0.1:{free_port()}")


async def test_nobody_hosting_a_lan_room_is_no_host_found() -> None:
    with pytest.raises(NoHostFound, match="'lonely'"):
        await open_connection(
            "lan://lonely",
            discovery_port=free_port(),
            discovery_address="127.0.0.1",
            discovery_timeout=0.2,
        )


def test_a_wildcard_address_is_shown_as_this_machines_name() -> None:
    assert joinable_url("ws", ("0.0.0.0", 7500)) == f"ws://{socket.gethostname()}:7500"
    assert joinable_url("tcp", ("::", 7500)) == f"tcp://{socket.gethostname()}:7500"
    assert joinable_url("tcp", ("::1", 7500)) == "tcp://[::1]:7500"
    assert joinable_url("ws", ("127.0.0.1", 80)) == "ws://127.0.0.1:80"
