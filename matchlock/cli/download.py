"""``matchlock download MATCHLOCK.json --dest DIR``: install a match-lock config's pieces.

On a terminal it shows live progress (one bar per piece being worked on and one for the whole
job: bytes, rate, time left), a line for each resolvable that fails or folder that is refused,
then a summary table. With ``--json`` stdout carries only JSON lines, one object each, for a
launcher that drives matchlock as a subprocess:

- every event, as the event log stores it (``{"type": "piece_progress", ...}``), among them
  ``folder_rejected`` (``piece``, ``folder``, ``where``, ``reason``) for an existing folder
  that did not verify (it was not used);
- last, ``{"type": "result", "folders": {"collection/piece": "/abs/folder"}, "failures":
  {"collection/piece": [{"index", "url", "reason"}, ...]}, "fingerprint": {"short", "full",
  "pieces"}}``: the content fingerprint (:mod:`matchlock.core.fingerprint`) of the pieces that
  installed, equal to a room's that pins exactly those pieces.

``--dest`` defaults to the shared cache (``$MATCHLOCK_CACHE`` or the user cache folder); every
cached folder used is recorded for ``matchlock cache``.

Exit codes: 0 every requested piece is installed; 1 some piece failed (the reasons are in the
table, or in ``failures``); 2 bad usage or input (unreadable config, log file already there);
130 interrupted. See docs/downloads.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from matchlock.app.configfile import load_matchlock_config
from matchlock.cli.loop import run as run_loop
from matchlock.core.config import MatchLockConfig
from matchlock.core.events import (
    DownloadOpened,
    Event,
    PieceFailed,
    PieceFinished,
    PieceProgress,
    PieceStarted,
    ResolvableFailed,
    ResolvableFailure,
)
from matchlock.core.fingerprint import pieces_fingerprint
from matchlock.core.safe_text import printable
from matchlock.downloads import DownloadError, FolderRejected, download
from matchlock.downloads.manage import cache_root, record_cache_use

__all__ = ["register", "run"]

_MAX_ROWS = 40


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``download`` sub-command."""
    parser = commands.add_parser(
        "download",
        help="download and install the pieces of a match-lock config",
        description="Install every piece of a match-lock config (or only the mandatory ones) "
        "into a content-addressed cache, verified, resuming partial downloads.",
    )
    parser.add_argument("config", type=Path, metavar="MATCHLOCK.json", help="the match-lock config")
    parser.add_argument(
        "--dest",
        type=Path,
        metavar="DIR",
        help="the cache the pieces are installed into, shared by all configs "
        "(default: $MATCHLOCK_CACHE or the user cache folder)",
    )
    parser.add_argument(
        "--mandatory-only", action="store_true", help="only the pieces of mandatory collections"
    )
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=8,
        metavar="N",
        help="pieces worked on at a time (default 8)",
    )
    parser.add_argument(
        "--engine-root",
        type=Path,
        metavar="DIR",
        help="the game's folder: pieces it already has are not downloaded",
    )
    parser.add_argument(
        "--log",
        type=Path,
        metavar="FILE",
        help="write the event log here (a new file; see matchlock replay)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print only JSON lines on stdout (events, then the result)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the download; 0 when every piece is installed, 1 when some piece failed."""
    config = load_matchlock_config(args.config)
    args.dest = cache_root(args.dest)
    if args.json:
        return _run_json(config, args, sys.stdout)
    return _run_terminal(config, args, Console(highlight=False))


Failures = dict[str, tuple[ResolvableFailure, ...]]


def _download(
    config: MatchLockConfig,
    args: argparse.Namespace,
    on_event: Callable[[Event], None],
    on_notice: Callable[[FolderRejected], None] | None,
) -> tuple[dict[str, Path], Failures]:
    """Run the job; the folders that installed and the pieces that failed."""
    try:
        folders = run_loop(
            download(
                config,
                args.dest,
                mandatory_only=args.mandatory_only,
                jobs=args.jobs,
                engine_root=args.engine_root,
                log_path=args.log,
                on_event=on_event,
                on_notice=on_notice,
            )
        )
    except DownloadError as error:
        folders, failures = error.folders, error.failures
    else:
        failures = {}
    record_cache_use(args.dest, folders, "download", config, clock=time.time)
    return folders, failures


def _run_json(config: MatchLockConfig, args: argparse.Namespace, out: TextIO) -> int:
    def line(payload: str) -> None:
        out.write(payload + "\n")
        out.flush()

    def on_event(event: Event) -> None:
        line(event.model_dump_json())

    folders, failures = _download(config, args, on_event, None)  # rejections are events
    line(
        json.dumps(
            {
                "type": "result",
                "folders": {key: str(folder) for key, folder in folders.items()},
                "failures": {
                    key: [f.model_dump() for f in reasons] for key, reasons in failures.items()
                },
                "fingerprint": pieces_fingerprint(config, list(folders)).as_json(),
            }
        )
    )
    return 1 if failures else 0


def _run_terminal(config: MatchLockConfig, args: argparse.Namespace, console: Console) -> int:
    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    display = _LiveDisplay(progress, console)
    with progress:
        folders, failures = _download(config, args, display.on_event, display.on_notice)
    console.print(_summary(folders, failures, display.sources))
    fingerprint = pieces_fingerprint(config, list(folders)).short
    console.print(f"content fingerprint of the {len(folders)} installed piece(s): {fingerprint}")
    return 1 if failures else 0


class _LiveDisplay:
    """Turns events into progress bars: one per piece in progress and one for the whole job."""

    def __init__(self, progress: Progress, console: Console) -> None:
        self._progress = progress
        self._console = console
        self._overall: TaskID | None = None
        self._bars: dict[str, TaskID] = {}
        self._done: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self.sources: dict[str, str] = {}
        """Where each finished piece came from (``engine``, ``cache`` or a URL)."""

    def on_event(self, event: Event) -> None:
        """Update the bars for one event."""
        if isinstance(event, DownloadOpened):
            self._sizes = dict(event.sizes)
            total = sum(self._sizes.values())
            self._overall = self._progress.add_task(f"all {len(self._sizes)} pieces", total=total)
        elif isinstance(event, PieceStarted):
            size = self._sizes.get(event.piece, 0)
            self._bars[event.piece] = self._progress.add_task(event.piece, total=size)
            self._done[event.piece] = 0
        elif isinstance(event, PieceProgress):
            self._advance(event.piece, event.done)
        elif isinstance(event, ResolvableFailed):
            self._advance(event.piece, 0)
            failure = event.failure
            self._console.print(
                f"[yellow]{escape(event.piece)}[/]: resolvable {failure.index} "
                f"({escape(printable(failure.url))}) failed: {escape(printable(failure.reason))}"
            )
        elif isinstance(event, PieceFinished):
            self._advance(event.piece, self._sizes.get(event.piece, 0))
            self.sources[event.piece] = event.source
            self._drop(event.piece)
        elif isinstance(event, PieceFailed):
            self._advance(event.piece, 0)
            if self._overall is not None:  # a failed piece no longer counts towards the total
                total = sum(self._sizes.values()) - self._sizes.get(event.piece, 0)
                self._sizes[event.piece] = 0
                self._progress.update(self._overall, total=total)
            self._drop(event.piece)

    def on_notice(self, notice: FolderRejected) -> None:
        """Print a refused folder above the bars."""
        self._console.print(f"[yellow]{escape(printable(str(notice)))}[/]", soft_wrap=True)

    def _advance(self, piece: str, done: int) -> None:
        delta = done - self._done.get(piece, 0)
        self._done[piece] = done
        if piece in self._bars:
            self._progress.update(self._bars[piece], completed=done)
        if self._overall is not None:
            self._progress.advance(self._overall, delta)

    def _drop(self, piece: str) -> None:
        bar = self._bars.pop(piece, None)
        if bar is not None:
            self._progress.remove_task(bar)


def _summary(folders: dict[str, Path], failures: Failures, sources: dict[str, str]) -> Table:
    """One row per piece (successes grouped by source when there are many), failures first."""
    table = Table(title="matchlock download", title_justify="left")
    table.add_column("piece", no_wrap=True)
    table.add_column("result")
    table.add_column("source / folder or reason", overflow="fold")
    for key, reasons in failures.items():
        lines = [printable(f"[{f.index}] {f.url}: {f.reason}") for f in reasons] or [
            "no resolvable tried"
        ]
        table.add_row(key, "[red]failed[/]", escape("\n".join(lines)))
    if len(folders) <= _MAX_ROWS:
        for key, folder in folders.items():
            where = f"{printable(sources.get(key, ''))}\n{printable(str(folder))}"
            table.add_row(key, "[green]installed[/]", escape(where))
        return table
    counts: dict[str, int] = {}
    for key in folders:
        kind = sources.get(key, "")
        kind = kind if kind in ("engine", "cache") else "downloaded"
        counts[kind] = counts.get(kind, 0) + 1
    for kind, count in sorted(counts.items()):
        table.add_row(f"{count} pieces", "[green]installed[/]", kind)
    return table
