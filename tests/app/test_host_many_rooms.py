"""A real ``matchlock serve`` whose open files run out as anyone opens room after room.

An outside tester stopped a websocket host for good by opening about 1,000 rooms of their own
(a room config signed by keys inside it is anyone's to make): each room's log file stayed open
until the room ended, and the refused ``open`` of the next room's log failed the host
(``HostFailedError``). Now a room's log file is open only while somebody is in the room; a host
whose limit on open files cannot hold two for each connection it may take lowers its
``--max-connections`` to fit, and says so; and a new room whose log cannot be opened anyway is
forgotten before anyone heard of it, its member closed, while the host goes on.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from matchlock.app.hosting import RoomHost
from matchlock.cli.open_files import FILES_KEPT
from matchlock.core.client import ClientProtocol
from matchlock.store.files import FileStore
from matchlock.tools.testing import insecure_key, pinned, signed_room
from matchlock.transport import Connection
from matchlock.transport.connect import open_connection
from matchlock.transport.memory import memory_connector
from tests.transport.test_reset_peers import LOOPS, stopped

REPO = Path(__file__).resolve().parents[2]
FILES = 64


async def start_serve_limited(log_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FILES, FILES))

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "matchlock", "serve", "--listen", "127.0.0.1:0",
        "--log-dir", str(log_dir), "--max-connections-per-address", "512",
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, preexec_fn=limited,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(10):
        url = (await process.stdout.readline()).decode().strip()
    return process, url


async def joined(
    url: str, room: int, connect: Callable[[str], Awaitable[Connection]] = open_connection
) -> Connection | None:
    """A member in a room of its own, connected; None when the host closed it or never answered."""
    config = signed_room(f"r{room}", ["ann"], pinned({"chars/kfm": 10}))
    member = ClientProtocol(config, "ann", insecure_key("ann"))
    try:
        async with asyncio.timeout(3):
            conn = await connect(url)
            conn.send_nowait(member.hello())
            while member.phase != "joined":
                for frame in member.receive(await conn.recv()).sends:
                    conn.send_nowait(frame)
    except Exception:  # refused, closed or never answered
        return None
    return conn


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
@pytest.mark.parametrize("loop", LOOPS)
async def test_a_host_out_of_descriptors_refuses_new_rooms_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    monkeypatch.setenv("MATCHLOCK_UVLOOP", "1" if loop == "uvloop" else "0")
    process, url = await start_serve_limited(tmp_path)
    members: list[Connection] = []
    try:
        for room in range(FILES):  # each holds a socket and a log file: some must be refused
            conn = await joined(url, room)
            if conn is None:
                break
            members.append(conn)
        assert len(members) == (FILES - FILES_KEPT) // 2  # the connections that fit
        assert process.returncode is None
        for conn in members:  # they leave: their rooms' log files close
            await conn.close()
        async with asyncio.timeout(10):
            while open_files(process.pid) > FILES // 2:
                await asyncio.sleep(0.05)
        again = [await joined(url, FILES + room) for room in range(len(members))]
        assert all(conn is not None for conn in again)  # new rooms, as many again
        for conn in again:
            assert conn is not None
            await conn.close()
    finally:
        text = await stopped(process)
    assert "so it stopped" not in text, text
    assert f"--max-connections lowered from 512 to {len(members)}" in text, text
    assert f"the cap (--max-connections) is {len(members)}" in text, text
    assert "Traceback" not in text, text


async def test_a_new_room_whose_log_cannot_be_opened_is_refused_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = FileStore.open_now

    def out_of_files(store: FileStore) -> None:  # what os.open raises past the limit
        if store.path.name == "r0.log":
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        opened(store)

    monkeypatch.setattr(FileStore, "open_now", out_of_files)
    host = RoomHost(tmp_path)
    await host.start()
    try:
        connect = memory_connector(host)
        assert await joined("memory://", 0, connect) is None
        assert "r0" not in host.core.rooms and "r0" not in host.logs
        assert not (tmp_path / "r0.log").exists()
        assert await joined("memory://", 1, connect) is not None  # the host goes on
        assert host.failure is None
    finally:
        await host.stop()
