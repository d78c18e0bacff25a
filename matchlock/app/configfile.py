"""Config files on disk: read a match-lock or room config from a path, write a room config back.

The parsing itself lives in the core (:mod:`matchlock.core.config`); this module only moves bytes
between files and those parsers. A file that cannot be read becomes a
:class:`~matchlock.core.errors.ConfigError` naming the path, like a file that breaks the schema, so
a caller handles one error for "this config is no good".

Writes are atomic: the bytes go to a temporary file in the same folder, are flushed to disk, and
the temporary file is renamed over the target, so a reader sees the old file or the new one,
never a torn one. This module is part of the shell; it never interprets a config itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from matchlock.core.config import (
    MatchLockConfig,
    RoomConfig,
    parse_matchlock_config,
    parse_room_config,
)
from matchlock.core.errors import ConfigError, Problem
from matchlock.store.files import write_file_atomically

__all__ = [
    "load_matchlock_config",
    "load_room_config",
    "room_config_json",
    "write_room_config",
]


def _read_config_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(str(path), [Problem("$", f"cannot read the file: {reason}")]) from None


def load_matchlock_config(path: str | os.PathLike[str]) -> MatchLockConfig:
    """Read and parse the match-lock config at ``path``.

    Raises :class:`ConfigError` naming ``path``, with every problem, when the file is missing,
    unreadable, not JSON, or breaks the schema.
    """
    path = Path(path)
    return parse_matchlock_config(_read_config_file(path), str(path))


def load_room_config(path: str | os.PathLike[str]) -> RoomConfig:
    """Read and parse the room config at ``path``; errors as :func:`load_matchlock_config`."""
    path = Path(path)
    return parse_room_config(_read_config_file(path), str(path))


def room_config_json(room: RoomConfig) -> str:
    """``room`` as people read it: every field, 2-space indent, non-ASCII kept, final newline.

    This is for files only; signatures cover :func:`matchlock.core.signing.canonical_room_bytes`,
    never this text, so reformatting a room file does not break its signatures.
    """
    return json.dumps(room.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def write_room_config(room: RoomConfig, path: str | os.PathLike[str]) -> None:
    """Write ``room`` to ``path`` as :func:`room_config_json`, atomically."""
    write_file_atomically(path, room_config_json(room).encode("utf-8"))
