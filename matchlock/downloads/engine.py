"""Where the game keeps a piece in its own files, so a piece it already has is not downloaded.

A collection may give an ``engine_path`` template such as ``chars/{piece}``: with the game's root
folder (``--engine-root``), ``chars/kfm`` under that root is where the game keeps the piece
``chars/kfm``. Such a folder is only a candidate: :mod:`matchlock.downloads.verify` decides
whether it holds exactly the piece. matchlock never writes into the game's files; a folder
there that differs is reported and the piece is installed into the cache instead.

The config already refuses templates that are absolute or climb with ``..``, and piece ids that
are not plain names; the path is checked once more here, lexically (links inside the game's
folder are the game's business).
"""

from __future__ import annotations

from pathlib import Path

from matchlock.core.config import MatchLockConfig, split_piece_key

__all__ = ["engine_folders"]


def engine_folders(config: MatchLockConfig, root: Path | None) -> dict[str, Path]:
    """Every piece whose collection has an ``engine_path``, mapped to its folder under ``root``.

    Empty without a root. A template that would leave the root is skipped.
    """
    if root is None:
        return {}
    base = root.absolute()
    found: dict[str, Path] = {}
    for key in config.pieces():
        collection, name = split_piece_key(key)
        template = config.collections[collection].engine_path
        if template is None:
            continue
        # str.replace, not str.format: other braces in a path are literal.
        relative = Path(template.replace("{piece}", name))
        # Lexical check only: a game may well keep a content folder behind a link.
        if not relative.is_absolute() and ".." not in relative.parts:
            found[key] = base / relative
    return found
