"""The ``matchlock`` command line: a thin layer over the Python API.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds its parser
and sets ``func`` to a function taking the parsed arguments and returning the exit code. Commands
print; the library underneath only logs.

Exit codes: 0 success, 1 the job did not succeed (a piece failed, a check failed), 2 bad usage or
bad input (a malformed config, a missing file), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from matchlock import __version__
from matchlock.core.errors import MatchlockError
from matchlock.core.safe_text import printable, printable_error

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run a complete room on this machine, with nothing to configure"),
    "keygen": ("keys", "make an Ed25519 key pair for signing room configs"),
    "room": ("room", "make, sign and verify room configs"),
    "digest": ("digest", "print the digest of an installed folder (for folder_sha256)"),
    "fingerprint": ("fingerprint", "print the content fingerprint of a room (for the game)"),
    "download": ("download", "download and install the pieces of a match-lock config"),
    "serve": ("serve", "host rooms for clients to join"),
    "plan": ("plan", "say where each piece of a room will come from, before joining"),
    "join": ("join", "join a room and get every piece the room expects"),
    "cache": ("cache", "list, verify and clean the shared cache"),
    "ikemen": ("ikemen", "turn a room's folders into Ikemen GO arguments and select.def lines"),
    "lan": ("lan", "list the rooms hosts on this network announce"),
    "replay": ("replay", "rebuild a room or download from its event log"),
    "export": ("export", "write a room's log (from NATS JetStream or a file) as a log file"),
    "simulate": ("simulate", "run seeded simulated rooms and check their invariants"),
    "statecharts": ("statecharts", "export the piece, member and room machines"),
    "schema": ("schema", "print the JSON Schema of a config file"),
}
"""Each command: the module under ``matchlock.cli`` that registers it, and its summary. Only the
module of the command being run is imported, so a light command starts fast."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: ``command``'s own parser in full (every one, when None), the other
    commands as names and summaries."""
    parser = argparse.ArgumentParser(
        prog="matchlock",
        description="Make sure every player in a match has exactly the same content.",
    )
    parser.add_argument("--version", action="version", version=f"matchlock {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, summary) in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(f"matchlock.cli.{module}").register(commands)
        else:
            commands.add_parser(name, help=summary)
    return parser


class _PrintableFormatter(logging.Formatter):
    """Log lines with their control characters escaped: a message may quote a peer (a refused
    peer's reason), and the log goes to a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(printable(line) for line in super().format(record).split("\n"))


def _command(argv: Sequence[str]) -> str:
    """The command named in ``argv`` (the first word that is not an option), or ''."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    words = sys.argv[1:] if argv is None else list(argv)
    name = _command(words)
    args = build_parser(name if name in COMMANDS else "").parse_args(words)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), handlers=[handler])
    try:
        code: int = args.func(args)
    except (MatchlockError, OSError) as error:
        print(printable_error(error, "matchlock: "), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code
