"""``matchlock schema``: print (or write) the JSON Schema of the config files, the wire messages
and the events."""

from __future__ import annotations

import argparse
from pathlib import Path

from matchlock.tools.schemas import SCHEMAS, schema_text


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``schema`` sub-command."""
    parser = commands.add_parser(
        "schema",
        help="print the JSON Schema of a config file, the wire messages or the events",
        description=(
            "Print the JSON Schema (draft 2020-12) of a config file (matchlock, room), of the "
            "messages a member or a host sends (client-message, host-message), or of the events "
            "(event)."
        ),
    )
    parser.add_argument("which", choices=sorted(SCHEMAS), nargs="?", help="which schema")
    parser.add_argument(
        "--write", type=Path, metavar="DIR", help="write every NAME.schema.json into DIR instead"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one schema, or write them."""
    names = [args.which] if args.which else sorted(SCHEMAS)
    if args.write is None:
        if len(names) != 1:
            print(f"matchlock schema: say which: {', '.join(sorted(SCHEMAS))} (or use --write DIR)")
            return 2
        print(schema_text(names[0]), end="")
        return 0
    args.write.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = args.write / f"{name}.schema.json"
        path.write_text(schema_text(name), encoding="utf-8")
        print(path)
    return 0
