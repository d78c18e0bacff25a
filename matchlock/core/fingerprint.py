"""The content fingerprint: one short digest of exactly the content a room pinned.

Two players hold the same content for a match when their rooms pinned the same pieces with the
same bytes. :func:`content_fingerprint` turns that into one value a game can compare at its
netplay handshake and write into its replay headers (Ikemen GO's ``ContentFingerprint``, see
``docs/ikemen-go.md``). It is a function of the pinned content only: each piece's
``collection/piece`` key, the sha256 and the size of its downloaded bytes. It does not depend on
the room id, the restrictions, the users, the signatures, the order of anything in the file, nor
on where a member installed the pieces, so every member of a room computes the same value, and a
download of the same pieces without a room computes it too (:func:`pieces_fingerprint`).

The bytes hashed (the exact form, which another language reproduces from the docs):
:data:`FINGERPRINT_DOMAIN`, then one line per piece sorted by key (UTF-8 bytes; keys are ASCII),
``<collection/piece> <sha256 hex> <size in decimal>\\n``; a piece pinned by its folder only
(no archive) gives its folder digest and folder size in their place. The fingerprint is the
lowercase hex sha256 of those bytes; it is shown as its first :data:`SHORT_LENGTH` hex digits.

Pure core: no files, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from matchlock.core.config import MatchLockConfig, RoomConfig, split_piece_key

__all__ = [
    "FINGERPRINT_DOMAIN",
    "SHORT_LENGTH",
    "Fingerprint",
    "content_fingerprint",
    "fingerprint_bytes",
    "pieces_fingerprint",
]

FINGERPRINT_DOMAIN = b"matchlock-content-fingerprint-v1\n"
"""The first line of the hashed bytes, so this digest can never equal another matchlock digest
(a folder digest, a room signature's message) over the same lines."""

SHORT_LENGTH = 16
"""Hex digits in the short form (64 bits: a random clash between two contents is out of reach
for the handful of contents two players compare)."""


@dataclass(frozen=True)
class Fingerprint:
    """A content fingerprint: ``full`` is the 64 hex digits, ``short`` their first 16."""

    full: str
    pieces: int

    @property
    def short(self) -> str:
        """The first :data:`SHORT_LENGTH` hex digits: what a game shows and compares."""
        return self.full[:SHORT_LENGTH]

    def as_json(self) -> dict[str, object]:
        """``{"short", "full", "pieces"}``: the form ``--json`` results carry."""
        return {"short": self.short, "full": self.full, "pieces": self.pieces}


def fingerprint_bytes(content: Mapping[str, tuple[str, int]]) -> bytes:
    """The exact bytes hashed for ``content`` (``collection/piece -> (sha256, size)``).

    Raises ``ValueError`` naming a key that is not ``collection/piece``, a sha256 that is not 64
    lowercase hex digits, or a negative size.
    """
    lines = [FINGERPRINT_DOMAIN]
    for key in sorted(content, key=lambda k: k.encode("utf-8")):
        sha256, size = content[key]
        split_piece_key(key)
        if len(sha256) != 64 or sha256.strip("0123456789abcdef"):
            raise ValueError(f"{key}: sha256 must be 64 lowercase hex digits, got {sha256!r}")
        if size < 0:
            raise ValueError(f"{key}: size must be >= 0, got {size}")
        lines.append(f"{key} {sha256} {size}\n".encode())
    return b"".join(lines)


def _fingerprint(content: Mapping[str, tuple[str, int]]) -> Fingerprint:
    digest = hashlib.sha256(fingerprint_bytes(content)).hexdigest()
    return Fingerprint(full=digest, pieces=len(content))


def content_fingerprint(room: RoomConfig) -> Fingerprint:
    """The fingerprint of the content ``room`` pins (its ``content``: sha256 and size of each
    expected piece). Signed or not, every copy of the same room gives the same value."""
    return _fingerprint(
        {key: (pin.content_digest, pin.content_size) for key, pin in room.content.items()}
    )


def pieces_fingerprint(config: MatchLockConfig, keys: list[str]) -> Fingerprint:
    """The fingerprint of the pieces ``keys`` of ``config``: what a download without a room
    installed. Equal to :func:`content_fingerprint` of a room pinning exactly those pieces.

    Raises ``KeyError`` naming a key the config does not have.
    """
    content: dict[str, tuple[str, int]] = {}
    for key in keys:
        piece = config.piece(key)
        if piece is None:
            raise KeyError(f"{key} is not in the match-lock config")
        content[key] = (piece.content_digest, piece.content_size)
    return _fingerprint(content)
