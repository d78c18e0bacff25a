"""``matchlock join URL [URL ...]``: join a room, install its pieces, and print ``piece -> folder``.
Several URLs are the nodes of a cluster serving the room, tried in turn: every failure to
connect and every lost connection moves on to the next.

On a terminal: a live table of every user x piece, then the result. With ``--json``: one JSON
object per line on stdout (each room event as ``{"type": "event", "event": {...}}``, then
``{"type": "result", "folders": {...}, "fingerprint": {"short", "full", "pieces"}}`` or
``{"type": "error", ...}``), for launchers that drive matchlock as a subprocess. The
fingerprint is the room's content fingerprint (:mod:`matchlock.core.fingerprint`). ``--dest``
defaults to the shared cache (:func:`~matchlock.downloads.manage.default_cache_dir`), and each
cached folder the room used is recorded for ``matchlock cache``.

``--host`` hosts the room in this process on the URL's address (``tcp://0.0.0.0:7500`` as Ikemen
GO netplay does, or ``ws://``/``lan://``) and joins it; the other players join that address.
Hosting takes ``matchlock serve``'s timeout and connection-limit flags; once this player's room
has closed, it keeps hosting until every member was sent the close, at most ``--linger``
seconds (a member that missed it, because the host crashed before sending it, comes back).

Pieces may come from other members of the room (docs/peers.md): ``--room-source`` places the
room among each piece's sources, ``--no-serve`` stops this player serving its own pieces,
``--upload-limit`` caps what it serves.

Exit codes: 0 every member has every piece; 1 the room cannot complete (the state is printed);
2 bad input (config, keys, URL); 3 the host refused this member.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console, Group
from rich.live import Live

from matchlock.app.configfile import load_matchlock_config, load_room_config
from matchlock.app.hosting import RoomHost
from matchlock.app.joining import Connector, join
from matchlock.app.keys import load_private_key
from matchlock.app.piece_sources import LiveSources
from matchlock.cli.loop import run as run_loop
from matchlock.cli.plan import sources_table
from matchlock.cli.serve import add_limit_arguments, limits_of
from matchlock.core import events as ev
from matchlock.core.config import MatchLockConfig, RoomConfig
from matchlock.core.errors import JoinRefusedError, RoomIncompleteError, UsageError
from matchlock.core.fingerprint import content_fingerprint
from matchlock.core.room import Room
from matchlock.downloads.manage import cache_root, record_cache_use
from matchlock.tools.render import describe, printable, state_table
from matchlock.transport.connect import listen
from matchlock.transport.memory import memory_connector

EXIT_INCOMPLETE = 1
EXIT_REFUSED = 3

LINGER = 30.0
"""Seconds ``join --host`` keeps hosting after its own room closed, at most, until every member
was sent the close (a member that missed it, because the host crashed before sending it, comes
back for it)."""

logger = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``join`` sub-command."""
    parser = commands.add_parser(
        "join",
        help="join a room and get every piece the room expects",
        description="Join the room at URL (ws://HOST:PORT, tcp://HOST:PORT, lan://ROOM_ID), "
        "prove who you are, install the room's pieces, and wait until everyone has everything.",
    )
    parser.add_argument(
        "url",
        nargs="+",
        help="ws://HOST:PORT, tcp://HOST:PORT or lan://ROOM_ID; several: the nodes of a cluster "
        "serving the room, tried in turn (each failure moves on to the next)",
    )
    parser.add_argument("--room", type=Path, required=True, help="the signed room config")
    parser.add_argument("--user", required=True, help="your user id in the room")
    parser.add_argument("--key", type=Path, required=True, help="your private key")
    parser.add_argument("--config", type=Path, required=True, help="your match-lock config")
    parser.add_argument(
        "--dest",
        type=Path,
        help="the cache folder (default: $MATCHLOCK_CACHE or the user cache folder)",
    )
    parser.add_argument("--engine-root", type=Path, help="the game's folder")
    parser.add_argument("--log", type=Path, help="your log of the room (continued if it exists)")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout")
    parser.add_argument("--deadline", type=float, help="give up after this many seconds")
    parser.add_argument(
        "--retry-delay",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between attempts to reach the host (default 1)",
    )
    parser.add_argument("--host", action="store_true", help="host the room at URL in this process")
    parser.add_argument(
        "--host-log-dir", type=Path, help="with --host: the room logs (DEST/host-logs)"
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=LINGER,
        metavar="S",
        help="with --host: once your room has closed, keep hosting up to S seconds until every "
        f"member has been sent the close (default {LINGER:g})",
    )
    parser.add_argument(
        "--no-serve",
        dest="serve",
        action="store_false",
        help="never serve your pieces to other members (serving is on by default)",
    )
    parser.add_argument(
        "--room-source",
        choices=("first", "last", "never"),
        help="where room members come among each piece's sources (default: the room config's "
        "choice, else first over lan:// and last otherwise)",
    )
    parser.add_argument(
        "--upload-limit",
        type=_bytes_per_second,
        metavar="BYTES",
        help="serve at most BYTES bytes a second to other members",
    )
    add_limit_arguments(parser, prefix="with --host: ")
    parser.set_defaults(func=run)


def _bytes_per_second(text: str) -> int:
    """An upload limit: a whole number of bytes a second above 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a number of bytes a second above 0, not {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Join the room; see the module docs for output and exit codes."""
    if args.host and len(args.url) != 1:
        raise UsageError(f"--host hosts the room at one URL, not {len(args.url)}")
    room = load_room_config(args.room)
    config = load_matchlock_config(args.config)
    key = load_private_key(args.key)
    args.dest = cache_root(args.dest)
    console = Console(stderr=args.json, highlight=False)
    try:
        folders = run_loop(_join(args, room, config, key, console))
    except JoinRefusedError as error:
        _fail(args, console, {"type": "error", "code": "refused", "message": str(error)})
        return EXIT_REFUSED
    except RoomIncompleteError as error:
        if not args.json:
            console.print(state_table(error.state))
        state = error.state.model_dump(mode="json")
        _fail(
            args,
            console,
            {"type": "error", "code": "incomplete", "message": str(error), "state": state},
        )
        return EXIT_INCOMPLETE
    record_cache_use(args.dest, folders, room.room_id, config, clock=time.time)
    fingerprint = content_fingerprint(room)
    if args.json:
        shown = {k: str(v.resolve()) for k, v in folders.items()}
        _json_line({"type": "result", "folders": shown, "fingerprint": fingerprint.as_json()})
    else:
        for piece, folder in folders.items():
            console.print(printable(f"{piece} -> {folder}"), soft_wrap=True, markup=False)
        console.print(f"content fingerprint: {fingerprint.short}", markup=False)
    return 0


async def _join(
    args: argparse.Namespace,
    room: RoomConfig,
    config: MatchLockConfig,
    key: Ed25519PrivateKey,
    console: Console,
) -> dict[str, Path]:
    host = listener = None
    connect: Connector | None = None
    if args.host:
        host = RoomHost(args.host_log_dir or args.dest / "host-logs", limits=limits_of(args))
        await host.start()
        listener = await listen(args.url[0], host)
        console.print(f"hosting room {room.room_id} at {listener.url}", style="bold")
        connect = memory_connector(host)
    show, live = _viewer(args.json, console, _live_sources(args, room, config))
    try:
        if live is not None:
            live.start()
        joining = join(
            args.url,
            room=room,
            user_id=args.user,
            key=key,
            config=config,
            dest=args.dest,
            engine_root=args.engine_root,
            log_path=args.log,
            on_event=show,
            deadline=args.deadline,
            retry_delay=args.retry_delay,
            connect=connect,
            serve=args.serve,
            room_source=args.room_source,
            upload_limit=args.upload_limit,
        )
        folders = await (joining if host is None else host.unless_failed(joining))
        if host is not None and not await host.linger(room.room_id, args.linger):
            logger.warning(
                "stopped hosting room %s after --linger %g s: not every member was sent its close",
                room.room_id,
                args.linger,
            )
        return folders
    finally:
        if live is not None:
            live.stop()
        if listener is not None:
            await listener.close()
        if host is not None:
            await host.stop()


def _live_sources(
    args: argparse.Namespace, room: RoomConfig, config: MatchLockConfig
) -> LiveSources:
    """Where this member's pieces come from, for the live table (the join's room source)."""
    lan = any(url.startswith("lan://") for url in args.url)
    source = args.room_source or room.restrictions.room_source or ("first" if lan else "last")
    return LiveSources(room, config, args.user, source)


def _viewer(
    as_json: bool, console: Console, sources: LiveSources | None = None
) -> tuple[Callable[[ev.Event], None], Live | None]:
    """What to do with each room event: a JSON line, a live table (with, given ``sources``,
    where each of this member's pieces comes from and who holds it), or a line of text."""
    if as_json:
        return lambda event: _json_line(
            {"type": "event", "event": event.model_dump(mode="json")}
        ), None
    view = Room()
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None

    def show(event: ev.Event) -> None:
        view.apply(event)
        if sources is not None:
            sources.apply(event)
        if live is not None:
            state = view.snapshot()
            table = state_table(state)
            shown = table if sources is None else Group(table, sources_table(sources, state))
            live.update(shown, refresh=True)
        else:
            console.print(describe(event), markup=False)

    return show, live


def _json_line(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _fail(args: argparse.Namespace, console: Console, error: dict[str, object]) -> None:
    if args.json:
        _json_line(error)
    else:
        message = printable(str(error["message"]))
        console.print(message, style="bold red", soft_wrap=True, markup=False)
