"""A piece from a room member through a websocket host, against the same receiver downloading it
over HTTP from a loopback mirror, in one run.

    python benchmarks/bench_peers.py [--mib 256] [--repeat 2] [--profile FILE]

The room host (:class:`~matchlock.app.hosting.RoomHost` on ``ws://127.0.0.1``) runs in its own
process; so does the mirror (``bench_download``'s loopback file server, imported), and so does
the holder (alice, ``matchlock join`` as a player runs it, who installs the piece from a local
file first). The receiver (bob, whose only source is the room) runs in this process, and so
does its HTTP download. Both sources serve from the page cache (the holder's copy is read once
first: a download is written around it). Printed, with the machine's load:

- MB/s of bob's transfer from alice (from bob's ``piece_started`` to his ``piece_finished``,
  both as the host stamped them), and of the same receiver downloading the same file from the
  mirror with :func:`matchlock.downloads.download`; their ratio (target at least 0.5x);
- the host's RSS before and after the transfer (it must stay flat in the piece's size: it
  buffers at most ``TRANSFER_WINDOW_BYTES`` per transfer), and its CPU time per MB relayed;
- the CPU time per MB of the holder and of the receiver during the transfer, and of the
  receiver downloading over HTTP: steadier than rates on a shared machine.

Each figure is the best of ``--repeat`` runs, the two taking turns. ``--profile FILE`` runs
the host under cProfile and writes its stats to FILE. Every process runs as the command line
runs it (:mod:`matchlock.cli.loop`): on uvloop when it is installed (``MATCHLOCK_UVLOOP=0``:
asyncio's loop), with the allocator tuned (``MATCHLOCK_MALLOC=0``: glibc's defaults).
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
from matchlock.app.keys import save_keypair
from matchlock.cli.allocator import tune_allocator
from matchlock.cli.loop import loop_factory
from matchlock.cli.loop import run as run_loop
from matchlock.core import events as ev
from matchlock.core.config import MatchLockConfig, PinnedPiece, RoomConfig, parse_matchlock_config
from matchlock.downloads import download
from matchlock.store.eventlog import read_events
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
    run_loop(run())  # as `matchlock serve` runs it (the allocator tuned: matchlock.cli.allocator)


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


async def start_holder(work: Path, url: str, room: RoomConfig, piece: MatchLockConfig) -> Any:
    """alice, the holder, as a player runs her (``matchlock join``), in her own process."""
    folder = work / "alice"
    folder.mkdir()
    save_keypair(insecure_key("alice"), folder / "alice.key")
    (folder / "room.json").write_text(room.model_dump_json())
    (folder / "matchlock.json").write_text(piece.model_dump_json())
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "matchlock", "join", url, "--room", str(folder / "room.json"),
        "--user", "alice", "--key", str(folder / "alice.key"),
        "--config", str(folder / "matchlock.json"), "--dest", str(folder / "cache"),
        "--log", str(folder / "room.log"), "--deadline", "600", "--retry-delay", "0.1", "--json",
        stdout=asyncio.subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(HERE.parents[1])},
    )  # fmt: skip


def warm(cache: Path) -> None:
    """Read every piece file under ``cache`` once (its downloads were written around the page
    cache), so that holder and mirror both serve from memory."""
    for path in cache.glob("*-file-*/*"):
        with path.open("rb") as file:
            while file.read(8 * MIB):
                pass


def holds(log: Path) -> bool:
    """Whether alice's log says she finished the piece (and recorded it as verified)."""
    if not log.exists():
        return False
    events = read_events(log).events
    return any(isinstance(e, ev.PieceFinished) and e.user_id == "alice" for e in events)


async def one_transfer(
    url: str, work: Path, run: int, piece: tuple[str, int, Path], host: psutil.Process
) -> dict[str, float]:
    """alice installs the piece (sha256, size, file) from its file, then bob gets it from her
    through the host."""
    sha, size, source = piece
    pinned = {"bench/big": PinnedPiece(sha256=sha, size=size)}
    room = signed_room(f"peers-{run}", ("alice", "bob"), pinned)
    finished = asyncio.Event()
    stamps: dict[str, float] = {}

    def watch(event: ev.Event) -> None:
        if isinstance(event, ev.PieceStarted | ev.PieceFinished) and event.user_id == "bob":
            stamps[event.type] = event.at
            if isinstance(event, ev.PieceFinished):
                finished.set()

    alice = await start_holder(work, url, room, lock("big", sha, size, [source.as_uri()]))
    holder = psutil.Process(alice.pid)
    while not holds(work / "alice" / "room.log"):  # alice has the piece: now bob comes
        await asyncio.sleep(0.05)
    warm(work / "alice" / "cache")  # her copy in the page cache, as the mirror's file is
    rss_before, cpu_before = host.memory_info().rss, sum(host.cpu_times()[:2])
    bob_before, alice_before = sum(psutil.Process().cpu_times()[:2]), sum(holder.cpu_times()[:2])
    bob = asyncio.create_task(
        join(url, room=room, user_id="bob", key=insecure_key("bob"), dest=work / "bob",
             config=lock("big", sha, size, []), on_event=watch, deadline=600, retry_delay=0.1)
    )  # fmt: skip
    await finished.wait()
    cpu_after, rss_after = sum(host.cpu_times()[:2]), host.memory_info().rss
    bob_after, alice_after = sum(psutil.Process().cpu_times()[:2]), sum(holder.cpu_times()[:2])
    await bob
    await alice.wait()
    seconds = stamps["piece_finished"] - stamps["piece_started"]
    shutil.rmtree(work / "bob")
    shutil.rmtree(work / "alice")
    per_mb = 1000 / (size / MIB)
    return {
        "mb_s": size / MIB / seconds,
        "rss_before": rss_before / MIB,
        "rss_after": rss_after / MIB,
        "cpu_per_mb_ms": (cpu_after - cpu_before) * per_mb,
        "holder_cpu_per_mb_ms": (alice_after - alice_before) * per_mb,
        "receiver_cpu_per_mb_ms": (bob_after - bob_before) * per_mb,
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
    loop = "uvloop" if loop_factory() is not None else "asyncio"
    print(
        f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores); {loop}'s "
        f"loop (MATCHLOCK_UVLOOP=0: asyncio's), allocator tuned: {tune_allocator()} "
        "(MATCHLOCK_MALLOC=0: not)"
    )
    print(f"piece: {args.mib} MiB, best of {args.repeat}")
    print(f"from a peer via a websocket host: {best['mb_s']:.0f} MB/s")
    best_http = max(rate for rate, _ in http)
    print(f"from a loopback HTTP mirror:      {best_http:.0f} MB/s")
    print(f"ratio peer/http: {best['mb_s'] / best_http:.2f}x (target >= 0.5x)")
    print(f"host RSS before/after: {best['rss_before']:.0f} / {best['rss_after']:.0f} MiB")
    print(f"host CPU per MB relayed: {min(p['cpu_per_mb_ms'] for p in peers):.2f} ms")
    holder = min(p["holder_cpu_per_mb_ms"] for p in peers)
    receiver = min(p["receiver_cpu_per_mb_ms"] for p in peers)
    print(f"CPU per MB: holder {holder:.2f} ms, receiver {receiver:.2f} ms (from a peer),")
    print(f"            receiver {min(cpu for _, cpu in http):.2f} ms (from HTTP)")


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
        run_loop(compare(args, work))  # as `matchlock join` runs (both receivers alike)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
