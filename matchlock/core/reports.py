"""The host's shortcut for the frame it handles most: a member's ``piece_progress`` report.

A room host reads every report through the strict decode
(:func:`~matchlock.core.protocol.decode_client_message`: a pydantic model of the message, a
search for duplicate keys), then copies its event to stamp it with its own time
(:func:`~matchlock.core.hosted.restamped`). For a progress report in the encoding members send,
:func:`stamped_progress` reads the same values with one regular expression, which matches only
frames the strict decode reads to exactly those values, and builds the stamped event at once.
Any other frame, a valid one included, takes the long way; either way the host then hands back
the same bytes (``tests/core/test_host_fast_path.py``).

Pure core: matching bytes and building an event, nothing else; it must never accept a frame
the strict decode refuses, nor read one differently.
"""

from __future__ import annotations

import re

from matchlock.core import events as ev
from matchlock.core.config import MAX_NAME_LENGTH

__all__ = ["stamped_progress"]

# The report as a member encodes it (``protocol.encode``; or with the event's ``type`` first). A
# frame that matches decodes to exactly these values, each valid in its field once the piece's
# length is checked: the names match their patterns (the user's within its length), so hold no
# escape, quote or control character; ``at`` is a plain decimal, so finite (its value is never
# kept: the host stamps its own); ``done`` an integer under 10**15, a ``Count``; the keys are
# each event field once, no other, the version the one spoken.
_NAME_BYTES = rb"[A-Za-z0-9_][A-Za-z0-9_.\-]*"
_AT_BYTES = rb"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,20})?"
_PROGRESS_REPORT = re.compile(
    rb'\{"type":"report","event":\{(?:"v":%d,"at":%s,"type":"piece_progress"'
    rb'|"type":"piece_progress","v":%d,"at":%s),'
    rb'"user_id":"([A-Za-z0-9_][A-Za-z0-9_.\-]{0,%d})","piece":"(%s/%s)",'
    rb'"done":(0|[1-9][0-9]{0,14})\}\}'
    % (
        ev.EVENT_SCHEMA_VERSION,
        _AT_BYTES,
        ev.EVENT_SCHEMA_VERSION,
        _AT_BYTES,
        MAX_NAME_LENGTH - 1,
        _NAME_BYTES,
        _NAME_BYTES,
    )
)
_MAX_PIECE_ADDRESS = 2 * MAX_NAME_LENGTH + 1  # ev.PieceAddress's


_EVERY_FIELD = set(ev.PieceProgress.model_fields)
"""The fields set of every stamped event, one set for all: one object fewer per event for the
garbage collector to walk while the event is held. Sharing it is safe: it holds every field, so
nothing pydantic does to a fields set (adding the fields it sets) can change it, and pydantic
copies it for ``model_copy`` anyway."""
_set = object.__setattr__


def stamped_progress(frame: bytes, at: float) -> ev.PieceProgress | None:
    """The ``piece_progress`` of a report frame in the encoding members send, stamped ``at``:
    equal to ``restamped`` of the event the strict decode reads, every field set, in a third of
    the time (no model of the message; the event built as ``model_construct`` builds one, its
    values proved valid by the match); None for any other frame (which only the strict decode
    decides)."""
    found = _PROGRESS_REPORT.fullmatch(frame)
    if found is None:
        return None
    user_id, piece, done = found.groups()
    if len(piece) > _MAX_PIECE_ADDRESS:
        return None
    event = ev.PieceProgress.__new__(ev.PieceProgress)
    _set(event, "__dict__", {"v": ev.EVENT_SCHEMA_VERSION, "at": at, "type": "piece_progress",
                             "user_id": user_id.decode(), "piece": piece.decode(),
                             "done": int(done)})  # fmt: skip
    _set(event, "__pydantic_fields_set__", _EVERY_FIELD)
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event
