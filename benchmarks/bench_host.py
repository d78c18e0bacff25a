"""Host benchmark: progress relayed to every member of many rooms, against a bare broadcast.

Run ``python benchmarks/bench_host.py [--rooms 250] [--users 4] [--seconds 10] [--rate 3000]
[--modes paced,flooded] [--durability every|decisions|none]`` (the host's ``serve --durability``;
``--modes joins`` runs only the joins, which every run measures first).
Two servers run side by side, each in its own process, while every client runs in this one
(all on loopback, compression off on both):

- **matchlock**: what ``matchlock serve --listen 127.0.0.1:0 --log-dir DIR`` runs (a
  :class:`~matchlock.app.hosting.RoomHost` behind the websocket transport, one event log per room in
  a temp folder, durability ``every``, its default). Every member joins its room for real (signed
  config, challenge, answer, welcome; its first report, ``piece_started``, is sent once every
  member has joined), then reports ``piece_progress``; the host validates,
  applies, logs and relays each report to the room's members, the reporter included;
- **bare**: a ``websockets`` server that broadcasts each message from a client to its group's
  clients, with no parsing, state or log: the baseline.

The clients do the same work for both: send a report frame, parse every message received, and
match each relayed report to its send time by (room, user, done) for the relay latency (the
host restamps ``at``, so the time cannot travel inside the message). Two modes:

- **paced**: ``--rate`` reports per second in all, round-robin over the members: the latency a
  room sees at a realistic load;
- **flooded**: every member sends as fast as the server relays, at most ``--window`` of its own
  reports in flight (so queues stay bounded): the throughput ceiling.

Only one server is loaded at a time, in alternating slices (matchlock, bare, bare, matchlock,
...), each after a warm-up and followed by a drain, so that the noise of a shared machine falls
on both alike. Printed: delivered messages/s (one report to 4 members = 4 deliveries), p50/p99
relay latency (when flooded, that is mostly the window waiting in queues), the server's CPU time
per delivery (steadier than rates on a busy machine), how busy the server and the client
processes were (a client near 100% means the clients, not the server, set the pace), the
matchlock/bare ratios with issue 16's targets (flooded at least 0.8x; paced, p99 at most 2x and CPU
per delivery at most 1.5x), the host's RSS per room, and the joins: wall time (at most 2x), the
server's CPU per join and the clients' (a join ends with the welcome, sent once its
``member_joined`` is durable; each member's signed room config and its key are made before
the timing starts, as a member holds its signed room file and its key file before it
joins). For each paced slice of the matchlock host it also prints the p99 beside the slowest
synced write a watcher made to the same disk meanwhile (:class:`DiskWatch`): under durability
``every`` a report waits for its batch's sync, so a disk that stalls for 100 ms holds every
report that arrives meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import mmap
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, broadcast, serve

from matchlock.cli.allocator import tune_allocator
from matchlock.cli.loop import run as run_loop
from matchlock.core.client import ClientProtocol
from matchlock.core.config import RoomConfig
from matchlock.store.eventlog import Durability
from matchlock.tools.testing import insecure_key, pinned, signed_room
from matchlock.transport.ws import WsConnection

PIECE = "chars/p"
REPORT = '{"type":"report","event":{"type":"%s","v":1,"at":0.0,"user_id":"%s","piece":"%s"%s}}'
KINDS = ("matchlock", "bare")


# -- the servers (each run in its own process with --role) ----------------------------------------


async def run_matchlock_host(log_dir: Path, durability: Durability) -> None:
    """What ``matchlock serve --listen 127.0.0.1:0 --log-dir DIR`` runs, with its connection caps
    lifted (``--max-connections``, ``--max-connections-per-address``): every client of this
    benchmark comes from 127.0.0.1."""
    from matchlock.cli.serve import serve as matchlock_serve
    from matchlock.transport.limits import Limits

    limits = Limits(max_connections=1 << 20, max_connections_per_address=1 << 20)
    await matchlock_serve("127.0.0.1", 0, log_dir, "ws", durability, limits=limits)


async def run_bare_host() -> None:
    """A bare broadcast server: a client's first message names its group; every later message
    is broadcast to the group, sender included."""
    groups: defaultdict[str, set[ServerConnection]] = defaultdict(set)

    async def handler(websocket: ServerConnection) -> None:
        group = groups[str(await websocket.recv())]
        group.add(websocket)
        try:
            async for message in websocket:
                broadcast(group, message)
        finally:
            group.discard(websocket)

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"ws://127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


# -- the clients ------------------------------------------------------------------------------


@dataclass
class Slice:
    """What one measured slice saw."""

    measuring: bool = False
    deliveries: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Member:
    """One client connection and its own reports in flight."""

    room: int
    user: str
    ws: ClientConnection
    window: asyncio.Semaphore
    done: int = 0
    in_flight: int = 0


@dataclass
class Clients:
    """Every member of one server's rooms, with the send times of their reports."""

    members: list[Member]
    sent_at: dict[tuple[int, str, int], float] = field(default_factory=dict)
    current: Slice = field(default_factory=Slice)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def start_reading(self) -> None:
        self.readers = [asyncio.create_task(self.read(m)) for m in self.members]

    async def read(self, member: Member) -> None:
        """Every message this member receives: count relayed progress, time it, free the
        member's window when it is its own report coming back."""
        async for message in member.ws:
            event = json.loads(message).get("event")
            if event is None or event.get("type") != "piece_progress":
                continue
            now = time.perf_counter()
            current = self.current
            if current.measuring:
                current.deliveries += 1
                sent = self.sent_at.get((member.room, event["user_id"], event["done"]))
                if sent is not None:
                    current.latencies.append(now - sent)
            if event["user_id"] == member.user:
                member.in_flight -= 1
                member.window.release()

    async def send(self, member: Member) -> None:
        await member.window.acquire()
        member.done += 1
        member.in_flight += 1
        self.sent_at[(member.room, member.user, member.done)] = time.perf_counter()
        tail = f',"done":{member.done}'
        await member.ws.send(REPORT % ("piece_progress", member.user, PIECE, tail))

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until every report sent has come back to its sender."""
        async with asyncio.timeout(timeout):
            while any(m.in_flight for m in self.members):
                await asyncio.sleep(0.05)


@functools.cache
def room_config(room: int, users: tuple[str, ...]) -> RoomConfig:
    """Room ``room``'s config, signed by every user: made before the joins are timed, as a
    member holds its signed room file (``matchlock room sign``) before it joins."""
    return signed_room(f"room{room}", users, pinned({PIECE: 1 << 40}))


@functools.cache
def member_key(user: str) -> Ed25519PrivateKey:
    """``user``'s private key: made before the joins are timed, as a member holds its key file
    (``matchlock keygen``) before it joins; each join still signs its own challenge."""
    return insecure_key(user)


async def join_matchlock(url: str, room: int, user: str, users: list[str]) -> ClientConnection:
    """A member's join as ``matchlock join`` makes it: its frames through the websocket
    transport's connection (:class:`~matchlock.transport.ws.WsConnection`), as bytes."""
    member = ClientProtocol(room_config(room, tuple(users)), user, member_key(user))
    ws = await connect(url, compression=None, max_size=None)
    conn = WsConnection(ws)
    conn.send_nowait(member.hello())
    while member.phase != "joined":
        out = member.receive(await conn.recv())
        if out.refused is not None:
            raise RuntimeError(f"room{room} refused {user}: {out.refused.reason}")
        for frame in out.sends:
            conn.send_nowait(frame)
    return ws


async def join_bare(url: str, room: int) -> ClientConnection:
    ws = await connect(url, compression=None, max_size=None)
    await ws.send(f"room{room}")
    return ws


async def join_all(kind: str, url: str, args: argparse.Namespace) -> Clients:
    users = [f"u{i}" for i in range(args.users)]
    gate = asyncio.Semaphore(50)

    async def one(room: int, user: str) -> Member:
        async with gate:
            if kind == "matchlock":
                ws = await join_matchlock(url, room, user, users)
            else:
                ws = await join_bare(url, room)
        return Member(room, user, ws, asyncio.Semaphore(args.window))

    members = await asyncio.gather(*(one(r, u) for r in range(args.rooms) for u in users))
    return Clients(list(members))


async def flood(clients: Clients, until: float) -> None:
    async def one(member: Member) -> None:
        while time.perf_counter() < until:
            await clients.send(member)

    tasks = [asyncio.create_task(one(m)) for m in clients.members]
    await asyncio.sleep(until - time.perf_counter())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def pace(clients: Clients, until: float, rate: float) -> None:
    members = clients.members
    start, sent = time.perf_counter(), 0
    while (now := time.perf_counter()) < until:
        for _ in range(int((now - start) * rate) - sent):
            await clients.send(members[sent % len(members)])
            sent += 1
        await asyncio.sleep(0.001)


# -- the run ----------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    kind: str
    process: subprocess.Popen[str]
    clients: Clients
    rss: dict[str, float]
    join_s: float
    join_cpu: float = 0.0  # the server's CPU seconds during the joins
    join_clients_cpu: float = 0.0  # this process's (every client's)
    runs: dict[str, list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))


async def open_server(kind: str, args: argparse.Namespace, log_dir: Path) -> Server:
    command = [sys.executable, __file__, "--role", kind, "--log-dir", str(log_dir)]
    command += ["--durability", args.durability]
    if kind == "matchlock" and args.uvloop:
        command.append("--uvloop")
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("ws://"):
        process.kill()
        raise SystemExit(f"the {kind} server did not start")
    rss = {"idle": rss_mib(process.pid)}
    if kind == "matchlock":
        users = tuple(f"u{i}" for i in range(args.users))
        for room in range(args.rooms):
            room_config(room, users)
        for user in users:
            member_key(user)
    cpu, mine, start = cpu_seconds(process.pid), time.process_time(), time.perf_counter()
    clients = await join_all(kind, url, args)
    join_s = time.perf_counter() - start
    cpu, mine = cpu_seconds(process.pid) - cpu, time.process_time() - mine
    if kind == "matchlock":  # a first report, not part of a join: after the joins are timed
        for member in clients.members:
            await member.ws.send(REPORT % ("piece_started", member.user, PIECE, ""))
    clients.start_reading()
    await asyncio.sleep(1.0)
    rss["joined"] = rss_mib(process.pid)
    return Server(kind, process, clients, rss, join_s, cpu, mine)


class DiskWatch(threading.Thread):
    """While a slice is measured: one synced 4 KiB write every 10 ms to a file in the log
    folder (``O_DIRECT | O_DSYNC`` where the file system allows, as the host's journal writes),
    so that the report can tell a slice whose p99 is the disk's (it stalled meanwhile) from one
    whose p99 is the host's. It adds 400 KB/s of synced writes, 2% of the disk's time."""

    BLOCK = 4096

    def __init__(self, folder: Path) -> None:
        super().__init__(name="disk-watch", daemon=True)
        self.path = folder / "disk-watch"
        self.took: list[float] = []
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        self.path.write_bytes(bytes(1 << 20))
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
        except OSError:  # a file system without direct writes
            fd = os.open(self.path, os.O_WRONLY | os.O_DSYNC)
        block, offset = mmap.mmap(-1, self.BLOCK), 0
        try:
            while not self.done.wait(0.01):
                start = time.perf_counter()
                os.pwrite(fd, block, offset)
                self.took.append(time.perf_counter() - start)
                offset = (offset + self.BLOCK) % (1 << 20)
        finally:
            os.close(fd)
            self.path.unlink()

    def stop(self) -> float:
        """Stop; the slowest write's milliseconds."""
        self.done.set()
        self.join()
        return 1e3 * max(self.took, default=0.0)


async def measure(
    server: Server, mode: str, args: argparse.Namespace, log_dir: Path
) -> dict[str, float]:
    """One slice: warm up, measure, drain."""
    clients, pid = server.clients, server.process.pid
    clients.current = current = Slice()
    measured = args.seconds / args.slices
    until = time.perf_counter() + args.warmup + measured
    cpu: list[float] = []
    mine: list[float] = []
    watch: list[DiskWatch] = []

    def begin() -> None:
        watch.append(DiskWatch(log_dir))
        current.measuring = True
        cpu.append(cpu_seconds(pid))
        mine.append(time.process_time())

    asyncio.get_running_loop().call_later(args.warmup, begin)
    if mode == "flooded":
        await flood(clients, until)
    else:
        await pace(clients, until, args.rate)
    current.measuring = False
    cpu.append(cpu_seconds(pid))
    mine.append(time.process_time())
    disk_max = watch[0].stop()
    await clients.drain()
    lat = sorted(current.latencies)
    return {
        "msgs": current.deliveries / measured,
        "p50": 1000 * lat[len(lat) // 2],
        "p99": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "cpu_us": 1e6 * (cpu[1] - cpu[0]) / max(1, current.deliveries),
        "server_busy": (cpu[1] - cpu[0]) / measured,
        "clients_busy": (mine[1] - mine[0]) / measured,
        "disk_max": disk_max,
    }


async def run_all(args: argparse.Namespace, log_dir: Path) -> list[Server]:
    servers = [await open_server(kind, args, log_dir) for kind in KINDS]
    for mode in (m for m in args.modes if m != "joins"):
        for slice_ in range(args.slices):
            for server in servers if slice_ % 2 == 0 else servers[::-1]:
                server.runs[mode].append(await measure(server, mode, args, log_dir))
    for server in servers:
        server.rss["after"] = rss_mib(server.process.pid)
        for task in server.clients.readers:
            task.cancel()
        await asyncio.gather(*(m.ws.close() for m in server.clients.members))
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(30)
    return servers


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def report(servers: list[Server], args: argparse.Namespace, log_dir: Path) -> None:
    ours, bare = servers
    print(
        f"{args.rooms} rooms x {args.users} users on loopback; each mode and server measured in "
        f"{args.slices} slices of {args.seconds / args.slices:g} s (medians); matchlock host on "
        f"{'uvloop' if args.uvloop else 'asyncio'}'s loop, durability {args.durability}; machine "
        f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min; 2 cores)"
    )
    head = f"{'mode':8} {'server':10} {'delivered/s':>12} {'p50 ms':>8} {'p99 ms':>8}"
    modes = [mode for mode in args.modes if mode != "joins"]
    if modes:
        print(f"{head} {'CPU us/msg':>10} {'server CPU':>10} {'client CPU':>10}")
    for mode in modes:
        for server in servers:
            r = summary(server.runs[mode])
            rates = f"{r['msgs']:12,.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['cpu_us']:10.1f}"
            busy = f"{r['server_busy']:10.0%} {r['clients_busy']:10.0%}"
            print(f"{mode:8} {server.kind:10} {rates} {busy}")
    for mode in modes:
        mine, base = summary(ours.runs[mode]), summary(bare.runs[mode])
        target = " (target >= 0.8x)" if mode == "flooded" else f" (offered {args.rate:g} reports/s)"
        print(
            f"ratio {mode}: {mine['msgs'] / base['msgs']:.2f}x delivered/s{target}; server CPU "
            f"per delivery {mine['cpu_us'] / base['cpu_us']:.2f}x bare's (target <= 1.5x); "
            f"p99 {mine['p99'] / base['p99']:.2f}x bare's (target <= 2x when paced)"
        )
    if "paced" in modes:
        slices = ours.runs["paced"]
        print(
            "matchlock's paced slices, p99 relay latency: "
            + ", ".join(f"{run['p99']:.1f}" for run in slices)
            + " ms; the disk's slowest synced 4 KiB write meanwhile: "
            + ", ".join(f"{run['disk_max']:.1f}" for run in slices)
            + " ms (a report waits for its batch's sync under durability every)"
        )
    rss = ours.rss
    per_room = (rss["joined"] - rss["idle"]) * 1024 / args.rooms
    after = (rss["after"] - rss["idle"]) * 1024 / args.rooms
    print(
        f"matchlock host RSS: {rss['idle']:.1f} MiB idle, {rss['joined']:.1f} MiB with every "
        f"room joined ({per_room:.1f} KiB per room), {rss['after']:.1f} MiB after the runs "
        f"({after:.1f} KiB per room: each holds its last events, a welcome reads older ones "
        f"from the log); bare: {bare.rss['joined']:.1f} MiB joined, "
        f"{bare.rss['after']:.1f} MiB after"
    )
    members = args.rooms * args.users
    lines = sum(len(p.read_bytes().splitlines()) for p in log_dir.glob("*.log"))
    print(
        f"joins of {members:,} members: {ours.join_s:.1f} s, {ours.join_s / bare.join_s:.2f}x "
        f"bare's {bare.join_s:.1f} s (target <= 2x); server CPU per join "
        f"{1e3 * ours.join_cpu / members:.2f} ms (bare {1e3 * bare.join_cpu / members:.2f} ms), "
        f"clients' {1e3 * ours.join_clients_cpu / members:.2f} ms "
        f"(bare {1e3 * bare.join_clients_cpu / members:.2f} ms); log lines written: {lines:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rooms", type=int, default=250)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured, per mode/server")
    parser.add_argument("--slices", type=int, default=4, help="alternating slices per mode")
    parser.add_argument("--warmup", type=float, default=1.0, help="before each slice")
    parser.add_argument("--rate", type=float, default=3000.0, help="paced reports per second")
    parser.add_argument("--window", type=int, default=2, help="flooded: reports in flight each")
    parser.add_argument(
        "--modes", type=lambda text: text.split(","), default=["paced", "flooded"],
        help="comma-separated: paced, flooded; joins: only the joins (every run measures them)",
    )
    parser.add_argument(
        "--durability", choices=("every", "decisions", "none"), default="every",
        help="the matchlock host's (serve --durability)",
    )
    parser.add_argument(
        "--uvloop", action="store_true",
        help="run the matchlock host on uvloop, as `matchlock serve` does with the speed extra "
        "(the bare server and the clients stay on asyncio's loop)",
    )  # fmt: skip
    parser.add_argument("--role", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role is not None:
        threading.Thread(target=stop_with_the_benchmark, daemon=True).start()
    if args.role == "matchlock":
        host = run_matchlock_host(args.log_dir, args.durability)
        tune_allocator()  # as `matchlock serve` does (matchlock.cli.loop.run)
        run_loop(host) if args.uvloop else asyncio.run(host)
    elif args.role == "bare":
        asyncio.run(run_bare_host())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            disk = fsync_probe(Path(tmp))
            report(asyncio.run(run_all(args, Path(tmp))), args, Path(tmp))
            print(disk)


def stop_with_the_benchmark() -> None:
    """In a server's process: stop it as SIGTERM does once the benchmark that started it is
    gone, even killed (its end of the server's stdin closes), so no server outlives it."""
    sys.stdin.read()
    os.kill(os.getpid(), signal.SIGTERM)


def fsync_probe(folder: Path, seconds: float = 1.0) -> str:
    """How the disk under the logs answered fsync before the runs: one line appended and
    fsynced at a time, as a durable batch of one room is (the matchlock host cannot relay
    faster than this under ``durability every``; the bare server never waits for it)."""
    path, line, took = folder / "probe.log", b"x" * 200 + b"\n", []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    cpu, until = time.process_time(), time.perf_counter() + seconds
    try:
        while (start := time.perf_counter()) < until:
            os.write(fd, line)
            os.fsync(fd)
            took.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    cpu = (time.process_time() - cpu) / len(took)
    took.sort()
    p50, p99 = (1e3 * took[int(q * (len(took) - 1))] for q in (0.5, 0.99))
    return (
        f"the log folder's disk before the runs: append + fsync p50 {p50:.2f} ms, p99 {p99:.2f} "
        f"ms, max {1e3 * took[-1]:.1f} ms, {1e6 * cpu:.0f} us of CPU each ({len(took):,} in "
        f"{seconds:g} s)"
    )


if __name__ == "__main__":
    main()
