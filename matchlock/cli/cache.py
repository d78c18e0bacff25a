"""``matchlock cache list | verify | gc``: the shared cache, seen and kept tidy.

``list`` shows each installed folder (its pieces, size, when it was last used and by which room);
``verify`` reads every folder and exits 1 when one is damaged; ``gc`` removes the folders no room
or download used in the last ``--keep-days`` days (30 by default), with the archives kept to
serve them to a room, skipping whatever another process is installing right now. The cache is
``--cache DIR``, else ``$MATCHLOCK_CACHE``, else the platform's user cache folder
(docs/cache.md). ``--json`` prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from matchlock.downloads.manage import (
    CachedFolder,
    cache_root,
    collect_garbage,
    list_cache,
    verify_cache,
)

__all__ = ["register"]

_DEFAULT_KEEP_DAYS = 30.0


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of days >= 0, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cache`` and its ``list``, ``verify`` and ``gc`` sub-commands."""
    parser = subparsers.add_parser(
        "cache",
        help="list, verify and clean the shared cache",
        description="List, verify and garbage-collect the cache every download and room shares.",
    )
    commands = parser.add_subparsers(dest="cache_command", metavar="CACHE_COMMAND", required=True)
    for name, summary, func in (
        ("list", "what is cached: pieces, size, last use", run_list),
        ("verify", "check every cached folder; exit 1 when one is damaged", run_verify),
        ("gc", "remove what no room or download used recently", run_gc),
    ):
        command = commands.add_parser(
            name, help=summary, description=summary[0].upper() + summary[1:] + "."
        )
        command.add_argument(
            "--cache",
            type=Path,
            metavar="DIR",
            help="the cache (default: $MATCHLOCK_CACHE or the user cache folder)",
        )
        command.add_argument("--json", action="store_true", help="JSON lines on stdout")
        if name == "gc":
            command.add_argument(
                "--keep-days",
                type=_days,
                default=_DEFAULT_KEEP_DAYS,
                metavar="N",
                help=f"keep what was used in the last N days (default {_DEFAULT_KEEP_DAYS:g})",
            )
        command.set_defaults(func=func)


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(moment))


def _describe(entry: CachedFolder) -> str:
    pieces = ", ".join(entry.pieces) or "no piece recorded"
    by = f"by {entry.used_by}" if entry.used_by else "(installed; no use recorded)"
    return (
        f"{entry.path.name}  {entry.size} bytes  {pieces}  last used {_when(entry.last_used)} {by}"
    )


def run_list(args: argparse.Namespace) -> int:
    """Print every cached folder."""
    root = cache_root(args.cache)
    entries = list_cache(root)
    if args.json:
        for entry in entries:
            print(json.dumps({"type": "cached", **entry.as_json()}))
        return 0
    print(f"cache {root}: {len(entries)} folder(s), {sum(e.size for e in entries)} bytes")
    for entry in entries:
        print(f"  {_describe(entry)}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Check every folder; exit 1 when one is damaged."""
    root = cache_root(args.cache)
    verdicts = verify_cache(root)
    damaged = [v for v in verdicts if v.status == "damaged"]
    for verdict in verdicts:
        if args.json:
            payload = {"type": "verdict", "status": verdict.status, "reason": verdict.reason}
            print(json.dumps({**payload, **verdict.folder.as_json()}))
        else:
            reason = f": {verdict.reason}" if verdict.reason else ""
            print(f"{verdict.status:12} {verdict.folder.path}{reason}")
    if not args.json:
        print(f"cache {root}: {len(verdicts)} folder(s) checked, {len(damaged)} damaged")
    return 1 if damaged else 0


def run_gc(args: argparse.Namespace) -> int:
    """Remove what was not used in the last ``--keep-days`` days."""
    root = cache_root(args.cache)
    done = collect_garbage(root, args.keep_days, clock=time.time)
    if args.json:
        for entry in done.removed:
            print(json.dumps({"type": "removed", **entry.as_json()}))
        for entry in done.busy:
            print(json.dumps({"type": "busy", **entry.as_json()}))
        for part in done.parts:
            print(json.dumps({"type": "removed_part", "path": str(part)}))
        for archive in done.archives:
            print(json.dumps({"type": "removed_archive", "path": str(archive)}))
        return 0
    for entry in done.removed:
        print(f"removed {_describe(entry)}")
    for entry in done.busy:
        print(f"skipped {entry.path.name}: another process is installing it")
    print(
        f"cache {root}: removed {len(done.removed)} folder(s) ({done.freed} bytes) and "
        f"{len(done.parts)} stale partial download(s), {len(done.archives)} archive(s) kept "
        "for serving the room; kept what was used in the last "
        f"{args.keep_days:g} day(s)"
    )
    return 0
