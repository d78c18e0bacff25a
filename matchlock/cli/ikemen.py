"""``matchlock ikemen RESULT``: what Ikemen GO needs to start a room's match on its folders.

RESULT is the output of ``join --json`` or ``download --json`` (a file, or ``-`` for standard
input): its last ``{"type": "result", "folders": ...}`` line. Prints the command-line arguments
for a quick-versus match (``-p1 ... -p2 ... -s ...``) and the ``select.def`` lines that list
every character and stage; ``--json`` prints them as one object. Nothing is written into the
game's files unless ``--write-select PATH`` asks (then ``PATH.bak`` keeps the file as it was).
See :mod:`matchlock.app.ikemen` and docs/ikemen-go.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from matchlock.app.ikemen import ikemen_match, write_select
from matchlock.core.errors import InputError

__all__ = ["register"]


def _def_spec(text: str) -> tuple[str, str]:
    key, sep, name = text.partition("=")
    if not sep or "/" not in key or not name:
        raise argparse.ArgumentTypeError(f"expected COLLECTION/PIECE=FILE, got {text!r}")
    return key, name


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ikemen`` to the command line."""
    parser = subparsers.add_parser(
        "ikemen",
        help="turn a room's folders into Ikemen GO arguments and select.def lines",
        description="Read the result of join --json or download --json and print the Ikemen "
        "GO arguments for the match and the select.def lines for its pieces.",
    )
    parser.add_argument("result", metavar="RESULT", help="the --json output (a file, or -)")
    parser.add_argument(
        "--player",
        action="append",
        metavar="COLLECTION/PIECE",
        help="a character, once per player in order (default: the first two characters)",
    )
    parser.add_argument("--stage", metavar="COLLECTION/PIECE", help="default: the first stage")
    parser.add_argument(
        "--characters",
        action="append",
        metavar="COLLECTION",
        help="a collection of characters (default: chars)",
    )
    parser.add_argument(
        "--stages",
        action="append",
        metavar="COLLECTION",
        help="a collection of stages (default: stages)",
    )
    parser.add_argument(
        "--def",
        dest="defs",
        action="append",
        type=_def_spec,
        default=[],
        metavar="COLLECTION/PIECE=FILE",
        help="the .def file of a piece, inside its folder, when it holds several",
    )
    parser.add_argument(
        "--with-fingerprint",
        action="store_true",
        help="add -contentfingerprint FINGERPRINT (for a patched Ikemen GO)",
    )
    netplay = parser.add_mutually_exclusive_group()
    netplay.add_argument(
        "--connect",
        metavar="ADDRESS",
        help="play over netplay with the player hosting at ADDRESS (adds -ip ADDRESS)",
    )
    netplay.add_argument(
        "--host", action="store_true", help="host the netplay match (adds -ip with no address)"
    )
    parser.add_argument(
        "--write-select",
        type=Path,
        metavar="PATH",
        help="add the pieces to this select.def (its old content goes to PATH.bak)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_ikemen)


def _is_result(value: dict[str, Any]) -> bool:
    return value.get("type") == "result" and isinstance(value.get("folders"), dict)


def _result(source: str) -> dict[str, Any]:
    """The last result object of a ``--json`` output."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{source}: cannot read it: {error.strerror}") from None
    for line in reversed(text.splitlines()):
        try:
            value: object = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and _is_result(value):
            return value
    raise InputError(f'{source}: no {{"type": "result", "folders": ...}} line in it')


def run_ikemen(args: argparse.Namespace) -> int:
    """Print (and, when asked, write) what Ikemen GO needs."""
    result = _result(args.result)
    match = ikemen_match(
        result["folders"],
        characters=args.characters or ("chars",),
        stages=args.stages or ("stages",),
        defs=dict(args.defs),
    )
    fingerprint = (result.get("fingerprint") or {}).get("short")
    if args.with_fingerprint and not fingerprint:
        raise InputError(f"{args.result}: its result carries no fingerprint")
    arguments = (
        match.arguments(
            args.player,
            args.stage,
            fingerprint if args.with_fingerprint else None,
            "" if args.host else args.connect,
        )
        if match.characters
        else []
    )
    characters, stages = match.select_lines()
    backup = None
    if args.write_select is not None:
        backup = write_select(args.write_select, match, f"content fingerprint {fingerprint}")
    if args.json:
        payload = {
            "type": "ikemen",
            "arguments": arguments,
            "select": {"characters": characters, "stages": stages},
            "others": list(match.others),
            "fingerprint": fingerprint,
            "backup": str(backup) if backup else None,
        }
        print(json.dumps(payload))
        return 0
    print(f"arguments: {shlex.join(arguments)}")
    print("select.def [Characters]:", *characters, sep="\n  ")
    print("select.def [ExtraStages]:", *stages, sep="\n  ")
    if match.others:
        print(f"not for Ikemen GO's select.def: {', '.join(match.others)}")
    if backup is not None:
        print(f"wrote {args.write_select} (the file as it was: {backup})")
    return 0
