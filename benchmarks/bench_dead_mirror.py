"""What a dead first mirror costs a download job, against the same job without it.

    python benchmarks/bench_dead_mirror.py [--pieces N] [--repeat R]

Both jobs download the same ``--pieces`` pieces (200) of 16 KiB, every sha256 checked, from one
loopback aiohttp server running in its own process. In the first job every piece's first
resolvable is a port of 127.0.0.1 where nothing listens (the connection is refused), its second
the server; in the second job the server is the only resolvable. The two take turns, ``--repeat``
times (5), each into an empty folder, and the best time of each is kept; the ratio printed is
dead-first over server-only (target at most 1.2x: the job finds the host down once and every
other piece skips it without a request). The CPU time of this process in each job is printed
beside it: on a shared machine it is the steadier of the two. ``--uvloop`` runs both jobs on
uvloop's event loop (:mod:`matchlock.cli.loop`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_download import start_server  # the same loopback file server, in its own process

from matchlock.cli.loop import run
from matchlock.core.config import MatchLockConfig, parse_matchlock_config
from matchlock.core.events import Event, ResolvableFailed
from matchlock.downloads import download

PIECE_BYTES = 16 * 1024


def dead_origin() -> str:
    """A port of 127.0.0.1 where nothing listens (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def make_configs(files: Path, port: int, count: int) -> tuple[MatchLockConfig, MatchLockConfig]:
    """The same ``count`` pieces, with a dead first mirror and without it."""
    dead = dead_origin()
    with_dead: dict[str, Any] = {}
    without: dict[str, Any] = {}
    for index in range(count):
        data = os.urandom(PIECE_BYTES)
        (files / f"p{index}.bin").write_bytes(data)
        good = f"http://127.0.0.1:{port}/files/p{index}.bin"
        body = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        with_dead[f"p{index}"] = {**body, "resolvables": [{"url": f"{dead}/p{index}.bin"},
                                                          {"url": good}]}  # fmt: skip
        without[f"p{index}"] = {**body, "resolvables": [{"url": good}]}
    return _config(with_dead), _config(without)


def _config(pieces: dict[str, Any]) -> MatchLockConfig:
    return parse_matchlock_config(json.dumps({"collections": {"bench": {"pieces": pieces}}}))


async def timed(config: MatchLockConfig, dest: Path) -> tuple[float, float, int]:
    """Seconds and CPU seconds to download ``config`` into an empty ``dest``, and resolvable
    failures seen."""
    shutil.rmtree(dest, ignore_errors=True)
    failed = 0

    def count(event: Event) -> None:
        nonlocal failed
        failed += isinstance(event, ResolvableFailed)

    start, cpu = time.perf_counter(), time.process_time()
    await download(config, dest, on_event=count)
    return time.perf_counter() - start, time.process_time() - cpu, failed


async def compare(work: Path, port: int, count: int, repeat: int) -> None:
    """Print both jobs' best times and their ratio."""
    with_dead, without = make_configs(work / "files", port, count)
    dead_runs: list[tuple[float, float, int]] = []
    clean_runs: list[tuple[float, float, int]] = []
    for _ in range(repeat):  # taking turns, so both meet the same background load
        dead_runs.append(await timed(with_dead, work / "cache-dead"))
        clean_runs.append(await timed(without, work / "cache-clean"))
    dead, clean = min(dead_runs), min(clean_runs)
    dead_cpu, clean_cpu = min(r[1] for r in dead_runs), min(r[1] for r in clean_runs)
    print(f"{count} pieces of {PIECE_BYTES // 1024} KiB, sha256 checked, best of {repeat}:")
    print(
        f"  first mirror dead: {dead[0]:.3f} s, CPU {dead_cpu:.3f} s ({dead[2]} resolvable_failed)"
    )
    print(f"  no dead mirror:    {clean[0]:.3f} s, CPU {clean_cpu:.3f} s")
    print(f"  ratio {dead[0] / clean[0]:.2f}x (target <= 1.2x); CPU {dead_cpu / clean_cpu:.2f}x")


def main() -> None:
    """Run the comparison (the files are served by ``bench_download.py``'s loopback server)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--pieces", type=int, default=200, help="pieces per job")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each job (best kept)")
    parser.add_argument("--uvloop", action="store_true", help="both jobs on uvloop's loop")
    args = parser.parse_args()
    os.environ["MATCHLOCK_UVLOOP"] = "1" if args.uvloop else "0"
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"machine load {os.getloadavg()[0]:.2f} (1 min); on {loop}'s event loop")
    with tempfile.TemporaryDirectory(prefix="bench-dead-mirror-") as scratch:
        work = Path(scratch)
        (work / "files").mkdir()
        server, port = start_server(work / "files")
        try:
            run(compare(work, port, args.pieces, args.repeat))
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
