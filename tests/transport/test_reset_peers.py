"""Peers that reset their connection at once, against a real ``matchlock serve`` on each loop.

An outside tester found that on uvloop a direct TCP peer that sent a bad hello and reset the
connection (``SO_LINGER`` 0) before the host's refusal left stopped the host from sending
anything to anyone, for good, with nothing printed: uvloop's transport raises ``ValueError``
for its peer's address once its socket is closed, and the host asked for it to name the closed
connection in an error. Bytes with no newline then a reset printed a traceback per connection
("Task exception was never retrieved"). Both loops are run here, as users run both
(``matchlock[speed]`` installs uvloop and every command then runs on it).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
from pathlib import Path

import pytest

from tests.transport.test_serve import join, start_serve

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
BAD_HELLO = b'{"type":"hello"}'
LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("uvloop"), reason="uvloop is not installed"
))]  # fmt: skip


def reset_after(port: int, transport: str, payload: bytes) -> None:
    """Connect, send ``payload`` (as a frame over ``ws``, raw over ``tcp``), reset at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if transport == "ws":
            sock.sendall(UPGRADE)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(4096)
            sock.sendall(bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
        else:
            sock.sendall(payload)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_peers_that_reset_at_once_leave_the_host_serving_and_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str, loop: str
) -> None:
    monkeypatch.setenv("MATCHLOCK_UVLOOP", "1" if loop == "uvloop" else "0")
    process, url = await start_serve(
        "--listen", "127.0.0.1:0", "--log-dir", str(tmp_path), "--transport", transport
    )  # fmt: skip
    port = int(url.rsplit(":", 1)[1])
    payloads = [BAD_HELLO + b"\n", BAD_HELLO, b'{"type":"hel']  # answered; no newline; half
    try:
        for user in ("ann", "ben"):
            for _ in range(5):
                for payload in payloads:
                    await asyncio.to_thread(reset_after, port, transport, payload)
            await join(url, user)  # the host still answers, and relays a join
    finally:
        text = await stopped(process)
    assert "Traceback" not in text and "never retrieved" not in text, text


async def stopped(process: asyncio.subprocess.Process) -> str:
    """Stop a ``matchlock serve`` with SIGTERM; its stderr, once it has exited 0."""
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        _, stderr = await process.communicate()
    text = stderr.decode()
    assert process.returncode == 0, text
    return text
