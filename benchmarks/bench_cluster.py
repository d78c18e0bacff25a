"""Cluster benchmark: two ``matchlock serve`` nodes sharing a NATS store, against one node with
a file log (the host benchmark's load, on both).

Run ``python benchmarks/bench_cluster.py [--rooms 100] [--users 4] [--seconds 8] [--rate 2000]
[--modes paced,flooded] [--nats-sync always|default]``. It starts, all on loopback:

- **file**: one ``matchlock serve --log-dir DIR`` (durability ``every``: each batch fsynced
  before its frames are sent);
- **split**: a ``nats-server -js`` (``sync_interval: always``, so an acknowledged line is on
  disk as the file node's is) and two ``matchlock serve --store nats://...`` nodes; every room's
  members are split between the two nodes (u0, u2 on one; u1, u3 on the other), so that every
  report is relayed across nodes: appended by its member's node, followed by the other, and
  the two nodes contend for every room's next position;
- **by room**: the same two nodes, each room's members all on one of them (room r on node
  r % 2: what a load balancer with room affinity gives); a node still appends to, and follows,
  the shared stream.

The clients are ``benchmarks/bench_host.py``'s (the same join, report frames, relay latency
matched by (room, user, done), paced and flooded modes, alternating slices after a warm-up);
nothing is copied from it. Printed, per mode: deliveries/s, p50/p99 relay latency (a report to
every member of its room, on both nodes), the CPU time per delivery of each server process (each
node, the NATS server) and in all; then **one decision alone** (no load): a member's report
relayed back to it and to a member on the other node, 200 times, the median; the difference with
the file node is what the JetStream round trip (and following) adds to a decision. The last line
says what the CPU per delivery means for N nodes on this 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests/

from bench_host import (  # the host benchmark, beside this file
    PIECE,
    REPORT,
    Clients,
    Member,
    Slice,
    cpu_seconds,
    flood,
    join_matchlock,
    pace,
    summary,
)

from tests.store.nats_server import NatsServer, start_server

KINDS = ("file", "split", "by room")
"""The setups: one node with a file log; the two nodes with every room's members split
between them; the same two nodes with each room's members all on one of them (rooms spread
over the nodes, as a load balancer with room affinity would)."""


@dataclass
class Setup:
    """One side of the comparison: its server processes, by name, and its members."""

    kind: str
    processes: dict[str, subprocess.Popen[str] | subprocess.Popen[bytes]]
    urls: list[str]
    rooms: int = 0  # its rooms are numbered from here
    clients: Clients | None = None
    runs: dict[str, list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))
    alone: dict[str, float] = field(default_factory=dict)


def start_node(*where: str) -> tuple[subprocess.Popen[str], str]:
    """A ``matchlock serve`` node with its connection caps lifted (every client is on
    127.0.0.1); the process and its URL."""
    caps = ["--max-connections", "1000000", "--max-connections-per-address", "1000000"]
    command = [sys.executable, "-m", "matchlock", "serve", "--listen", "127.0.0.1:0", *where, *caps]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("ws://"):
        process.kill()
        raise SystemExit(f"matchlock serve {' '.join(where)} did not start")
    return process, url


def open_setups(tmp: Path, nats: NatsServer) -> list[Setup]:
    process, url = start_node("--log-dir", str(tmp / "logs"))
    nodes = [start_node("--store", nats.url) for _ in range(2)]
    processes: dict[str, subprocess.Popen[str] | subprocess.Popen[bytes]] = {
        f"node {n + 1}": process for n, (process, _) in enumerate(nodes)
    }
    processes["nats-server"] = nats.process
    urls = [url for _, url in nodes]
    return [
        Setup("file", {"node": process}, [url]),
        Setup("split", processes, urls),
        Setup("by room", processes, urls, rooms=500_000),
    ]


async def join_setup(setup: Setup, args: argparse.Namespace) -> None:
    """Every member of every room joins: member ``u<i>`` on node ``i % nodes`` (split), or
    every member of room ``r`` on node ``r % nodes`` (by room)."""
    users = [f"u{i}" for i in range(args.users)]
    gate = asyncio.Semaphore(50)

    async def one(room: int, index: int) -> Member:
        url = setup.urls[(room if setup.kind == "by room" else index) % len(setup.urls)]
        async with gate:
            ws = await join_matchlock(url, room, users[index], users)
        return Member(room, users[index], ws, asyncio.Semaphore(args.window))

    rooms = range(setup.rooms, setup.rooms + args.rooms)
    members = await asyncio.gather(*(one(r, i) for r in rooms for i in range(args.users)))
    setup.clients = clients = Clients(list(members))
    clients.start_reading()
    await asyncio.sleep(1.0)


async def measure(setup: Setup, mode: str, args: argparse.Namespace) -> dict[str, float]:
    """One slice: warm up, measure, drain (as bench_host does), with every process's CPU."""
    clients = setup.clients
    assert clients is not None
    clients.current = current = Slice()
    measured = args.seconds / args.slices
    until = time.perf_counter() + args.warmup + measured
    cpu: list[dict[str, float]] = []

    def sample() -> None:
        cpu.append({name: cpu_seconds(p.pid) for name, p in setup.processes.items()})

    def begin() -> None:
        current.measuring = True
        sample()

    asyncio.get_running_loop().call_later(args.warmup, begin)
    if mode == "flooded":
        await flood(clients, until)
    else:
        await pace(clients, until, args.rate)
    current.measuring = False
    sample()
    await clients.drain()
    lat = sorted(current.latencies)
    if not lat:
        raise SystemExit(f"{setup.kind}, {mode}: nothing was relayed in a slice")
    deliveries = max(1, current.deliveries)
    result = {
        "msgs": current.deliveries / measured,
        "p50": 1000 * lat[len(lat) // 2],
        "p99": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
    }
    for name in setup.processes:
        result[f"cpu {name}"] = 1e6 * (cpu[1][name] - cpu[0][name]) / deliveries
    result["cpu all"] = sum(result[f"cpu {name}"] for name in setup.processes)
    return result


async def decision_alone(setup: Setup, times: int = 200) -> dict[str, float]:
    """A room of two, one member on each node (both on the one node of the file side): the
    median time for a report to come back to its sender, and to reach the other member."""
    users = ["u0", "u1"]
    urls = setup.urls * 2
    room = 1_000_000  # a room of its own, beside the benchmark's
    ws = [await join_matchlock(urls[n], room, user, users) for n, user in enumerate(users)]
    back: list[float] = []
    across: list[float] = []
    for done in range(1, times + 1):
        start = time.perf_counter()
        await ws[0].send(REPORT % ("piece_progress", "u0", PIECE, f',"done":{done}'))
        for n, seen in enumerate((back, across)):
            while True:
                event = json.loads(await ws[n].recv()).get("event") or {}
                if event.get("type") == "piece_progress" and event.get("done") == done:
                    seen.append(1000 * (time.perf_counter() - start))
                    break
    for each in ws:
        await each.close()
    return {"back": statistics.median(back), "across": statistics.median(across)}


async def run_all(args: argparse.Namespace, tmp: Path) -> list[Setup]:
    nats = await asyncio.to_thread(start_server, tmp / "nats", args.nats_sync == "always")
    setups = open_setups(tmp, nats)
    try:
        for setup in setups[:2]:
            setup.alone = await decision_alone(setup)
        for setup in setups:
            await join_setup(setup, args)
        for mode in args.modes:
            for slice_ in range(args.slices):
                for setup in setups if slice_ % 2 == 0 else setups[::-1]:
                    setup.runs[mode].append(await measure(setup, mode, args))
    finally:
        for setup in setups:
            if setup.clients is not None:
                for task in setup.clients.readers:
                    task.cancel()
                await asyncio.gather(*(m.ws.close() for m in setup.clients.members))
        for setup in setups[:2]:
            for name, process in setup.processes.items():
                if name != "nats-server":
                    process.send_signal(signal.SIGTERM)
                    process.wait(30)
        nats.stop()
    return setups


def report(setups: list[Setup], args: argparse.Namespace) -> None:
    file, cluster, by_room = setups
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{args.rooms} rooms x {args.users} users on loopback: 1 node with a file log (durability "
        f"every) vs 2 nodes on one nats-server (sync_interval {args.nats_sync}), each room's "
        f"members split "
        f"over the 2 nodes, or all on one node (rooms spread by room); "
        f"{args.slices} slices of {args.seconds / args.slices:g} s per mode (medians); machine "
        f"load {load} (1, 5, 15 min; 2 cores shared)"
    )
    for mode in args.modes:
        for setup in setups:
            r = summary(setup.runs[mode])
            cpu = ", ".join(f"{name} {r[f'cpu {name}']:.1f}" for name in setup.processes)
            print(
                f"{mode:8} {setup.kind:8} {r['msgs']:10,.0f} delivered/s  p50 {r['p50']:7.2f} ms"
                f"  p99 {r['p99']:7.2f} ms  CPU us/delivery: {cpu}; all {r['cpu all']:.1f}"
            )
        base = summary(file.runs[mode])
        for setup in (cluster, by_room):
            mine = summary(setup.runs[mode])
            print(
                f"ratio {mode}, {setup.kind}/file: {mine['msgs'] / base['msgs']:.2f}x delivered/s, "
                f"p50 {mine['p50'] / base['p50']:.2f}x, p99 {mine['p99'] / base['p99']:.2f}x, CPU "
                f"per delivery in all {mine['cpu all'] / base['cpu all']:.2f}x"
            )
    a, f = cluster.alone, file.alone
    print(
        f"one decision alone (median of 200): file node {f['back']:.2f} ms back to the sender; "
        f"cluster {a['back']:.2f} ms back to the sender, {a['across']:.2f} ms to the member on the "
        f"other node: the JetStream round trip adds {a['back'] - f['back']:+.2f} ms to a decision, "
        f"following it to the other node {a['across'] - a['back']:+.2f} ms more"
    )
    mode = "flooded" if "flooded" in args.modes else args.modes[0]
    r = summary(by_room.runs[mode])
    node = (r["cpu node 1"] + r["cpu node 2"]) / 2
    print(
        f"what it implies: one delivery costs a node {node:.1f} us of CPU ({mode}, by room) and "
        f"the NATS server {r['cpu nats-server']:.1f} us; on this machine's 2 cores, shared by "
        f"the nodes, the NATS server and the clients, adding nodes adds no capacity (the cores "
        f"are the limit); on N machines of their own, N nodes give at most N x "
        f"{1e6 / max(node, 1e-9):,.0f} deliveries/s of node CPU, until the NATS cluster "
        f"({1e6 / max(r['cpu nats-server'], 1e-9):,.0f} deliveries/s per NATS core) is the limit"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured, per mode/setup")
    parser.add_argument("--slices", type=int, default=4, help="alternating slices per mode")
    parser.add_argument("--warmup", type=float, default=1.0, help="before each slice")
    parser.add_argument("--rate", type=float, default=2000.0, help="paced reports per second")
    parser.add_argument("--window", type=int, default=2, help="flooded: reports in flight each")
    parser.add_argument(
        "--nats-sync", choices=("always", "default"), default="always",
        help="the nats-server's sync_interval: always (each acknowledged message fsynced, as the "
        "file node's batches are) or its default (fsync every 2 min: durable by the process)",
    )  # fmt: skip
    parser.add_argument(
        "--modes", type=lambda text: text.split(","), default=["paced", "flooded"],
        help="comma-separated: paced, flooded",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report(asyncio.run(run_all(args, Path(tmp))), args)


if __name__ == "__main__":
    main()
