"""``matchlock serve --listen HOST:PORT --log-dir DIR``: host any number of rooms.

``--store nats://HOST:4222[,nats://HOST2:4222,...]`` instead of ``--log-dir`` keeps the logs in
NATS JetStream (:mod:`matchlock.store.nats`, a subject per room) and runs one node of a cluster
(:class:`~matchlock.app.cluster.ClusterHost`): every node on the same stream serves any room,
members of one room may be on different nodes, and a room is loaded from the stream when a
member says hello (``docs/scaling.md``).

A room opens when its first member says hello with a config every expected user signed; its
authoritative event log is ``DIR/<room_id>.log``. A restarted server rebuilds every room from
those logs, and members reconnect to where they were.

Once listening, the command prints the URL clients join with, alone on one stdout line (a
launcher can read it; with ``--listen HOST:0`` it carries the port the system chose; a
wildcard address is shown as this machine's name), and runs until Ctrl-C or SIGTERM. Then it
stops listening, closes every connection, flushes every log, and exits 0.

The process collects garbage less often than Python's default (:data:`GC_THRESHOLDS`).

``--transport ws`` (default) serves websockets, ``tcp`` direct TCP (newline-delimited JSON);
``--durability`` is the log's fsync policy (see :mod:`matchlock.store.eventlog`).
``--handshake-timeout``, ``--idle-timeout``, ``--max-connections`` and
``--max-connections-per-address`` bound what connections may cost (see
:mod:`matchlock.transport.limits`); ``matchlock join --host`` takes the same flags.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from matchlock.app.hosting import RoomHost
from matchlock.cli.loop import run as run_loop
from matchlock.cli.open_files import connections_that_fit
from matchlock.core.host import MAX_PIECES, MAX_USERS
from matchlock.store.eventlog import Durability
from matchlock.store.files import FileRepository
from matchlock.store.journal import CAPACITY as JOURNAL_SIZE
from matchlock.transport.connect import listen
from matchlock.transport.limits import (
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    Limits,
)
from matchlock.transport.tcp import format_url

__all__ = [
    "GC_THRESHOLDS",
    "add_limit_arguments",
    "limits_of",
    "listen_address",
    "register",
    "run",
    "serve",
]


GC_THRESHOLDS = (50_000, 10, 10)
"""The serving process's ``gc.set_threshold``: a young collection every 50,000 allocations
instead of 700. A host's objects in flight (each report's output, frames, futures) live a commit
cycle, long enough that the default promoted them all to the old generation, whose collections
walk every object the host holds: a flooded host of 250 rooms spent 1.8 s of a run collecting
against 0.3 s so (``benchmarks/bench_host.py``). Cycles are rare; refcounting frees the rest."""


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT`` too) as a pair; an argparse type."""
    host, colon, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (a port from 0 to 65535)")
    return host or "0.0.0.0", int(port_text)


def _seconds(text: str) -> float:
    """A positive number of seconds; an argparse type."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _count(text: str) -> int:
    """A whole number of at least 1; an argparse type."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def add_limit_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Add the flags of :class:`~matchlock.transport.limits.Limits` (each help line starts
    with ``prefix``); :func:`limits_of` reads them back."""
    group = parser.add_argument_group("timeouts and connection limits")
    group.add_argument(
        "--handshake-timeout",
        type=_seconds,
        default=HANDSHAKE_TIMEOUT,
        metavar="S",
        help=f"{prefix}close a connection that has not joined S seconds after connecting "
        f"(default {HANDSHAKE_TIMEOUT:g})",
    )
    group.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=IDLE_TIMEOUT,
        metavar="S",
        help=f"{prefix}close a connection on which nothing, not even a keepalive, arrived "
        f"for S seconds (default {IDLE_TIMEOUT:g})",
    )
    group.add_argument(
        "--max-connections",
        type=_count,
        default=MAX_CONNECTIONS,
        metavar="N",
        help=f"{prefix}refuse connections beyond N open at once (default {MAX_CONNECTIONS})",
    )
    group.add_argument(
        "--max-connections-per-address",
        type=_count,
        default=MAX_CONNECTIONS_PER_ADDRESS,
        metavar="N",
        help=f"{prefix}refuse connections beyond N open at once from one address "
        f"(default {MAX_CONNECTIONS_PER_ADDRESS})",
    )
    group.add_argument(
        "--max-users-per-room",
        type=_count,
        default=MAX_USERS,
        metavar="N",
        help=f"{prefix}refuse to open a room that expects more than N users (default {MAX_USERS})",
    )
    group.add_argument(
        "--max-pieces-per-room",
        type=_count,
        default=MAX_PIECES,
        metavar="N",
        help=f"{prefix}refuse to open a room that pins more than N pieces (default {MAX_PIECES})",
    )


def limits_of(args: argparse.Namespace) -> Limits:
    """The :class:`~matchlock.transport.limits.Limits` that :func:`add_limit_arguments`'s
    flags ask for."""
    max_connections = connections_that_fit(args.max_connections)
    if max_connections < args.max_connections:
        print(
            f"matchlock: --max-connections lowered from {args.max_connections} to "
            f"{max_connections}: this process may open no more files than that allows "
            "(ulimit -n; two for each connection)",
            file=sys.stderr,
        )
    return Limits(
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=max_connections,
        max_connections_per_address=args.max_connections_per_address,
        max_users_per_room=args.max_users_per_room,
        max_pieces_per_room=args.max_pieces_per_room,
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` sub-command."""
    parser = commands.add_parser(
        "serve",
        help="host rooms for clients to join",
        description="Host any number of rooms, keeping each room's event log in --log-dir. "
        "Prints the URL to join, then runs until Ctrl-C or SIGTERM.",
    )
    parser.add_argument(
        "--listen",
        required=True,
        type=listen_address,
        metavar="HOST:PORT",
        help="where to listen (port 0: any free port; 0.0.0.0: every interface)",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--log-dir", type=Path, metavar="DIR", help="one event log per room")
    where.add_argument(
        "--store",
        metavar="nats://HOST:4222[,nats://HOST2:4222,...]",
        help="keep the rooms' logs in NATS JetStream instead, a subject per room, as one node "
        "of a cluster: every serve on the same stream serves any room (pip install "
        "'matchlock[nats]'; see docs/scaling.md)",
    )
    parser.add_argument(
        "--transport", choices=("ws", "tcp"), default="ws", help="websocket (default) or TCP"
    )
    parser.add_argument(
        "--durability",
        choices=("every", "decisions", "none"),
        default="every",
        help="fsync each batch of log lines before its frames are sent (default: no member "
        "hears of an event a power loss can take), only batches holding a decision (faster; "
        "see docs/durability.md for what a power loss then costs members), or never",
    )
    parser.add_argument(
        "--journal-size",
        type=int,
        default=JOURNAL_SIZE,
        metavar="BYTES",
        help=f"bytes of each half of the --log-dir journal (default {JOURNAL_SIZE:,}): a full "
        "half has its room logs synced in the background while the other fills; a smaller one "
        "takes less disk and syncs the logs more often (at least 5120; a multiple of 4096 keeps "
        "synced writes direct; see docs/durability.md)",
    )
    add_limit_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until stopped; returns the exit code."""
    bind_host, port = args.listen
    limits = limits_of(args)
    return run_loop(
        serve(
            bind_host,
            port,
            args.log_dir,
            args.transport,
            args.durability,
            limits=limits,
            store=args.store,
            journal_size=args.journal_size,
        )
    )


async def serve(
    bind_host: str,
    port: int,
    log_dir: Path | None,
    transport: str,
    durability: Durability,
    *,
    limits: Limits | None = None,
    store: str | None = None,
    journal_size: int = JOURNAL_SIZE,
) -> int:
    """Host rooms on ``transport://bind_host:port`` until SIGINT or SIGTERM, within ``limits``
    (the defaults when None), with their logs in ``log_dir`` or else the NATS servers
    ``store`` (``nats://HOST:4222[,...]``); returns 0, or raises
    :class:`~matchlock.core.errors.HostFailedError` once the host could not write its logs."""
    gc.set_threshold(*GC_THRESHOLDS)
    if store is None:
        logs = None if log_dir is None else FileRepository(log_dir, "journal", journal_size)
        host = RoomHost(store=logs, durability=durability, limits=limits)
        await _host_rooms(host, bind_host, port, transport, f"logs in {log_dir}")
        return 0
    from matchlock.app.cluster import ClusterHost  # nats-py: the optional extra
    from matchlock.store.nats import NatsRepository

    repository = NatsRepository(store)
    try:
        node = ClusterHost(repository, durability=durability, limits=limits)
        await _host_rooms(node, bind_host, port, transport, f"a cluster node, logs in NATS {store}")
    finally:
        await repository.close()
    return 0


async def _host_rooms(
    host: RoomHost, bind_host: str, port: int, transport: str, where: str
) -> None:
    with _stop_signals() as stop:  # caught before the URL says the host is up
        await host.start()
        try:
            listener = await listen(format_url(transport, bind_host, port), host)
            try:
                print(listener.url, flush=True)
                print(
                    f"matchlock: hosting rooms ({len(host.logs)} restored), {where}; Ctrl-C stops",
                    file=sys.stderr,
                    flush=True,
                )
                await host.unless_failed(stop.wait())
            finally:
                await listener.close()
        finally:
            await host.stop()


@contextlib.contextmanager
def _stop_signals() -> Iterator[asyncio.Event]:
    """An event set on SIGINT or SIGTERM while the block runs (where signals cannot be
    caught, Ctrl-C still interrupts). The handlers are in place when the block starts, so a
    signal sent the moment the URL is printed stops the host cleanly too."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)
