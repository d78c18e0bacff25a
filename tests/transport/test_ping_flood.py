"""A websocket peer that pings without reading, against a real ``matchlock serve``.

An outside tester found that a peer sending 125-byte pings nonstop and never reading the
pongs grew the host's memory by about 20 MB a second (``websockets`` queues a pong for each
ping, past the host's slow-consumer check), before it had even said hello. The host now drops
a connection that sends more than ``MAX_PINGS`` pings within ``PING_WINDOW`` seconds.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from matchlock.transport.ws import MAX_PINGS
from tests.transport.test_reset_peers import LOOPS, UPGRADE, stopped
from tests.transport.test_serve import join, start_serve

PING = bytes((0x89, 0x80 | 125)) + b"\0\0\0\0" + b"p" * 125  # masked, with a zero mask


def upgraded(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(UPGRADE)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing from here on
    return sock


def flood_until_dropped(port: int, pings: int) -> int:
    """Send up to ``pings`` pings without reading; how many went before the host dropped it."""
    with upgraded(port) as sock:
        for sent in range(pings):
            try:
                sock.sendall(PING)
            except OSError:  # reset: the host dropped the connection
                return sent
        sock.settimeout(5)
        try:  # the host closes it: what it sent ends, unread pongs and all
            while sock.recv(65536):
                pass
        except OSError:
            pass
        return pings


def pings_answered(port: int, pings: int) -> int:
    """Send ``pings`` pings, reading the pongs: how many pongs came back."""
    with upgraded(port) as sock:
        sock.sendall(PING * pings)
        wanted, got = pings * 127, b""
        while len(got) < wanted and (part := sock.recv(65536)):
            got += part
        return got.count(b"\x8a\x7d")


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_ping_flood_is_dropped_and_a_keepalive_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    monkeypatch.setenv("MATCHLOCK_UVLOOP", "1" if loop == "uvloop" else "0")
    process, url = await start_serve("--listen", "127.0.0.1:0", "--log-dir", str(tmp_path))
    port = int(url.rsplit(":", 1)[1])
    try:
        assert await asyncio.to_thread(pings_answered, port, MAX_PINGS) == MAX_PINGS
        await asyncio.to_thread(flood_until_dropped, port, 20_000)
        await join(url, "ann")  # the host goes on
    finally:
        text = await stopped(process)
    assert f"sent over {MAX_PINGS} pings in 10 s: disconnecting" in text
    assert "Traceback" not in text
