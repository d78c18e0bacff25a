"""``matchlock serve --listen HOST:PORT --log-dir DIR``: host any number of rooms.

A room opens when its first member says hello with a config every expected user signed; its
authoritative event log is ``DIR/<room_id>.log``. A restarted server rebuilds every room from
those logs, and members reconnect to where they were.

Once listening, the command prints the URL clients join with, alone on one stdout line (a
launcher can read it; with ``--listen HOST:0`` it carries the port the system chose; a
wildcard address is shown as this machine's name), and runs until Ctrl-C or SIGTERM. Then it
stops listening, closes every connection, flushes every log, and exits 0.

``--transport ws`` (default) serves websockets, ``tcp`` direct TCP (newline-delimited JSON);
``--durability`` is the log's fsync policy (see :mod:`matchlock.eventlog`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from matchlock.eventlog import Durability
from matchlock.hosting import RoomHost
from matchlock.transport.connect import listen
from matchlock.transport.tcp import format_url

__all__ = ["listen_address", "register", "run", "serve"]


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT`` too) as a pair; an argparse type."""
    host, colon, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (a port from 0 to 65535)")
    return host or "0.0.0.0", int(port_text)


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
    parser.add_argument(
        "--log-dir", required=True, type=Path, metavar="DIR", help="one event log per room"
    )
    parser.add_argument(
        "--transport", choices=("ws", "tcp"), default="ws", help="websocket (default) or TCP"
    )
    parser.add_argument(
        "--durability",
        choices=("decisions", "every", "none"),
        default="decisions",
        help="fsync the logs at decisions (default), at every write, or never",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until stopped; returns the exit code."""
    bind_host, port = args.listen
    return asyncio.run(serve(bind_host, port, args.log_dir, args.transport, args.durability))


async def serve(
    bind_host: str, port: int, log_dir: Path, transport: str, durability: Durability
) -> int:
    """Host rooms on ``transport://bind_host:port`` until SIGINT or SIGTERM; returns 0."""
    host = RoomHost(log_dir, durability=durability)
    await host.start()
    try:
        listener = await listen(format_url(transport, bind_host, port), host)
        try:
            print(listener.url, flush=True)
            print(
                f"matchlock: hosting rooms ({len(host.logs)} restored), logs in {log_dir}; "
                "Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )
            await _until_stopped()
        finally:
            await listener.close()
    finally:
        await host.stop()
    return 0


async def _until_stopped() -> None:
    """Return on SIGINT or SIGTERM (where signals cannot be caught, Ctrl-C still interrupts)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)
