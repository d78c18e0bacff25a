"""``matchlock demo``: the whole job in one command, on embedded defaults, loopback only."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markup import escape

from matchlock.cli.loop import run as run_loop
from matchlock.core import events as ev
from matchlock.core.room import Room
from matchlock.tools.demo import run_demo
from matchlock.tools.render import describe, state_table


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` sub-command."""
    parser = commands.add_parser(
        "demo",
        help="run a complete room on this machine, with nothing to configure",
        description="Make keys, content, a match-lock config and a signed room config; serve "
        "the content from a mirror on 127.0.0.1 (beside one that is down and one that serves "
        "corrupt bytes); host the room; let every user join; show what each one got.",
    )
    parser.add_argument("--users", type=int, default=3, help="2 to 8 (default 3)")
    parser.add_argument(
        "--pieces", type=int, default=4, help="mandatory pieces, 2 to 12 (default 4)"
    )
    parser.add_argument("--transport", choices=("ws", "tcp"), default="ws")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="work in DIR (default: a new temp folder)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its story; 0 when every user got every piece."""
    console = Console(highlight=False)
    view = Room()
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    watcher = ""

    def on_event(user: str, event: ev.Event) -> None:
        nonlocal watcher
        watcher = watcher or user  # the table shows the room as the first user sees it
        if user != watcher:
            return
        view.apply(event)
        if live is not None:
            live.update(state_table(view.snapshot()), refresh=True)
        else:
            console.print(f"  {escape(describe(event))}", soft_wrap=True)

    console.print("[bold]matchlock demo[/]: a room on 127.0.0.1, nothing leaves this machine")
    if live is not None:
        live.start()
    try:
        result = run_loop(
            run_demo(
                args.keep,
                users=args.users,
                pieces=args.pieces,
                transport=args.transport,
                on_event=on_event,
            )
        )
    finally:
        if live is not None:
            live.stop()
    if live is None:
        console.print(state_table(view.snapshot()))
    console.print(
        f"\nEveryone had everything and said goodbye; the room at {result.url} closed.",
        soft_wrap=True,
    )
    for user, folders in result.folders.items():
        console.print(f"\n[bold]{user}[/] got:")
        for piece, folder in folders.items():
            console.print(f"  {piece} -> {folder}", soft_wrap=True)
    console.print(f"\nEverything is in {result.folder}:", soft_wrap=True)
    console.print(
        f"  keys/, matchlock.json, room.json, the host's log {result.host_log}", soft_wrap=True
    )
    console.print("  and each user's cache/ and room.log")
    console.print("\nSee what happened, and the timeline picture:")
    console.print(f"  matchlock replay {result.host_log}", soft_wrap=True)
    console.print(
        f"  matchlock replay {result.host_log} --html {result.folder / 'timeline.html'}",
        soft_wrap=True,
    )
    return 0
