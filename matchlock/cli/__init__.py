"""The ``matchlock`` command line: a thin layer over the Python API.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds its parser
and sets ``func`` to a function taking the parsed arguments and returning the exit code. Commands
print; the library underneath only logs.

Exit codes: 0 success, 1 the job did not succeed (a piece failed, a check failed), 2 bad usage or
bad input (a malformed config, a missing file), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from matchlock import __version__
from matchlock.cli import (
    demo,
    digest,
    download,
    join,
    keys,
    replay,
    room,
    schema,
    serve,
    simulate,
    statecharts,
)
from matchlock.errors import MatchlockError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="matchlock",
        description="Make sure every player in a match has exactly the same content.",
    )
    parser.add_argument("--version", action="version", version=f"matchlock {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands_in_order = (
        demo,
        keys,
        room,
        digest,
        download,
        serve,
        join,
        replay,
        simulate,
        statecharts,
        schema,
    )
    for module in commands_in_order:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except MatchlockError as error:
        print(f"matchlock: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(f"matchlock: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code
