"""What a host asks of a room config it does not hold yet, before anything about the room
exists: that it is small enough (:data:`MAX_USERS`, :data:`MAX_PIECES`), then that every
expected user signed it.

The size checks come first and cost nothing, so a hello for a huge room is refused before a
single signature is checked; the signature check (one Ed25519 verification per expected user,
each over the whole canonical config) is remembered by the config's digest
(:func:`~matchlock.core.signing.room_digest`), so the same config sent again costs one hash.
``docs/protocol.md`` ("What one unauthenticated hello can cost") gives the figures.

Pure core: no sockets, no clock, no randomness, no files.
"""

from __future__ import annotations

from collections import OrderedDict

from matchlock.core.config import RoomConfig
from matchlock.core.errors import InputError
from matchlock.core.signing import room_digest, verify_room

__all__ = ["MAX_PIECES", "MAX_USERS", "Admission"]

MAX_USERS = 64
"""Users a room config may expect on this host (``HostProtocol(max_users=...)``): a hello for a
bigger room is refused ``too-many-users`` before any signature is checked, which bounds what an
unauthenticated hello can cost."""

MAX_PIECES = 1024
"""Pieces a room config may pin on this host (``HostProtocol(max_pieces=...)``): a hello for a
bigger room is refused ``too-many-pieces`` before any signature is checked (each check hashes
the whole config, so this bounds the bytes each one hashes)."""

_VERIFIED_CACHE = 256
"""Room configs whose signature check is remembered, by digest."""


class Admission:
    """Decides whether a host may open a room from a config, remembering signature checks."""

    def __init__(self, max_users: int = MAX_USERS, max_pieces: int = MAX_PIECES) -> None:
        self.max_users = max_users
        self.max_pieces = max_pieces
        self._verified: OrderedDict[bytes, str | None] = OrderedDict()

    def refusal(self, config: RoomConfig) -> tuple[str, str] | None:
        """Why a room may not be opened from ``config`` (a refusal code and its reason), or
        None: too many users, too many pieces, or not signed by every expected user."""
        room_id = config.room_id
        if len(config.users) > self.max_users:
            why = f"room {room_id!r} expects {len(config.users)} users; this host allows"
            return "too-many-users", f"{why} {self.max_users}"
        if len(config.content) > self.max_pieces:
            why = f"room {room_id!r} pins {len(config.content)} pieces; this host allows"
            return "too-many-pieces", f"{why} {self.max_pieces}"
        problem = self._unsigned(config)
        if problem is not None:
            return "unsigned-config", problem
        return None

    def _unsigned(self, config: RoomConfig) -> str | None:
        """Why ``config`` is not signed by every expected user, or None; remembered by digest
        so that the same hello sent again costs one hash, not every signature."""
        key = room_digest(config)
        if key in self._verified:
            self._verified.move_to_end(key)
            return self._verified[key]
        try:
            verify_room(config)
            problem = None
        except InputError as error:  # a SignatureError, or a config with no canonical form
            problem = str(error)
        self._verified[key] = problem
        if len(self._verified) > _VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return problem
