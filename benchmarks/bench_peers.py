"""A piece from a room member through a websocket host, against the same receiver downloading it
over HTTP from a loopback mirror, in one run.

    python benchmarks/bench_peers.py [--mib 256] [--repeat 2] [--profile FILE]

The room host (:class:`~matchlock.app.hosting.RoomHost` on ``ws://127.0.0.1``) runs in its own
process; so does the mirror (``bench_download``'s loopback file server, imported). The holder
(alice, who installed the piece from a local file first) and the receiver (bob, whose only
source is the room) run in this process. Printed, with the machine's load:

- MB/s of bob's transfer from alice (from bob's ``piece_started`` to his ``piece_finished``,
  both as the host stamped them), and of the same receiver downloading the same file from the
  mirror with :func:`matchlock.downloads.download`; their ratio (target at least 0.5x);
- the host's RSS before and after the transfer (it must stay flat in the piece's size: it
  buffers at most ``TRANSFER_WINDOW_BYTES`` per transfer), and its CPU time per MB relayed;
- the CPU time per MB of this process (holder and receiver) during the transfer, and of the
  receiver downloading over HTTP: steadier than rates on a shared machine.

Each figure is the best of ``--repeat`` runs, the two taking turns. ``--profile FILE`` runs
the host under cProfile and writes its stats to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from bench_download import start_server, write_random  # the loopback mirror, in its process

from matchlock.app.joining import join
from matchlock.core import events as ev
from matchlock.core.config import MatchLockConfig, PinnedPiece, parse_matchlock_config
from matchlock.downloads import download
from matchlock.tools.testing import insecure_key, signed_room

MIB = 1024 * 1024
HERE = Path(__file__).resolve()


def host_child(log_dir: str, port_file: str, profile: str) -> None:
    """Child process: a room host on ws://127.0.0.1:0; its URL goes to ``port_file``."""
    from matchlock.app.hosting import RoomHost
    from matchlock.transport.connect import listen

    async def run() -> None:
        host = RoomHost(Path(log_dir))
        await host.start()
        listener = await listen("ws://127.0.0.1:0", host)
        Path(port_file).write_text(listener.url)
        await asyncio.Event().wait()

    if profile:
        import cProfile
        import signal

        profiler = cProfile.Profile()

        def stop(signum: int, frame: object) -> None:
            profiler.disable()
            profiler.dump_stats(profile)
            os._exit(0)

        signal.signal(signal.SIGTERM, stop)
        profiler.enable()
    asyncio.run(run())


def start_host(work: Path, profile: str) -> tuple[subprocess.Popen[bytes], str]:
    """The host's process and its URL."""
    url_file = work / "host-url"
    command = [sys.executable, str(HERE), "--host-child", str(work / "host"), str(url_file)]
    process = subprocess.Popen([*command, profile])
    for _ in range(1000):
        if url_file.exists() and url_file.read_text():
            return process, url_file.read_text()
        time.sleep(0.01)
    process.kill()
    raise SystemExit("the room host did not start")


def lock(name: str, sha: str, size: int, urls: list[str]) -> MatchLockConfig:
    """A config of the one piece ``bench/<name>`` (a file, not unpacked) from ``urls``."""
    piece = {"sha256": sha, "size": size, "resolvables": [{"url": url} for url in urls]}
    return parse_matchlock_config(
        json.dumps({"collections": {"bench": {"mandatory": True, "pieces": {name: piece}}}})
    )


async def one_transfer(
    url: str, work: Path, run: int, piece: tuple[str, int, Path], host: psutil.Process
) -> dict[str, float]:
    """alice installs the piece (sha256, size, file) from its file, then bob gets it from her
    through the host."""
    sha, size, source = piece
    room = signed_room(
        f"peers-{run}", ("alice", "bob"), {"bench/big": PinnedPiece(sha256=sha, size=size)}
    )
    alice_done, finished = asyncio.Event(), asyncio.Event()
    stamps: dict[str, float] = {}

    def watch(event: ev.Event) -> None:
        if isinstance(event, ev.PieceFinished) and event.user_id == "alice":
            alice_done.set()
        if isinstance(event, ev.PieceStarted | ev.PieceFinished) and event.user_id == "bob":
            stamps[event.type] = event.at
            if isinstance(event, ev.PieceFinished):
                finished.set()

    common: dict[str, Any] = {"room": room, "deadline": 600, "retry_delay": 0.1}
    alice = asyncio.create_task(
        join(url, user_id="alice", key=insecure_key("alice"), dest=work / f"alice-{run}",
             config=lock("big", sha, size, [source.as_uri()]), on_event=watch, **common)
    )  # fmt: skip
    await alice_done.wait()
    rss_before, cpu_before = host.memory_info().rss, sum(host.cpu_times()[:2])
    members_before = sum(psutil.Process().cpu_times()[:2])
    bob = asyncio.create_task(
        join(url, user_id="bob", key=insecure_key("bob"), dest=work / f"bob-{run}",
             config=lock("big", sha, size, []), **common)
    )  # fmt: skip
    await finished.wait()
    cpu_after, rss_after = sum(host.cpu_times()[:2]), host.memory_info().rss
    members_after = sum(psutil.Process().cpu_times()[:2])
    await asyncio.gather(alice, bob)
    seconds = stamps["piece_finished"] - stamps["piece_started"]
    shutil.rmtree(work / f"bob-{run}")
    shutil.rmtree(work / f"alice-{run}")
    return {
        "mb_s": size / MIB / seconds,
        "rss_before": rss_before / MIB,
        "rss_after": rss_after / MIB,
        "cpu_per_mb_ms": (cpu_after - cpu_before) / (size / MIB) * 1000,
        "members_cpu_per_mb_ms": (members_after - members_before) / (size / MIB) * 1000,
    }


async def one_http(port: int, work: Path, run: int, sha: str, size: int) -> tuple[float, float]:
    """The same receiver downloading the file from the loopback mirror: MB/s, and its CPU
    milliseconds per MB."""
    config = lock("big", sha, size, [f"http://127.0.0.1:{port}/files/big.bin"])
    dest = work / f"http-{run}"
    cpu = sum(psutil.Process().cpu_times()[:2])
    started = time.perf_counter()
    await download(config, dest)
    seconds = time.perf_counter() - started
    cpu = sum(psutil.Process().cpu_times()[:2]) - cpu
    shutil.rmtree(dest)
    return size / MIB / seconds, cpu / (size / MIB) * 1000


async def compare(args: argparse.Namespace, work: Path) -> None:
    files = work / "files"
    files.mkdir()
    size = args.mib * MIB
    sha = write_random(files / "big.bin", size)
    mirror, port = start_server(files)
    host_process, url = start_host(work, args.profile)
    host = psutil.Process(host_process.pid)
    peers: list[dict[str, float]] = []
    http: list[tuple[float, float]] = []
    try:
        for run in range(args.repeat):
            os.sync()
            piece = (sha, size, files / "big.bin")
            peers.append(await one_transfer(url, work, run, piece, host))
            os.sync()
            http.append(await one_http(port, work, run, sha, size))
    finally:
        host_process.terminate()
        mirror.terminate()
        host_process.wait()
        mirror.wait()
    best = max(peers, key=lambda figures: figures["mb_s"])
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores)")
    print(f"piece: {args.mib} MiB, best of {args.repeat}")
    print(f"from a peer via a websocket host: {best['mb_s']:.0f} MB/s")
    best_http = max(rate for rate, _ in http)
    print(f"from a loopback HTTP mirror:      {best_http:.0f} MB/s")
    print(f"ratio peer/http: {best['mb_s'] / best_http:.2f}x (target >= 0.5x)")
    print(f"host RSS before/after: {best['rss_before']:.0f} / {best['rss_after']:.0f} MiB")
    print(f"host CPU per MB relayed: {min(p['cpu_per_mb_ms'] for p in peers):.2f} ms")
    members = min(p["members_cpu_per_mb_ms"] for p in peers)
    print(f"holder + receiver CPU per MB (one process): {members:.2f} ms")
    print(f"HTTP receiver CPU per MB: {min(cpu for _, cpu in http):.2f} ms")


def main() -> None:
    """Run the comparison (or, as a child, the host)."""
    if sys.argv[1:2] == ["--host-child"]:
        host_child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--profile", default="", help="write the host's cProfile stats here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    try:
        asyncio.run(compare(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
