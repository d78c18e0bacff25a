"""A real ``matchlock serve`` whose disk fails under it: it stops with a clear error, having sent
nothing its logs may not hold, and a restart recovers the room from them.

The disk fails for real: the host process runs with the operating system's file size limit
(``RLIMIT_FSIZE``, its ``SIGXFSZ`` ignored), so the write that would take its room's log past
the limit fails with ``EFBIG``, as a write to a full disk fails with ``ENOSPC``; where the
tests run as root, a second case fills a real 1.2 MB tmpfs instead (its operator deletes a
file before the restart). A member floods progress
reports until the host closes its connection. Then: the host exited 2 with one line naming the
failure (no traceback), every event the member heard is in the host's log, in order (nothing
unsynced was sent), the log replays, and a host restarted on the same folder restores the
room and lets the member join again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from matchlock.core.client import ClientProtocol
from matchlock.core.events import Event, PieceProgress, PieceStarted
from matchlock.store.eventlog import read_events, replay_file
from matchlock.tools.testing import insecure_key, pinned, signed_room
from matchlock.transport import Connection, ConnectionClosed
from matchlock.transport.connect import open_connection
from tests.app.test_rooms_e2e import REPO
from tests.transport.test_serve import start_serve

ROOM = signed_room("disk-room", ["ann", "ben"], pinned({"chars/p": 1 << 40}))
LIMIT = (1 << 20) + (96 << 10)
"""The file size limit: the journal's first MiB of zeros fits, the room's log stops short of it
after some 350 events."""


def limited(size: int) -> Callable[[], None]:
    """A ``preexec_fn``: files of at most ``size`` bytes, and a write past it fails (``EFBIG``)
    rather than kill the process."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``folder`` (root only)."""
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


async def join(url: str, user: str) -> tuple[ClientProtocol, Connection, list[Event]]:
    member = ClientProtocol(ROOM, user, insecure_key(user))
    conn = await open_connection(url)
    conn.send_nowait(member.hello())
    heard: list[Event] = []
    async with asyncio.timeout(10):
        while member.phase != "joined":
            out = member.receive(await conn.recv())
            assert out.refused is None, out.refused
            heard += out.events
            for frame in out.sends:
                conn.send_nowait(frame)
    return member, conn, heard


async def flood_until_closed(member: ClientProtocol, conn: Connection) -> list[Event]:
    """Report progress as fast as the host relays it, until the host closes the connection;
    every event heard."""
    user, heard, done = member.user_id, [], 0
    conn.send_nowait(member.report(PieceStarted(at=0, user_id=user, piece="chars/p")))
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(30):
            while True:
                for _ in range(5):
                    done += 1
                    step = PieceProgress(at=0, user_id=user, piece="chars/p", done=done)
                    conn.send_nowait(member.report(step))
                out = member.receive(await conn.recv())
                heard += out.events
    return heard


async def fail_and_recover(
    log_dir: Path,
    free: Callable[[], None] = lambda: None,
    preexec_fn: Callable[[], None] | None = None,
) -> None:
    """Run a host in ``log_dir`` (``preexec_fn`` run in its process first) until its disk fails,
    check what it said and kept, ``free`` space as its operator would, and restart it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "matchlock", "serve", "--listen", "127.0.0.1:0",
        "--log-dir", str(log_dir), "--journal-size", "8192",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=preexec_fn,
    )  # fmt: skip
    assert process.stdout is not None
    async with asyncio.timeout(10):
        url = (await process.stdout.readline()).decode().strip()
    member, conn, heard = await join(url, "ann")
    heard += await flood_until_closed(member, conn)
    async with asyncio.timeout(20):
        _, stderr = await process.communicate()
    printed = stderr.decode()
    assert process.returncode == 2, printed
    assert "could not write its logs" in printed, printed
    assert "Traceback" not in printed, printed
    logged = read_events(log_dir / "disk-room.log").events
    assert len(heard) > 20, "the member heard the room before the disk failed"
    assert heard == logged[: len(heard)], "a member heard an event the host's log lacks"

    free()
    restarted, url = await start_serve("--listen", "127.0.0.1:0", "--log-dir", str(log_dir))
    try:
        member, conn, _ = await join(url, "ann")
        assert member.room.members["ann"].pieces["chars/p"].done > 0
        await conn.close()
    finally:
        restarted.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, stderr = await restarted.communicate()
    assert "1 restored" in stderr.decode(), stderr.decode()
    replay_file(log_dir / "disk-room.log")


async def test_a_host_past_its_file_size_limit_stops_and_a_restart_recovers(
    tmp_path: Path,
) -> None:
    await fail_and_recover(tmp_path, preexec_fn=limited(LIMIT))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
async def test_a_host_whose_disk_fills_stops_and_a_restart_recovers(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "1200k") as folder:
        filler = folder / "filler"  # what the operator deletes once the host has stopped
        filler.write_bytes(bytes(64 << 10))
        await fail_and_recover(folder, free=filler.unlink)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
async def test_the_demo_on_a_full_disk_stops_with_its_host_error(tmp_path: Path) -> None:
    """The demo hosts its room in its own process: its members are not left retrying a host
    that stopped, the command ends with the host's error."""
    with small_tmpfs(tmp_path / "small", "1100k") as folder:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "matchlock", "demo", "--keep", str(folder / "demo"),
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(60):
            _, stderr = await process.communicate()
    printed = stderr.decode()
    assert process.returncode == 2, printed
    assert "matchlock: the room host could not write its logs" in printed, printed
    assert "No space left on device" in printed and "Traceback" not in printed, printed
