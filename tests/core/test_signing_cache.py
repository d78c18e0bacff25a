"""A room config that verified is remembered, so that a host checking it before opening the
room and again as it folds the opening pays for the signatures once; a config that differs in
any signature, or in any byte that is signed, is checked again and refused as before."""

from __future__ import annotations

import pytest

from matchlock.core import signing
from matchlock.core.config import RoomConfig
from matchlock.core.errors import SignatureError
from matchlock.core.signing import verify_room
from matchlock.tools.testing import pinned, signed_room


def counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every room whose signatures are really checked, by id, from now on."""
    checked: list[str] = []
    real = signing._signature_report

    def check(room: RoomConfig, message: bytes) -> signing.SignatureReport:
        checked.append(room.room_id)
        return real(room, message)

    monkeypatch.setattr(signing, "_signature_report", check)
    return checked


def test_a_room_that_verified_is_not_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    room = signed_room("cache-once", ["ann", "ben"], pinned({"chars/kfm": 10}))
    checked = counting(monkeypatch)
    verify_room(room)
    verify_room(room)
    verify_room(room.model_copy())
    assert checked == ["cache-once"]


def test_a_changed_signature_or_signed_byte_is_checked_and_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    room = signed_room("cache-twice", ["ann", "ben"], pinned({"chars/kfm": 10}))
    verify_room(room)
    checked = counting(monkeypatch)
    other = signed_room("cache-other", ["ann", "ben"], pinned({"chars/kfm": 10}))
    signatures = room.signatures
    swapped = room.model_copy(update={"signatures": {**signatures, "ben": other.signatures["ben"]}})
    with pytest.raises(SignatureError, match="ben"):
        verify_room(swapped)
    extra = room.model_copy(update={"signatures": {**signatures, "cid": signatures["ann"]}})
    with pytest.raises(SignatureError, match="cid"):
        verify_room(extra)
    resized = room.model_copy(update={"content": dict(pinned({"chars/kfm": 11}))})
    with pytest.raises(SignatureError):
        verify_room(resized)
    assert checked == ["cache-twice"] * 3
    with pytest.raises(SignatureError):
        verify_room(swapped)  # a refusal is never remembered: checked again
    assert len(checked) == 4
