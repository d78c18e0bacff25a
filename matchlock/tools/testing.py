"""Helpers for tests, benchmarks and simulations that embed matchlock: deterministic keys and
signed rooms. Not for production keys: these are derived from names, so anyone can rebuild them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from matchlock.core.config import PinnedPiece, Restrictions, RoomConfig, RoomUser, split_piece_key
from matchlock.core.signing import public_key_to_b64, sign_room

__all__ = ["insecure_key", "pinned", "signed_room"]


def insecure_key(name: str) -> Ed25519PrivateKey:
    """A key derived from ``name``: the same every run, and known to everyone."""
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(b"matchlock-test:" + name.encode()).digest()
    )


def signed_room(
    room_id: str,
    users: Sequence[str],
    pieces: Mapping[str, PinnedPiece],
    max_piece_bytes: int = 1 << 40,
) -> RoomConfig:
    """A room config for ``users`` (keys from :func:`insecure_key`) expecting ``pieces``
    (``collection/piece`` to its pinned content), loosely restricted, signed by every user."""
    by_collection: dict[str, list[str]] = {}
    for key in pieces:
        collection, piece = split_piece_key(key)
        by_collection.setdefault(collection, []).append(piece)
    room = RoomConfig(
        room_id=room_id,
        restrictions=Restrictions(
            allowed_collections=tuple(by_collection),
            max_pieces=len(pieces),
            max_piece_bytes=max_piece_bytes,
            max_total_bytes=max_piece_bytes * max(1, len(pieces)),
            allowed_schemes=("http", "https", "file"),
        ),
        pieces={c: tuple(p) for c, p in by_collection.items()},
        users={
            u: RoomUser(public_key=public_key_to_b64(insecure_key(u).public_key())) for u in users
        },
        content=dict(pieces),
    )
    for user in users:
        room = sign_room(room, user, insecure_key(user))
    return room


def pinned(sizes: Mapping[str, int]) -> dict[str, PinnedPiece]:
    """Pinned content for pieces of the given sizes, with digests made up from their names."""
    return {
        key: PinnedPiece(sha256=hashlib.sha256(key.encode()).hexdigest(), size=size)
        for key, size in sizes.items()
    }
