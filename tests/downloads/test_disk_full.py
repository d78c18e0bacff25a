"""``matchlock download`` whose disk fails under it, for real: each piece fails with the disk's
error as its reason, the command exits 1 with every piece's reason and no traceback, nothing
half-written is installed, and the same command completes once there is room.

The disk fails through the process's file size limit (``RLIMIT_FSIZE``, ``SIGXFSZ`` ignored: a
write past it fails with ``EFBIG``, as one to a full disk fails with ``ENOSPC``), and, where the
tests run as root, on a real 1 MB tmpfs that fills."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.downloads.conftest import ContentServer, piece
from tests.downloads.test_cli import REPO, write_config

PIECE_BYTES = 600_000


def limited(size: int) -> Callable[[], None]:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


async def download(
    config: Path, dest: Path, preexec_fn: Callable[[], None] | None = None
) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "matchlock", "download", str(config), "--dest", str(dest),
        "--log", str(dest.parent / f"{dest.name}-{os.urandom(4).hex()}.log"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        preexec_fn=preexec_fn,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def write_pieces(server: ContentServer, folder: Path) -> Path:
    pieces = {}
    for name in ("kfm", "ryu", "dojo"):
        data = os.urandom(PIECE_BYTES)
        server.add(name, data)
        pieces[name] = piece(data, server.url("ok", name))
    return write_config(folder / "matchlock.json", {"chars": {"pieces": pieces}})


def assert_failed_cleanly(code: int, out: str, err: str, reason: str) -> None:
    """Exit 1, the disk's error as a piece's reason, and no traceback."""
    assert code == 1, (out, err)
    assert "Traceback" not in err and "never retrieved" not in err, err
    assert reason in said(out, err), (out, err)


def said(out: str, err: str) -> str:
    """What the command printed, its lines unwrapped (the terminal view wraps long reasons)."""
    return " ".join((out + err).split())


def installed(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if not p.name.startswith("."))


async def test_a_download_past_the_file_size_limit_fails_each_piece_then_completes(
    server: ContentServer, tmp_path: Path
) -> None:
    config = write_pieces(server, tmp_path)
    dest = tmp_path / "cache"
    code, out, err = await download(config, dest, limited(PIECE_BYTES // 2))
    # EFBIG from a buffered write; a direct write past the limit is refused as EINVAL
    assert_failed_cleanly(code, out, err, "local error while downloading")
    assert said(out, err).count("local error while downloading") >= 3, out  # each piece
    assert installed(dest) == [], "a piece was installed from a download the disk cut short"
    code, out, err = await download(config, dest)
    assert code == 0, (out, err)
    assert len(installed(dest)) == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
async def test_a_download_to_a_full_disk_fails_each_piece_then_completes(
    server: ContentServer, tmp_path: Path
) -> None:
    config = write_pieces(server, tmp_path)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        dest = small / "cache"
        code, out, err = await download(config, dest)
        assert_failed_cleanly(code, out, err, "No space left on device")
        assert len(installed(dest)) < 3
        subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)
        code, out, err = await download(config, dest)  # what did install is a verified hit
        assert code == 0, (out, err)
        assert len(installed(dest)) == 3
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


async def test_a_piece_of_many_batches_cut_by_the_disk_midway_installs_once_there_is_room(
    server: ContentServer, tmp_path: Path
) -> None:
    # Six batches: the disk refuses the third while the hash lane is a batch ahead of it.
    data = os.urandom(6 * 1024 * 1024)
    server.add("big", data)
    pieces = {"big": piece(data, server.url("ok", "big"))}
    config = write_config(tmp_path / "matchlock.json", {"stages": {"pieces": pieces}})
    dest = tmp_path / "cache"
    code, out, err = await download(config, dest, limited(len(data) // 2))
    assert_failed_cleanly(code, out, err, "local error while downloading")
    assert installed(dest) == []
    code, out, err = await download(config, dest)
    assert code == 0, (out, err)
    (folder,) = installed(dest)
    assert (dest / folder / "big").read_bytes() == data
