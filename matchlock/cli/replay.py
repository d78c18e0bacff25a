"""``matchlock replay LOG``: the timeline and final table of a room or download log, in the
terminal or (``--html OUT.html``) as a self-contained page with a timeline picture.

``LOG`` is a log file, or a room's log straight from a NATS JetStream stream,
``nats://HOST:4222[,nats://HOST2:4222,...]/ROOM_ID`` (the stream and subjects ``matchlock serve
--store`` uses; ``pip install 'matchlock[nats]'``): the hash chain lives in the events, so it
is checked the same way whatever holds the log. :func:`opened_log` opens either (``matchlock
export`` uses it too). This command only reads: it never writes to a log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from matchlock.core.errors import LogCorruptError, LogError, UsageError
from matchlock.core.events import Event
from matchlock.store import FileStore, LogStore
from matchlock.store.eventlog import Replayed, replay_file
from matchlock.tools.render import describe, printable, state_table
from matchlock.tools.timeline import replay_timeline

_NATS = re.compile(r"^(nats://[^/,]+(?:,nats://[^/,]+)*)/([A-Za-z0-9_.-]+)$")

NATS_RECONNECTS = 2
"""How often a reader tries each NATS server again (2 s apart) before it gives up."""


def split_nats_address(address: str) -> tuple[str, str]:
    """``nats://HOST:4222[,...]/ROOM_ID`` as its servers and its room id; raises
    :class:`~matchlock.core.errors.UsageError` saying what such an address looks like."""
    found = _NATS.match(address)
    if found is None:
        raise UsageError(
            f"{address!r} is not a room's log in NATS: nats://HOST:4222/ROOM_ID (several "
            "servers: nats://HOST:4222,nats://HOST2:4222/ROOM_ID)"
        )
    return found[1], found[2]


@contextlib.contextmanager
def opened_log(address: str | Path) -> Iterator[LogStore]:
    """The log at ``address``: a file's path, or ``nats://HOST:4222[,...]/ROOM_ID``. Raises
    :class:`~matchlock.core.errors.LogError` when there is no such log."""
    if not str(address).startswith("nats://"):
        path = Path(address)
        if not path.is_file():
            raise LogError(f"{path}: no such log file")
        yield FileStore(path)
        return
    servers, room_id = split_nats_address(str(address))
    try:
        from matchlock.store.nats import NatsRepository  # nats-py: the optional extra
    except ModuleNotFoundError as missing:
        raise UsageError(
            f"reading {address} needs {missing.name}: pip install 'matchlock[nats]'"
        ) from None

    repository = NatsRepository(servers, reconnects=NATS_RECONNECTS)
    try:
        yield repository.store(room_id)
    finally:
        asyncio.run(repository.close())


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``replay`` sub-command."""
    parser = commands.add_parser(
        "replay",
        help="rebuild a room or download from its event log",
        description="Check a log's hash chain, fold it through the state machines, and show "
        "the timeline and the final users x pieces table.",
    )
    parser.add_argument(
        "log",
        help="the event log: a JSON Lines file, or nats://HOST:4222[,...]/ROOM_ID (a room's log "
        "in NATS JetStream)",
    )
    parser.add_argument(
        "--verify", action="store_true", help="only check the log; exit 1 naming the first bad line"
    )
    parser.add_argument("--json", action="store_true", help="print the final state as JSON")
    parser.add_argument(
        "--until", type=int, metavar="SEQ", help="stop after the event with this sequence number"
    )
    parser.add_argument(
        "--progress", action="store_true", help="show progress events in the timeline"
    )
    parser.add_argument(
        "--html",
        type=Path,
        metavar="OUT",
        help="write the timeline picture and final table as a self-contained HTML page",
    )
    parser.add_argument(
        "--member-log",
        type=Path,
        action="append",
        default=[],
        metavar="LOG",
        help="with --html: also draw the transfers this member's own log tells of (repeatable)",
    )
    parser.set_defaults(func=run)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3]


def run(args: argparse.Namespace) -> int:
    """Replay the log; 0 when it is whole (a torn tail is only reported), 1 when it is damaged."""
    console = Console(highlight=False)
    with opened_log(args.log) as store:
        if args.html is not None:
            return _write_html(args, console, store)
        if args.member_log:
            raise UsageError("--member-log adds a member's transfers to the --html page only")
        return _replay(args, console, store)


def _replay(args: argparse.Namespace, console: Console, store: LogStore) -> int:
    timeline = not (args.verify or args.json)

    def show(seq: int, event: Event) -> None:
        if args.progress or event.type != "piece_progress":
            console.print(f"{seq:>6}  {_when(event.at)}  {escape(describe(event))}", soft_wrap=True)

    try:
        replayed = replay_file(store, until=args.until, on_event=show if timeline else None)
    except LogCorruptError as error:
        print(printable(f"matchlock: {error}"), file=sys.stderr)
        return 1
    _report_torn(store.name, replayed)
    if args.verify:
        console.print(
            f"ok: {replayed.state.events} events, chain intact, last hash {replayed.last_hash}",
            soft_wrap=True,
        )
    elif args.json:
        print(replayed.state.model_dump_json(indent=2))
    else:
        console.print(state_table(replayed.state))
    return 0


def _write_html(args: argparse.Namespace, console: Console, store: LogStore) -> int:
    if args.verify or args.json:
        raise UsageError("--html writes a page: it does not combine with --verify or --json")
    try:
        replayed, page = replay_timeline(store, until=args.until, members=args.member_log)
    except LogCorruptError as error:
        print(printable(f"matchlock: {error}"), file=sys.stderr)
        return 1
    _report_torn(store.name, replayed)
    args.html.write_text(page, encoding="utf-8")
    written = printable(f"wrote {args.html} ({replayed.state.events} events)")
    console.print(escape(written), soft_wrap=True)
    return 0


def _report_torn(name: str, replayed: Replayed) -> None:
    torn = replayed.torn
    if torn is None:
        return
    if torn.header:
        what = (
            f"the header was torn by a crash ({torn.size} bytes survived): the log holds no "
            "event (matchlock recovers it as an empty log when it is continued)"
        )
    else:
        what = f"torn by a crash ({torn.size} bytes); replayed to the last whole event"
    print(printable(f"matchlock: {name}:{torn.line}: {what}"), file=sys.stderr)
