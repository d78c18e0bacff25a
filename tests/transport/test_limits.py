"""Timeouts and connection limits against real servers on 127.0.0.1, beyond the contract:
a hundred raw connections that say nothing or half a frame, a member process stopped with a real
SIGSTOP, and the numbers themselves."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from matchlock.app.configfile import write_room_config
from matchlock.app.hosting import RoomHost
from matchlock.app.keys import save_keypair
from matchlock.core.config import PinnedPiece
from matchlock.core.errors import UsageError
from matchlock.store.eventlog import replay_file
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport.connect import Listener, listen
from matchlock.transport.limits import ConnectionLimiter, Limits, address_of
from tests.app.room_content import DOJO, KFM, content
from tests.downloads.conftest import ContentServer, sha256
from tests.transport.test_contract import UPGRADE

REPO = Path(__file__).resolve().parents[2]
HALF_A_HELLO = b'{"type":"hello","protocol":1,"room":{"room_id":"r'
HALF_A_WS_FRAME = b"\x81\xfe\x04\x00" + b"\x00" * 4 + b'{"type":"hel'
"""A masked text frame announcing 1,024 bytes, of which 16 follow."""


def test_limits_refuse_what_cannot_be_meant() -> None:
    for bad in (
        {"handshake_timeout": 0},
        {"idle_timeout": -1},
        {"idle_timeout": float("nan")},
        {"max_connections": 0},
        {"max_connections_per_address": 0},
    ):
        with pytest.raises(UsageError, match=next(iter(bad))):
            Limits(**bad)


def test_keepalives_leave_most_of_the_idle_timeout_for_the_answer() -> None:
    assert Limits(idle_timeout=0.6).keepalive_interval == pytest.approx(0.2)
    assert Limits(idle_timeout=600).keepalive_interval == 15  # at most KEEPALIVE_INTERVAL


def test_the_per_address_cap_counts_one_host_whatever_its_port_or_form() -> None:
    assert address_of(("127.0.0.1", 5000)) == "127.0.0.1"
    assert address_of(("::ffff:10.0.0.7", 5000, 0, 0)) == "10.0.0.7"
    assert address_of(("fe80::1%eth0", 5000, 0, 2)) == "fe80::1"
    assert address_of(None) == "an unknown address"  # a socket reset before it was accepted
    limiter = ConnectionLimiter(Limits(max_connections_per_address=1))
    assert limiter.admit(("10.0.0.7", 1)) == "10.0.0.7"
    assert limiter.admit(("::ffff:10.0.0.7", 2, 0, 0)) is None
    assert limiter.admit(("10.0.0.8", 1)) == "10.0.0.8"
    limiter.release("10.0.0.7")
    assert limiter.admit(("10.0.0.7", 3)) == "10.0.0.7"
    assert limiter.open_connections == 2


def test_a_flood_of_refusals_is_counted_but_logged_sparingly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = ConnectionLimiter(Limits(max_connections=1))
    limiter.admit(("10.0.0.1", 1))
    with caplog.at_level(logging.WARNING, logger="matchlock.transport.limits"):
        for port in range(100):
            assert limiter.admit(("10.0.0.2", port)) is None
    assert limiter.counts == {"refused_max_connections": 100}
    assert len(caplog.records) == 7  # the 1st, 2nd, 4th, ... 64th
    assert "--max-connections" in caplog.records[0].getMessage()


@asynccontextmanager
async def hosting(
    folder: Path, transport: str, limits: Limits
) -> AsyncIterator[tuple[RoomHost, Listener]]:
    host = RoomHost(folder, limits=limits)
    await host.start()
    listener = await listen(f"{transport}://127.0.0.1:0", host)
    try:
        yield host, listener
    finally:
        await listener.close()
        await host.stop()


async def until_closed(reader: asyncio.StreamReader) -> None:
    """Read (and drop) whatever the host sends until it closes the connection."""
    async with asyncio.timeout(30):
        while await reader.read(1 << 16):
            pass


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_a_hundred_connections_saying_nothing_or_half_a_frame_are_all_closed(
    tmp_path: Path, transport: str
) -> None:
    limits = Limits(handshake_timeout=2, max_connections=500, max_connections_per_address=500)
    async with hosting(tmp_path, transport, limits) as (host, listener):
        address = listener.address
        streams = [await asyncio.open_connection(*address) for _ in range(100)]
        for number, (reader, writer) in enumerate(streams):
            if transport == "ws":
                writer.write(UPGRADE.format(host=address[0], port=address[1]).encode())
                await reader.readuntil(b"\r\n\r\n")
            if number % 2:
                writer.write(HALF_A_WS_FRAME if transport == "ws" else HALF_A_HELLO)
        await asyncio.gather(*(until_closed(reader) for reader, _ in streams))
        assert host.limiter.counts["handshake_timeout"] == 100
        for _, writer in streams:
            writer.close()
    assert list(tmp_path.rglob("*.log")) == []  # nothing reached any room


async def test_a_websocket_that_never_upgrades_is_closed_too(tmp_path: Path) -> None:
    async with hosting(tmp_path, "ws", Limits(handshake_timeout=0.5)) as (_, listener):
        reader, writer = await asyncio.open_connection(*listener.address)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the rest of the request
        await until_closed(reader)
        writer.close()


async def test_a_line_over_the_limit_is_cut_long_before_it_is_read_whole(tmp_path: Path) -> None:
    async with hosting(tmp_path, "tcp", Limits()) as (_, listener):
        _, writer = await asyncio.open_connection(*listener.address)
        chunk, written = b"x" * (1 << 20), 0
        with pytest.raises(ConnectionError):  # the host closes on it: the write breaks
            async with asyncio.timeout(30):
                while written < 64 * len(chunk):  # a 64 MiB line, were it all read
                    writer.write(chunk)
                    await writer.drain()
                    written += len(chunk)
        assert written < 64 * len(chunk)
        writer.close()


async def test_a_websocket_frame_over_the_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    async with hosting(tmp_path, "ws", Limits()) as (_, listener):
        host, port = listener.address
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(UPGRADE.format(host=host, port=port).encode())
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"\x81\xff" + (64 << 20).to_bytes(8, "big") + b"\x00" * 4)  # no payload
        async with asyncio.timeout(10):
            opcode, length = await reader.readexactly(2)
            payload = await reader.readexactly(length)
        assert opcode == 0x88  # a close frame (unmasked, from the server)...
        assert int.from_bytes(payload[:2], "big") == 1009  # ...message too big
        writer.close()


# -- a member process stopped by SIGSTOP ----------------------------------------------------------


def write_member_files(folder: Path, server: ContentServer) -> None:
    """alice's key, her match-lock config, and a room of alice and bob (who never comes, so the
    room stays open)."""
    save_keypair(insecure_key("alice"), folder / "alice.key")
    (folder / "matchlock.json").write_text(json.dumps({"collections": content(server, ("ok",))}))
    pinned = {
        "chars/kfm": PinnedPiece(sha256=sha256(KFM), size=len(KFM)),
        "stages/dojo": PinnedPiece(sha256=sha256(DOJO), size=len(DOJO)),
    }
    room = signed_room("stopped-room", ["alice", "bob"], pinned)
    write_room_config(room, folder / "room.json")


async def start_join(
    folder: Path, url: str, *more: str, stderr: int = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """``matchlock join URL`` as alice, with ``--json`` (stdout piped)."""
    args: tuple[str, ...] = ("--room", "room.json", "--user", "alice", "--key", "alice.key")
    args += ("--config", "matchlock.json", "--dest", "cache", "--json", *more)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "matchlock", "join", url, *args,
        cwd=folder, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=stderr,
    )  # fmt: skip


async def until_joined(process: asyncio.subprocess.Process) -> None:
    """Read the member's ``--json`` lines until it has joined and has every piece."""
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = json.loads(await process.stdout.readline())
            event = line.get("event", {})
            if event.get("type") == "member_done" and event.get("user_id") == "alice":
                return


def event_types(log: Path) -> list[str]:
    """The type of every event in ``log``, in order."""
    found: list[str] = []
    replay_file(log, on_event=lambda _, event: found.append(event.type))
    return found


async def until_recorded(log: Path, kind: str) -> None:
    """Wait until ``log`` holds an event of ``kind``."""
    async with asyncio.timeout(30):
        while kind not in event_types(log):
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_a_member_stopped_by_sigstop_is_dropped_after_the_idle_timeout(
    server: ContentServer, tmp_path: Path, transport: str
) -> None:
    write_member_files(tmp_path, server)
    limits = Limits(idle_timeout=1.5)  # keepalives every 0.5 s, answered within 1 s
    async with hosting(tmp_path / "host", transport, limits) as (_, listener):
        process = await start_join(tmp_path, listener.url)
        try:
            await until_joined(process)
            log = tmp_path / "host" / "stopped-room.log"
            await asyncio.sleep(3 * limits.idle_timeout)  # quiet and alive: kept by keepalives
            assert "member_disconnected" not in event_types(log)
            os.kill(process.pid, signal.SIGSTOP)
            await until_recorded(log, "member_disconnected")
        finally:
            process.kill()  # a stopped process is killed all the same
            await process.wait()
    assert replay_file(log).state.members["alice"].status == "disconnected"


async def test_join_host_applies_the_timeout_and_connection_flags(
    server: ContentServer, tmp_path: Path
) -> None:
    write_member_files(tmp_path, server)
    process = await start_join(
        tmp_path, "tcp://127.0.0.1:0", "--host", "--handshake-timeout", "0.5",
        "--max-connections-per-address", "2", stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        async with asyncio.timeout(30):
            banner = (await process.stderr.readline()).decode()
        url = banner.split(" at ")[-1].strip()
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        streams = [await asyncio.open_connection(host, int(port)) for _ in range(3)]
        async with asyncio.timeout(30):  # one refused at accept, two past their deadline
            assert [await reader.read() for reader, _ in streams] == [b""] * 3
        for _, writer in streams:
            writer.close()
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()
    log = stderr.decode()
    assert "the cap (--max-connections-per-address) is 2" in log
    assert "had not joined 0.5 s after connecting" in log
