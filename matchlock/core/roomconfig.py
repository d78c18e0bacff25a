"""Building a room config from a match-lock config: what ``matchlock room new`` does.

:func:`new_room` chooses the pieces (or every mandatory one), pins each piece's content (its
archive's sha256 and size, its folder's digest and size when the config gives both), derives
restrictions that fit exactly what was chosen unless told otherwise, and checks the result. The
room it returns is unsigned: each expected user signs it (:func:`matchlock.core.signing.sign_room`).

Pure core: no files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from matchlock.core.config import (
    SCHEMES,
    MatchLockConfig,
    Piece,
    RoomConfig,
    RoomSource,
    parse_room_config,
    split_piece_key,
)
from matchlock.core.errors import Problem, RestrictionError, UsageError
from matchlock.core.fitting import require_room_fits

__all__ = ["new_room"]


def new_room(
    config: MatchLockConfig,
    room_id: str,
    users: Mapping[str, str],
    pieces: Sequence[str] | None = None,
    *,
    allowed_collections: Sequence[str] | None = None,
    max_pieces: int | None = None,
    max_piece_bytes: int | None = None,
    max_total_bytes: int | None = None,
    allowed_schemes: Sequence[str] | None = None,
    room_source: RoomSource | None = None,
) -> RoomConfig:
    """An unsigned room config for ``users`` (user id -> base64 public key) expecting ``pieces``
    (``collection/piece``; default: every mandatory piece of ``config``).

    Restrictions not given fit the chosen pieces exactly: their collections, their count, the
    largest and the total size, the schemes their resolvables use. ``room_source`` (where room
    members come among each piece's sources) is left out unless given. Raises
    :class:`~matchlock.core.errors.RestrictionError` naming each chosen piece the config lacks or
    each restriction broken, :class:`~matchlock.core.errors.ConfigError` for a malformed id.
    """
    chosen = list(dict.fromkeys(pieces if pieces else config.pieces(mandatory_only=True)))
    if not chosen:
        raise UsageError("the match-lock config has no mandatory pieces: choose the pieces")
    grouped: dict[str, list[str]] = {}
    missing: list[Problem] = []
    for key in chosen:
        collection, name = split_piece_key(key)
        names = grouped.setdefault(collection, [])
        if config.piece(key) is None:
            why = "piece is not in the match-lock config"
            missing.append(Problem(f"$.pieces.{collection}[{len(names)}]", why, json.dumps(name)))
        names.append(name)
    if missing:
        raise RestrictionError(missing)
    present = {key: piece for key in chosen if (piece := config.piece(key)) is not None}
    sizes = [piece.content_size for piece in present.values()]
    used = {r.scheme for piece in present.values() for r in piece.resolvables}
    largest = max(sizes, default=0)
    data = {
        "room_id": room_id,
        "restrictions": {
            "allowed_collections": list(allowed_collections or grouped),
            "max_pieces": len(chosen) if max_pieces is None else max_pieces,
            "max_piece_bytes": largest if max_piece_bytes is None else max_piece_bytes,
            "max_total_bytes": sum(sizes) if max_total_bytes is None else max_total_bytes,
            "allowed_schemes": list(allowed_schemes or [s for s in SCHEMES if s in used]),
            **({} if room_source is None else {"room_source": room_source}),
        },
        "pieces": grouped,
        "users": {user: {"public_key": key} for user, key in users.items()},
        "content": {key: _pins(piece) for key, piece in present.items()},
    }
    room = parse_room_config(json.dumps(data), source="the new room config")
    require_room_fits(room, config)
    return room


def _pins(piece: Piece) -> dict[str, object]:
    """What a room pins of ``piece``: its archive's sha256 and size when it has one, and its
    folder's digest and size when the config gives both."""
    pins: dict[str, object] = {}
    if piece.archive is not None:
        pins["sha256"], pins["size"] = piece.archive
    if piece.folder is not None:
        pins["folder_sha256"], pins["folder_size"] = piece.folder
    return pins
