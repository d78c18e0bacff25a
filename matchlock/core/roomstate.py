"""A room's state at one point of its log, frozen: what :meth:`matchlock.core.room.Room.snapshot`
makes of the fold's working objects, to compare, show or serialise (as JSON).

These are values only: no fold, no rule. :mod:`matchlock.core.room` builds them and exports
them; import them from there.

Pure core: no IO, no clock, no randomness.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from matchlock.core import events as ev

__all__ = ["MemberState", "PieceState", "Refusal", "RoomState"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class PieceState(_Frozen):
    """One member's piece: machine state, bytes so far of ``size``, where it came from, and why
    each resolvable tried so far failed."""

    status: str
    done: int
    size: int
    source: str = ""
    failures: tuple[ev.ResolvableFailure, ...] = ()


class MemberState(_Frozen):
    """One member: machine state and every expected piece's state by ``collection/piece``."""

    status: str
    pieces: dict[str, PieceState]


class Refusal(_Frozen):
    """Someone refused entry or a message refused: who they claimed to be, a code, the reason."""

    at: float
    user_id: str
    code: str
    reason: str


class RoomState(_Frozen):
    """A room (or download job) at one point of its log."""

    kind: Literal["room", "download", "empty"]
    room_id: str
    status: str
    members: dict[str, MemberState]
    refusals: tuple[Refusal, ...]
    events: int
