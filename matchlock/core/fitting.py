"""Whether a room fits a match-lock config and its own restrictions: what ``matchlock room
verify --config`` and ``matchlock room new`` check, and what a member checks before it joins.

:func:`check_room` lists every problem (a piece the config lacks, a collection not allowed, too
many pieces, a piece or a total too large, no resolvable of an allowed scheme, pinned content
that differs from the config's: :func:`pin_problems`), each with its JSON path into the room
config; :func:`require_room_fits` raises them as one
:class:`~matchlock.core.errors.RestrictionError`. Signatures are :mod:`matchlock.core.signing`'s.

This module is part of the core: it compares configs it is given, nothing else.
"""

from __future__ import annotations

import json

from matchlock.core.config import (
    SCHEMES,
    MatchLockConfig,
    Piece,
    Restrictions,
    RoomConfig,
    piece_key,
)
from matchlock.core.errors import Problem, RestrictionError

__all__ = ["check_room", "pin_problems", "require_room_fits"]


def _limit_problems(piece: Piece, limits: Restrictions) -> list[str]:
    """What is wrong with one known piece under the room's restrictions. A piece with no
    resolvables (only room members can give it) breaks no scheme restriction."""
    wrong = []
    if piece.content_size > limits.max_piece_bytes:
        what = "piece" if piece.archive is not None else "piece's folder"
        wrong.append(
            f"{what} is {piece.content_size} bytes, more than "
            f"restrictions.max_piece_bytes ({limits.max_piece_bytes})"
        )
    schemes = {resolvable.scheme for resolvable in piece.resolvables}
    if schemes and not schemes & set(limits.allowed_schemes):
        wrong.append(
            f"no resolvable uses an allowed scheme (allowed: "
            f"{', '.join(limits.allowed_schemes)}; it has: "
            f"{', '.join(s for s in SCHEMES if s in schemes)})"
        )
    return wrong


_PAIRS = (("sha256", "size", "archive"), ("folder_sha256", "folder_size", "folder"))


def pin_problems(key: str, piece: Piece, room: RoomConfig) -> list[Problem]:
    """Where the room's pinned content for ``key`` differs from the match-lock config's piece
    (each a :class:`~matchlock.core.errors.Problem` naming the pinned field); empty when it
    matches.

    Each pair the room pins (the archive's ``sha256`` and ``size``, the folder's
    ``folder_sha256`` and ``folder_size``) must be the config's: a pinned pair the piece lacks
    is a problem, a pair the piece has and the room does not pin is not (a room may pin only
    the archive of a piece that also names its folder). A config piece that gives
    ``folder_sha256`` without ``folder_size`` matches a pinned folder on the digest alone (the
    digest covers every file's size).
    """
    pinned = room.content[key]
    path = f"$.content[{json.dumps(key)}]"
    problems = []
    for digest_field, size_field, what in _PAIRS:
        pinned_digest = getattr(pinned, digest_field)
        if pinned_digest is None:
            continue
        ours_digest, ours_size = getattr(piece, digest_field), getattr(piece, size_field)
        if ours_digest is None:
            problems.append(
                Problem(
                    f"{path}.{digest_field}",
                    f"the room pins the {what} of {key}, which the match-lock config's piece "
                    f"does not give ({digest_field} missing)",
                    json.dumps(pinned_digest),
                )
            )
            continue
        if pinned_digest != ours_digest:
            problems.append(
                Problem(
                    f"{path}.{digest_field}",
                    f"differs from the match-lock config's {digest_field} of {key} ({ours_digest})",
                    json.dumps(pinned_digest),
                )
            )
        pinned_size = getattr(pinned, size_field)
        if ours_size is not None and pinned_size != ours_size:
            problems.append(
                Problem(
                    f"{path}.{size_field}",
                    f"differs from the match-lock config's {size_field} of {key} ({ours_size})",
                    str(pinned_size),
                )
            )
    return problems


def _piece_problems(room: RoomConfig, config: MatchLockConfig) -> tuple[list[Problem], int]:
    """Problems with single pieces, and the total size of the pieces the config knows."""
    limits = room.restrictions
    problems: list[Problem] = []
    total = 0
    for collection, names in room.pieces.items():
        if collection not in limits.allowed_collections:
            problems.append(
                Problem(
                    f"$.pieces.{collection}",
                    "collection is not in restrictions.allowed_collections",
                    json.dumps(collection),
                )
            )
        for index, name in enumerate(names):
            path, key = f"$.pieces.{collection}[{index}]", piece_key(collection, name)
            piece = config.piece(key)
            if piece is None:
                wrong = ["piece is not in the match-lock config"]
            else:
                total += piece.content_size
                wrong = _limit_problems(piece, limits)
            problems.extend(Problem(path, message, json.dumps(key)) for message in wrong)
            if piece is not None:
                problems.extend(pin_problems(key, piece, room))
    return problems, total


def check_room(room: RoomConfig, config: MatchLockConfig) -> list[Problem]:
    """Every way ``room`` does not fit ``config`` or its own restrictions; empty when it fits.

    Each problem carries a JSON path into the room config (``$.pieces.chars[1]``) and the
    offending value: a piece the config lacks, a collection not allowed, more pieces than
    ``max_pieces``, a piece larger than ``max_piece_bytes``, a total above ``max_total_bytes``,
    a piece with no resolvable of an allowed scheme (a piece with none at all is fine: room
    members give it), pinned content (``$.content``) that differs from the config's piece
    (:func:`pin_problems`). Sizes are a piece's :attr:`~matchlock.core.config.Piece.content_size`.
    A piece that has *some* allowed resolvable fits: resolvables with a disallowed scheme are
    skipped when downloading, not refused here. Sizes are checked as the config states them.
    """
    limits = room.restrictions
    problems, total = _piece_problems(room, config)
    count = len(room.piece_keys())
    if count > limits.max_pieces:
        problems.append(
            Problem(
                "$.pieces",
                f"{count} pieces expected, more than restrictions.max_pieces ({limits.max_pieces})",
                str(count),
            )
        )
    if total > limits.max_total_bytes:
        problems.append(
            Problem(
                "$.pieces",
                f"pieces total {total} bytes, more than "
                f"restrictions.max_total_bytes ({limits.max_total_bytes})",
                str(total),
            )
        )
    return problems


def require_room_fits(room: RoomConfig, config: MatchLockConfig) -> None:
    """Return when ``room`` fits; otherwise raise :class:`RestrictionError` with every problem."""
    problems = check_room(room, config)
    if problems:
        raise RestrictionError(problems)
