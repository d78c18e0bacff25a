"""Download throughput against curl and aria2c, from one loopback aiohttp server, in one run.

    python benchmarks/bench_download.py [--quick] [--uvloop]

Figures printed (each a ratio against a baseline measured in the same run):

1. one large piece (1 GiB; 256 MiB with ``--quick``), sha256 checked, against ``curl -o`` of the
   same URL (target at least 0.9x) and ``aria2c -x4 -s4`` (four connections, its sha256 checked;
   target: ahead of it); plus the peak RSS of the process that downloaded it (memory must stay
   flat), the pace of 4 MiB ``O_DIRECT`` writes to the disk under the cache (matchlock writes
   each batch around the page cache or into it, whichever went faster lately; curl writes
   into it), the pace of sha256 alone on one core: the ceiling of a download that checks
   every byte as it goes, which curl does not; and the CPU of matchlock's and curl's fastest
   runs, the client's and the server's (which runs on the same cores), with the fastest pace
   that much CPU allows with every core busy (matchlock spends what curl does on the network
   and the file, and the sha256 on top of it);
2. 2,000 pieces of 64 KiB (500 with ``--quick``), every sha256 checked, against
   ``aria2c -j16`` on the same URL list with the same sha256 checksums (target at least 1.5x).

``--only large`` or ``--only small`` runs one of the two. ``--uvloop`` runs matchlock on
uvloop's event loop, as ``matchlock download`` does once ``matchlock[speed]`` is installed
(:mod:`matchlock.cli.loop`); without it, on asyncio's own loop (``MATCHLOCK_UVLOOP=0``).

The server runs in its own process (static files, sendfile), and so does each client: matchlock
in a child Python that times :func:`matchlock.downloads.download` run as the command line runs
it (:func:`matchlock.cli.loop.run`), from inside (interpreter start-up excluded, as it is from
the baselines' own transfer); curl and aria2c are timed as
processes. Each measurement is the best of ``--repeat`` runs (3) into an empty folder, after a
``sync`` (no writeback left over from the run before), matchlock and its baseline taking turns
so that both meet the same background load. A missing
curl or aria2c is reported and its ratio skipped (``apt-get install -y curl aria2``).

The small pieces go into a new folder for every run, and the folders are removed only at the
end: on ext4 without a journal (these VMs), a file created within seconds of thousands of
deletions in its block group scans past every inode they freed (one that is "recently
deleted": 5 s, 300 s while its inode table block is dirty) before it takes one, so each run
after removing the last one's 4,000 files and folders paid about 1 ms per file created
(measured: 1.1 ms per ``open(O_CREAT)``, 0.8 ms per ``mkdir``, against 0.1 ms into a fresh
folder), for matchlock and aria2c alike; that measured the benchmark's own clean-up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
HERE = Path(__file__).resolve()


def serve(folder: str, port_file: str) -> None:
    """Child process: serve ``folder`` under /files/ on a free loopback port."""
    from aiohttp import web

    app = web.Application()
    app.router.add_static("/files/", folder)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(sock.getsockname()[1]))
    web.run_app(app, sock=sock, print=None, access_log=None)


def client(config_path: str, dest: str, jobs: int) -> None:
    """Child process: download a config, print seconds and RSS (KiB) as JSON."""
    from matchlock.app.configfile import load_matchlock_config
    from matchlock.cli.loop import run
    from matchlock.downloads import download

    config = load_matchlock_config(config_path)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    folders = run(download(config, dest, jobs=jobs))
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "rss_before": before.ru_maxrss,
                "rss_peak": after.ru_maxrss,
                "pieces": len(folders),
            }
        )
    )


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = folder.parent / "port"
    process = subprocess.Popen([sys.executable, str(HERE), "--serve", str(folder), str(port_file)])
    for _ in range(500):
        if port_file.exists() and port_file.read_text():
            return process, int(port_file.read_text())
        time.sleep(0.01)
    process.kill()
    raise SystemExit("the benchmark server did not start")


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for _ in range(size // MIB):
            block = os.urandom(MIB)
            digest.update(block)
            file.write(block)
        rest = os.urandom(size % MIB)
        digest.update(rest)
        file.write(rest)
    return digest.hexdigest()


def write_config(path: Path, pieces: dict[str, tuple[str, int, str]]) -> None:
    body = {
        "collections": {
            "bench": {
                "pieces": {
                    name: {"sha256": sha, "size": size, "resolvables": [{"url": url}]}
                    for name, (sha, size, url) in pieces.items()
                }
            }
        }
    }
    path.write_text(json.dumps(body))


def settle() -> None:
    """Start every timed run with no dirty pages: the kernel's writeback of an earlier run's
    gigabyte (or throttling the writer once too much is dirty) would land on whoever runs next."""
    os.sync()


def run_matchlock(config: Path, dest: Path, jobs: int, uvloop: bool) -> dict[str, float]:
    shutil.rmtree(dest, ignore_errors=True)
    settle()
    out = subprocess.run(
        [sys.executable, str(HERE), "--client", str(config), str(dest), str(jobs)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "MATCHLOCK_UVLOOP": "1" if uvloop else "0"},
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def timed(command: list[str], scratch: Path) -> float:
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    settle()
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def children_cpu() -> float:
    """CPU seconds (user and system) of every child process this one has waited for."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def process_cpu(pid: int) -> float | None:
    """CPU seconds a running process has used so far (Linux's ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cpu:
    """The CPU seconds of one kind of client's runs, and of the server meanwhile."""

    def __init__(self, server: int) -> None:
        self.server = server
        self.runs: list[tuple[float, float, float]] = []  # seconds, client CPU, server CPU

    def begin(self) -> tuple[float | None, float]:
        """What the server and this process's children have used so far: before a run."""
        return process_cpu(self.server), children_cpu()

    def end(self, began: tuple[float | None, float], seconds: float, client: float | None) -> None:
        """Keep a run's figures (``client``: its CPU, None: what the children used since);
        none where the server's CPU cannot be read."""
        served, children = began
        now = process_cpu(self.server)
        if now is None or served is None:
            return
        used = children_cpu() - children if client is None else client
        self.runs.append((seconds, used, now - served))


def direct_write(path: Path, size: int) -> float | None:
    """Seconds to write ``size`` bytes to a new file at ``path`` in 4 MiB ``O_DIRECT`` writes
    (the way matchlock writes a large piece: :mod:`matchlock.downloads.direct`): the disk's own
    pace, which bounds matchlock's, where ``curl -o`` writes into the page cache. None where
    the file system refuses ``O_DIRECT`` (tmpfs: matchlock writes through the page cache there)."""
    block = mmap.mmap(-1, 4 * MIB)  # page-aligned, as O_DIRECT needs
    block.write(os.urandom(4 * MIB))
    settle()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    except OSError:
        block.close()
        path.unlink(missing_ok=True)
        return None
    try:
        start = time.perf_counter()
        for offset in range(0, size - size % (4 * MIB), 4 * MIB):
            os.pwrite(fd, block, offset)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
        block.close()


def hash_alone(size: int) -> float:
    """Seconds to sha256 ``size`` bytes (a multiple of 64 MiB) held in memory, a 64 MiB buffer
    (larger than the caches) fed over and over, the best of two: the hash's own pace here."""
    buffer = memoryview(bytearray(os.urandom(64 * MIB)))
    took = []
    for _ in range(2):
        digest = hashlib.sha256()
        start = time.perf_counter()
        for _ in range(size // len(buffer)):
            digest.update(buffer)
        took.append(time.perf_counter() - start)
    return min(took)


def bench_large(
    work: Path, files: Path, port: int, size: int, repeat: int, *, server: int, uvloop: bool
) -> None:
    """One piece of ``size`` bytes: matchlock, ``curl -o`` and ``aria2c -x4 -s4``, in turns
    (``server``: the serving process's pid, whose CPU each run is charged with too)."""
    sha = write_random(files / "large.bin", size)
    url = f"http://127.0.0.1:{port}/files/large.bin"
    config = work / "large.json"
    write_config(config, {"large": (sha, size, url)})
    curl, aria2c = shutil.which("curl"), shutil.which("aria2c")
    runs: list[dict[str, float]] = []
    baselines: dict[str, list[float]] = {"curl -o": [], "aria2c -x4 -s4": []}
    disk: list[float] = []
    cpu = {"matchlock": Cpu(server), "curl -o": Cpu(server)}

    for _ in range(repeat):  # interleaved, so all see the same background load
        began = cpu["matchlock"].begin()
        runs.append(run_matchlock(config, work / "cache-large", 1, uvloop))
        cpu["matchlock"].end(began, runs[-1]["seconds"], runs[-1]["cpu"])
        if hasattr(os, "O_DIRECT") and (took := direct_write(work / "direct.bin", size)):
            disk.append(took)
        shutil.rmtree(work / "cache-large", ignore_errors=True)
        out = work / "baseline" / "large.bin"
        if curl is not None:
            began = cpu["curl -o"].begin()
            baselines["curl -o"].append(timed([curl, "-s", "-o", str(out), url], out.parent))
            cpu["curl -o"].end(began, baselines["curl -o"][-1], None)
        if aria2c is not None:
            command = [
                aria2c,
                "-x4",
                "-s4",
                "-d",
                str(out.parent),
                "-o",
                out.name,
                "--quiet=true",
                "--file-allocation=none",
                f"--checksum=sha-256={sha}",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
                url,
            ]
            baselines["aria2c -x4 -s4"].append(timed(command, out.parent))
        shutil.rmtree(out.parent, ignore_errors=True)
    best = min(runs, key=lambda r: r["seconds"])
    ours = size / best["seconds"] / 1e6
    each = ", ".join(f"{size / r['seconds'] / 1e6:.0f}" for r in runs)
    print(
        f"large piece ({size // MIB} MiB, sha256 checked): matchlock {ours:.0f} MB/s "
        f"(each run: {each})"
    )
    peak = max(r["rss_peak"] for r in runs) / 1024
    print(
        f"  peak RSS {peak:.0f} MiB (the same process before the download: "
        f"{best['rss_before'] / 1024:.0f} MiB)"
    )
    targets = {"curl -o": "target >= 0.9x", "aria2c -x4 -s4": "target > 1.0x"}
    for name, seconds in baselines.items():
        if not seconds:
            print(f"  {name.split()[0]} not installed: ratio skipped")
            continue
        theirs = size / min(seconds) / 1e6
        print(f"  {name} {theirs:.0f} MB/s  ->  ratio {ours / theirs:.2f}x ({targets[name]})")
    if disk:
        pace = size // (4 * MIB) * 4 * MIB / min(disk) / 1e6
        print(
            f"  the disk under the cache, 4 MiB O_DIRECT writes: {pace:.0f} MB/s (matchlock "
            f"writes each batch around the page cache or into it, whichever went faster lately)"
        )
    hashed = size // (64 * MIB) * 64 * MIB
    print(
        f"  sha256 alone on one core: {hashed / hash_alone(hashed) / 1e6:.0f} MB/s (the ceiling "
        f"of any download that checks every byte as it goes; curl -o checks nothing)"
    )
    print_cpu(cpu, size)
    (files / "large.bin").unlink()


def print_cpu(cpu: dict[str, Cpu], size: int) -> None:
    """The CPU each client's fastest run cost, its own and the server's, and the fastest pace
    that CPU allows on this machine's cores (all of them busy with nothing else)."""
    cores = os.cpu_count() or 1
    parts = []
    for name, kind in cpu.items():
        if not kind.runs:
            continue
        seconds, client, server = min(kind.runs)
        floor = (client + server) / cores
        parts.append(
            f"{name} {client:.2f} + {server:.2f} s ({size / seconds / 1e6:.0f} MB/s; that CPU on "
            f"{cores} cores allows {size / floor / 1e6:.0f} at most)"
        )
    if parts:
        print(f"  CPU of each one's fastest run, client + server: {'; '.join(parts)}")


def bench_small(
    work: Path, files: Path, port: int, count: int, repeat: int, *, uvloop: bool
) -> None:
    pieces = {}
    for index in range(count):
        name = f"s{index:05d}.bin"
        sha = write_random(files / name, 64 * 1024)
        pieces[f"p{index:05d}"] = (sha, 64 * 1024, f"http://127.0.0.1:{port}/files/{name}")
    config = work / "small.json"
    write_config(config, pieces)
    listing = work / "aria2.txt"
    listing.write_text(
        "".join(
            f"{url}\n  checksum=sha-256={sha}\n  out={name}.bin\n"
            for name, (sha, _, url) in pieces.items()
        )
    )
    aria2c = shutil.which("aria2c")
    command = [
        str(aria2c),
        "-j16",
        "-i",
        str(listing),
        "--quiet=true",
        "--file-allocation=none",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
    ]
    ours, theirs = [], []
    for run in range(repeat):  # interleaved, so both see the same background load
        # A fresh folder each: removing the last run's files just before would slow every
        # create of this one (see the module docs).
        ours.append(run_matchlock(config, work / f"cache-small-{run}", 16, uvloop)["seconds"])
        if aria2c is not None:
            scratch = work / f"aria2-{run}"
            theirs.append(timed([*command, "-d", str(scratch)], scratch))
    best, total = min(ours), count * 64 * 1024
    print(
        f"{count} pieces of 64 KiB (sha256 checked): matchlock {count / best:.0f} pieces/s, "
        f"{total / best / 1e6:.0f} MB/s"
    )
    if aria2c is None:
        print("  aria2c not installed: ratio skipped")
        return
    seconds = min(theirs)
    print(
        f"  aria2c -j16 {count / seconds:.0f} pieces/s  ->  ratio {seconds / best:.2f}x "
        "(target >= 1.5x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--only", choices=("large", "small"), help="run one of the two")
    parser.add_argument("--uvloop", action="store_true", help="matchlock on uvloop's loop")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(*args.serve)
    if args.client:
        return client(args.client[0], args.client[1], int(args.client[2]))
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"machine load {os.getloadavg()[0]:.2f} (1 min); matchlock on {loop}'s event loop")
    with tempfile.TemporaryDirectory(prefix="bench-download-") as scratch:
        work = Path(scratch)
        files = work / "files"
        files.mkdir()
        server, port = start_server(files)
        try:
            if args.only != "small":
                size = (256 if args.quick else 1024) * MIB
                bench_large(
                    work, files, port, size, args.repeat, server=server.pid, uvloop=args.uvloop
                )
            if args.only != "large":
                count = 500 if args.quick else 2000
                bench_small(work, files, port, count, args.repeat, uvloop=args.uvloop)
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
