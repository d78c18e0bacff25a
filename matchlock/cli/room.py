"""``matchlock room new | sign | add-signature | merge | verify``: make a room config, sign it,
check it.

The workflow: each user runs ``matchlock keygen`` and sends their ``.pub`` file to whoever
creates the room; ``room new`` writes the room config from a match-lock config and those keys;
each user runs ``room sign`` on the file with their private key; ``room verify`` tells whether
the room can open (exit 0) or, per user and per problem, why not (exit 1).

Signing in parallel: every user signs the same unsigned file at once with ``room sign
--detached``, which prints only their signature; whoever collects them runs ``room
add-signature ROOM.json USER=SIG ...`` (each checked against this room, a signature made for
another room refused, naming the user), or ``room merge`` over the signed copies.

Output is a table with colour when stdout is a terminal and plain lines otherwise, so scripts
and tests read the same facts a person sees.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from matchlock.app.configfile import load_matchlock_config, load_room_config, write_room_config
from matchlock.app.keys import load_private_key, load_public_key
from matchlock.core.config import (
    SCHEMES,
    RoomConfig,
    split_piece_key,
)
from matchlock.core.errors import InputError, Problem
from matchlock.core.fitting import check_room
from matchlock.core.roomconfig import new_room
from matchlock.core.safe_text import printable
from matchlock.core.signing import (
    SignatureReport,
    add_signature,
    detached_signature,
    merge_signed,
    public_key_to_b64,
    sign_room,
    signature_report,
)

__all__ = ["register"]

_EXIT_OK = 0
_EXIT_FAILED = 1

_WHY = {
    "valid": "valid signature",
    "missing": "has not signed",
    "malformed": "signature is not base64 of 64 bytes",
    "wrong": "signature does not verify: it covers another version of the room or another key",
    "unexpected": "signed, but the room does not expect this user",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``room`` and its ``new``, ``sign``, ``add-signature``, ``merge`` and ``verify``
    sub-commands to the command line."""
    room = subparsers.add_parser(
        "room",
        help="make, sign and verify room configs",
        description="Make, sign and verify room configs.",
    )
    commands = room.add_subparsers(dest="room_command", metavar="ROOM_COMMAND", required=True)
    _register_new(commands)
    sign = commands.add_parser(
        "sign",
        help="add your signature to a room config",
        description="Sign ROOM.json as USER_ID and rewrite the file.",
    )
    sign.add_argument("room", metavar="ROOM.json", type=Path)
    sign.add_argument("--user", required=True, metavar="USER_ID", help="who is signing")
    sign.add_argument("--key", required=True, metavar="PATH", type=Path, help="your private key")
    sign.add_argument(
        "--detached",
        action="store_true",
        help="print only your signature (for room add-signature); leave the file unchanged",
    )
    sign.set_defaults(func=run_sign)
    _register_collect(commands)
    verify = commands.add_parser(
        "verify",
        help="check a room's signatures (and, given a config, its pieces)",
        description="Exit 0 when every expected user signed validly, the room pins the content "
        "of its pieces and, with --config, every piece exists with that content and the "
        "restrictions hold; otherwise print each problem and exit 1.",
    )
    verify.add_argument("room", metavar="ROOM.json", type=Path)
    verify.add_argument(
        "--config",
        metavar="MATCHLOCK.json",
        type=Path,
        help="also check the room against this match-lock config",
    )
    verify.set_defaults(func=run_verify)


def _register_collect(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = commands.add_parser(
        "add-signature",
        help="add signatures made with room sign --detached",
        description="Check each USER=SIGNATURE against ROOM.json and add it; refuse (exit 2, "
        "naming the user, the file unchanged) a signature that does not verify.",
    )
    add.add_argument("room", metavar="ROOM.json", type=Path)
    add.add_argument("signatures", nargs="+", type=_signature_spec, metavar="USER_ID=SIGNATURE")
    add.set_defaults(func=run_add_signature)
    merge = commands.add_parser(
        "merge",
        help="merge several signed copies of one room",
        description="Write one room carrying the signatures of every copy; refuse copies that "
        "are not the same room (their canonical bytes differ), saying which.",
    )
    merge.add_argument("rooms", nargs="+", type=Path, metavar="ROOM.json")
    merge.add_argument("--out", required=True, type=Path, metavar="ROOM.json")
    merge.set_defaults(func=run_merge)


def _signature_spec(text: str) -> tuple[str, str]:
    user_id, sep, signature = text.partition("=")
    if not sep or not user_id or not signature:
        raise argparse.ArgumentTypeError(f"expected USER_ID=SIGNATURE, got {text!r}")
    return user_id, signature


def _register_new(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    new = commands.add_parser(
        "new",
        help="write a new, unsigned room config",
        description="Write a room config for the chosen pieces (every mandatory piece when no "
        "--piece is given). Restrictions not given are derived from the chosen pieces: their "
        "collections, their count, their largest and total sizes, their resolvables' schemes. "
        "Each piece's content is pinned from the match-lock config: its archive's sha256 and "
        "size, and its folder's folder_sha256 and folder_size when the config gives both (a "
        "folder-only piece, which room members give each other, pins only those).",
    )
    new.add_argument("--room-id", required=True, metavar="ID")
    new.add_argument("--config", required=True, metavar="MATCHLOCK.json", type=Path)
    new.add_argument(
        "--user",
        required=True,
        action="append",
        type=_user_spec,
        metavar="USER_ID=PUBKEY_FILE",
        help="an expected user and their .pub file",
    )
    new.add_argument("--piece", action="append", type=_piece_spec, metavar="COLLECTION/PIECE")
    new.add_argument("--max-pieces", type=_count, metavar="N")
    new.add_argument("--max-piece-bytes", type=_count, metavar="N")
    new.add_argument("--max-total-bytes", type=_count, metavar="N")
    new.add_argument("--allow-scheme", action="append", choices=SCHEMES, metavar="SCHEME")
    new.add_argument("--allow-collection", action="append", metavar="COLLECTION")
    new.add_argument(
        "--room-source",
        choices=("first", "last", "never"),
        help="where room members come among each piece's sources (restrictions.room_source; "
        "left out: each member's join decides, last by default)",
    )
    new.add_argument("--out", required=True, metavar="ROOM.json", type=Path)
    new.add_argument("--force", action="store_true", help="replace an existing ROOM.json")
    new.set_defaults(func=run_new)


def _user_spec(text: str) -> tuple[str, Path]:
    user_id, sep, key_file = text.partition("=")
    if not sep or not user_id or not key_file:
        raise argparse.ArgumentTypeError(f"expected USER_ID=PUBKEY_FILE, got {text!r}")
    return user_id, Path(key_file)


def _piece_spec(text: str) -> str:
    try:
        split_piece_key(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


# --- room new ----------------------------------------------------------------------------------


def _users(specs: list[tuple[str, Path]]) -> dict[str, str]:
    users: dict[str, str] = {}
    for user_id, key_file in specs:
        if user_id in users:
            raise InputError(f"user {user_id!r} is given twice with --user")
        users[user_id] = public_key_to_b64(load_public_key(key_file))
    return users


def run_new(args: argparse.Namespace) -> int:
    """Build the room config, check that it fits, and write it (unsigned)."""
    if args.out.exists() and not args.force:
        raise InputError(f"{args.out}: already exists; use --force to replace it")
    config = load_matchlock_config(args.config)
    room = new_room(
        config,
        args.room_id,
        _users(args.user),
        args.piece,
        allowed_collections=args.allow_collection,
        max_pieces=args.max_pieces,
        max_piece_bytes=args.max_piece_bytes,
        max_total_bytes=args.max_total_bytes,
        allowed_schemes=args.allow_scheme,
        room_source=args.room_source,
    )
    write_room_config(room, args.out)
    print(
        f"wrote room {room.room_id!r} to {args.out}: {len(room.piece_keys())} piece(s), "
        f"{len(room.users)} user(s), unsigned"
    )
    for user_id in room.users:
        print(f"  next: matchlock room sign {args.out} --user {user_id} --key PRIVATE_KEY")
    return _EXIT_OK


# --- room sign and verify ----------------------------------------------------------------------


def run_sign(args: argparse.Namespace) -> int:
    """Add the user's signature to the room file and say who still has to sign (with
    ``--detached``, print only the signature)."""
    room = load_room_config(args.room)
    if args.detached:
        print(detached_signature(room, args.user, load_private_key(args.key)))
        return _EXIT_OK
    signed = sign_room(room, args.user, load_private_key(args.key))
    write_room_config(signed, args.room)
    print(f"{args.user} signed room {room.room_id!r} in {args.room}; {_still_to_sign(signed)}")
    return _EXIT_OK


def _still_to_sign(room: RoomConfig) -> str:
    report = signature_report(room)
    waiting = [*report.missing, *report.malformed, *report.wrong]
    return f"still to sign: {', '.join(waiting)}" if waiting else "every expected user has signed"


def run_add_signature(args: argparse.Namespace) -> int:
    """Add every given signature (all checked before the file is rewritten)."""
    room = load_room_config(args.room)
    for user_id, signature in args.signatures:
        room = add_signature(room, user_id, signature)
    write_room_config(room, args.room)
    users = ", ".join(user_id for user_id, _ in args.signatures)
    print(f"added the signature(s) of {users} to {args.room}; {_still_to_sign(room)}")
    return _EXIT_OK


def run_merge(args: argparse.Namespace) -> int:
    """Merge the signed copies and write the result to ``--out``."""
    rooms = [load_room_config(path) for path in args.rooms]
    try:
        merged = merge_signed(rooms)
    except InputError as error:
        raise InputError(_name_copies(str(error), args.rooms)) from None
    write_room_config(merged, args.out)
    print(f"merged {len(rooms)} copies into {args.out}; {_still_to_sign(merged)}")
    return _EXIT_OK


def _name_copies(message: str, paths: list[Path]) -> str:
    """``copy N`` in a merge error, with the file it was read from."""
    return re.sub(r"copy (\d+)", lambda m: f"{m[0]} ({paths[int(m[1]) - 1]})", message)


def _user_rows(report: SignatureReport) -> list[tuple[str, str]]:
    statuses = [
        ("valid", report.valid),
        ("missing", report.missing),
        ("malformed", report.malformed),
        ("wrong", report.wrong),
        ("unexpected", report.unexpected),
    ]
    return [(printable(user), status) for status, users in statuses for user in users]


def _print_plain(room: RoomConfig, rows: list[tuple[str, str]], problems: list[Problem]) -> None:
    print(f"room {room.room_id!r}: signatures")
    for user, status in rows:
        print(f"  {user}: {status}: {_WHY[status]}")
    if problems:
        print(f"room {room.room_id!r}: {len(problems)} problem(s) with its pieces")
        for problem in problems:
            print(f"  {printable(str(problem))}")


def _print_rich(room: RoomConfig, rows: list[tuple[str, str]], problems: list[Problem]) -> None:
    console = Console()
    users = Table(title=f"room {room.room_id}: signatures")
    for column in ("user", "status", "why"):
        users.add_column(column)
    for user, status in rows:
        colour = "green" if status == "valid" else "red"
        users.add_row(Text(user), Text(status, style=colour), Text(_WHY[status]))
    console.print(users)
    if problems:
        table = Table(title=f"room {room.room_id}: problems with its pieces")
        for column in ("where", "problem", "value"):
            table.add_column(column)
        for problem in problems:
            path, message, value = map(printable, (problem.path, problem.message, problem.value))
            table.add_row(Text(path), Text(message, style="red"), Text(value))
        console.print(table)


def run_verify(args: argparse.Namespace) -> int:
    """Print every user's signature status and every piece problem; exit 0 only if none."""
    room = load_room_config(args.room)
    report = signature_report(room)
    problems = check_room(room, load_matchlock_config(args.config)) if args.config else []
    show = _print_rich if sys.stdout.isatty() else _print_plain
    show(room, _user_rows(report), problems)
    if report.ok and not problems:
        print(
            f"room {room.room_id!r} is valid: every expected user signed"
            + (" and it fits the match-lock config" if args.config else "")
        )
        return _EXIT_OK
    print(f"room {room.room_id!r} cannot open", file=sys.stderr)
    return _EXIT_FAILED
