"""``matchlock export LOG --out ROOM.log``: a room's log as a log file that verifies like any
other, from a NATS JetStream stream (``nats://HOST:4222[,...]/ROOM_ID``, as ``matchlock serve
--store`` keeps it) or from another log file (a verified copy).

The hash chain lives in the events, so the file written is the very lines the stream holds:
the same chain, the same last hash, whatever held the log. Before anything is written, the
whole log is checked (the chain, line by line, and the fold through the machines): a damaged
log is refused naming its first bad line, and nothing is written. A torn last line (a crash
cut it short) is left out, and said so, as ``matchlock replay`` reports it. The file appears
whole or not at all (written beside ``--out``, synced, renamed).

This command reads its source and never writes to it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from matchlock.cli.replay import opened_log
from matchlock.core.chain import LogDecoder
from matchlock.core.errors import LogCorruptError, UsageError
from matchlock.store.eventlog import fold_events
from matchlock.store.files import write_file_atomically
from matchlock.tools.render import printable


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` sub-command."""
    parser = commands.add_parser(
        "export",
        help="write a room's log (from NATS JetStream or a file) as a log file",
        description="Read a room's log from NATS JetStream (nats://HOST:4222/ROOM_ID) or from "
        "a log file, check its hash chain and fold it, and write it as a log file that "
        "matchlock replay verifies like any other.",
    )
    parser.add_argument("log", help="nats://HOST:4222[,...]/ROOM_ID, or a log file")
    parser.add_argument("--out", type=Path, required=True, help="the log file to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export the log; 0 when written, 1 when the log is damaged or holds no event (nothing is
    written then), 2 on bad usage."""
    if args.out.exists() and not args.force:
        raise UsageError(f"{args.out} exists; --force replaces it")
    with opened_log(args.log) as store:
        lines = list(store.read())  # one read: what is checked is what is written
        name = store.name
    decoder = LogDecoder(name)
    try:
        fold_events(decoder.events(lines), name)
    except LogCorruptError as error:
        print(printable(f"matchlock: {error}; nothing written"), file=sys.stderr)
        return 1
    if decoder.header is None:
        print(printable(f"matchlock: {name} holds no event; nothing written"), file=sys.stderr)
        return 1
    whole = lines[: decoder.seq + 1]  # the header and every whole event
    if decoder.torn is not None:
        print(
            printable(
                f"matchlock: {name}:{decoder.torn.line}: torn by a crash ({decoder.torn.size} "
                "bytes); exported to the last whole event"
            ),
            file=sys.stderr,
        )
    write_file_atomically(args.out, b"".join(whole))
    written = f"wrote {args.out}: {decoder.seq} events from {name}, last hash {decoder.last_hash}"
    Console(highlight=False).print(escape(printable(written)), soft_wrap=True)
    return 0
