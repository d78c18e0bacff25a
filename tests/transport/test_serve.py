"""``matchlock serve`` as a subprocess: it prints its URL, hosts a room, stops on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from matchlock.cli.serve import limits_of, listen_address
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol
from matchlock.store.eventlog import replay_file
from matchlock.tools.testing import insecure_key, pinned, signed_room
from matchlock.transport import ConnectionClosed
from matchlock.transport.connect import open_connection
from matchlock.transport.limits import Limits

REPO = Path(__file__).resolve().parents[2]


async def start_serve(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Run ``matchlock serve ARGS``; returns the process and the URL it printed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "matchlock", "serve", *args,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(10):
        url = (await process.stdout.readline()).decode().strip()
    return process, url


async def join(url: str, user: str) -> ClientProtocol:
    """Join the room as ``user``; returns once the host relayed the join (connection open)."""
    config = signed_room("cli-room", ["ann", "ben"], pinned({"chars/kfm": 10}))
    member = ClientProtocol(config, user, insecure_key(user))
    conn = await open_connection(url)
    conn.send_nowait(member.hello())
    async with asyncio.timeout(5):
        while member.phase != "joined" or member.room.members[user].status != "connected":
            for frame in member.receive(await conn.recv()).sends:
                conn.send_nowait(frame)
    return member


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_serve_hosts_a_room_and_stops_on_sigterm(tmp_path: Path, transport: str) -> None:
    process, url = await start_serve(
        "--listen", "127.0.0.1:0", "--log-dir", str(tmp_path), "--transport", transport
    )
    try:
        assert url.startswith(f"{transport}://127.0.0.1:")
        assert not url.endswith(":0")
        await join(url, "ann")
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    state = replay_file(tmp_path / "cli-room.log").state
    assert state.status == "open"
    assert state.members["ann"].status == "disconnected"  # by the host, as it stopped


# Runs ``matchlock serve`` with a stdout that signals its own process the moment the URL is
# written: the earliest a supervisor (or a test) reading that line could stop the host.
SIGNAL_AS_URL_PRINTED = """
import os, signal, sys
from matchlock.cli import main

class SignalOnUrl:
    def __init__(self, out):
        self.out = out
    def write(self, text):
        written = self.out.write(text)
        if "://" in text:
            os.kill(os.getpid(), signal.{name})
        return written
    def __getattr__(self, name):
        return getattr(self.out, name)

sys.stdout = SignalOnUrl(sys.stdout)
sys.exit(main())
"""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
async def test_serve_stops_cleanly_on_a_signal_sent_as_it_prints_its_url(
    tmp_path: Path, loop: str, name: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MATCHLOCK_UVLOOP": str(int(loop == "uvloop"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SIGNAL_AS_URL_PRINTED.format(name=name), "serve",
        "--listen", "127.0.0.1:0", "--log-dir", str(tmp_path),
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(20):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()  # was -15: killed before it could stop
    assert stdout.decode().startswith("ws://127.0.0.1:")
    assert "Traceback" not in stderr.decode()


async def test_a_restarted_serve_rebuilds_its_rooms(tmp_path: Path) -> None:
    for _ in range(2):
        process, url = await start_serve("--listen", "127.0.0.1:0", "--log-dir", str(tmp_path))
        await join(url, "ben")
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, stderr = await process.communicate()
        assert process.returncode == 0
    assert "(1 restored)" in stderr.decode()
    state = replay_file(tmp_path / "cli-room.log").state
    assert [m.status for m in state.members.values()] == ["expected", "disconnected"]
    assert state.events == 5  # opened, joined, disconnected; joined again, disconnected


def test_listen_addresses() -> None:
    assert listen_address("127.0.0.1:7500") == ("127.0.0.1", 7500)
    assert listen_address("[::1]:0") == ("::1", 0)
    assert listen_address(":7500") == ("0.0.0.0", 7500)
    for bad in ("7500", "host:", "host:port", "host:70000"):
        with pytest.raises(argparse.ArgumentTypeError):
            listen_address(bad)


async def test_serve_applies_its_timeout_and_connection_flags(tmp_path: Path) -> None:
    process, url = await start_serve(
        "--listen", "127.0.0.1:0", "--log-dir", str(tmp_path), "--transport", "tcp",
        "--handshake-timeout", "0.5", "--max-connections", "1",
    )  # fmt: skip
    try:
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        (first, kept), (second, refused) = [
            await asyncio.open_connection(host, int(port)) for _ in range(2)
        ]
        async with asyncio.timeout(10):
            assert await second.read() == b""  # over --max-connections: closed unread
            assert await first.read() == b""  # silent past --handshake-timeout: closed
        for writer in (kept, refused):
            writer.close()
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, stderr = await process.communicate()
    assert process.returncode == 0
    assert "the cap (--max-connections) is 1" in stderr.decode()
    assert "had not joined 0.5 s after connecting" in stderr.decode()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["serve", "join"])
def test_the_timeout_and_connection_flags_refuse_nonsense(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from matchlock.cli import build_parser

    required = ["--listen", ":0", "--log-dir", "d"] if command == "serve" else ["tcp://h:1"]
    if command == "join":
        required += ["--room", "r", "--user", "u", "--key", "k", "--config", "c", "--dest", "d"]
    parser = build_parser(command)
    args = parser.parse_args([command, *required, "--idle-timeout", "2.5"])
    assert limits_of(args) == Limits(idle_timeout=2.5)  # the others at their defaults
    for flag, bad in [
        ("--handshake-timeout", "0"),
        ("--idle-timeout", "nan"),
        ("--max-connections", "0"),
        ("--max-connections-per-address", "many"),
    ]:
        with pytest.raises(SystemExit):
            parser.parse_args([command, *required, flag, bad])
        assert repr(bad) in capsys.readouterr().err


async def test_serve_refuses_a_room_bigger_than_its_room_flags(tmp_path: Path) -> None:
    process, url = await start_serve(
        "--listen", "127.0.0.1:0", "--log-dir", str(tmp_path), "--max-pieces-per-room", "1",
    )  # fmt: skip
    try:
        config = signed_room("big-room", ["ann"], pinned({"chars/a": 1, "chars/b": 1}))
        conn = await open_connection(url)
        conn.send_nowait(ClientProtocol(config, "ann", insecure_key("ann")).hello())
        async with asyncio.timeout(5):
            refused = pr.decode_host_message(await conn.recv())
        assert isinstance(refused, pr.Refused) and refused.code == "too-many-pieces"
        assert "pins 2 pieces; this host allows 1" in refused.reason
    finally:
        process.send_signal(signal.SIGTERM)
        await process.communicate()
    assert list(tmp_path.iterdir()) == []  # nothing opened


async def test_a_member_over_a_tcp_hosts_cap_is_told_what_that_may_mean(tmp_path: Path) -> None:
    process, url = await start_serve(
        "--listen", "127.0.0.1:0", "--log-dir", str(tmp_path), "--transport", "tcp",
        "--max-connections", "1",
    )  # fmt: skip
    try:
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        _, holder = await asyncio.open_connection(host, int(port))  # the one connection
        conn = await open_connection(url)
        with pytest.raises(ConnectionClosed, match=r"without sending a byte \(a host over"):
            async with asyncio.timeout(10):
                await conn.recv()
        holder.close()
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await process.communicate()
