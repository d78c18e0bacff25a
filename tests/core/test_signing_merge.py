"""Signing in parallel, in the core: a detached signature is added only once it verifies against
this room and the user's listed key, and copies of one room signed apart merge into one room
carrying every signature, each refusal naming the user or the copy at fault."""

from __future__ import annotations

import pytest

from matchlock.core.config import RoomConfig
from matchlock.core.errors import InputError, UsageError
from matchlock.core.signing import add_signature, detached_signature, merge_signed, verify_room
from matchlock.tools.testing import insecure_key, pinned, signed_room

USERS = ("alice", "bob", "carol")
SIGNED = signed_room("r1", USERS, pinned({"chars/kfm": 100}))
BLANK = SIGNED.model_copy(update={"signatures": {}})


def signed_by(*users: str, room: RoomConfig = BLANK) -> RoomConfig:
    for user in users:
        room = add_signature(room, user, detached_signature(room, user, insecure_key(user)))
    return room


def test_detached_signatures_added_one_by_one_make_the_room_verify() -> None:
    room = signed_by("carol", "alice", "bob")
    verify_room(room)
    assert list(room.signatures) == ["alice", "bob", "carol"]  # in a stable order
    assert room.signatures == SIGNED.signatures


def test_a_signature_for_a_user_the_room_does_not_expect_is_refused_naming_whom_it_does() -> None:
    signature = detached_signature(BLANK, "alice", insecure_key("alice"))
    with pytest.raises(InputError) as caught:
        add_signature(BLANK, "mallory", signature)
    assert str(caught.value) == (
        "a signature for 'mallory', whom room 'r1' does not expect (it expects: alice, bob, carol)"
    )


def test_a_signature_that_is_not_base64_of_64_bytes_is_refused_as_such() -> None:
    with pytest.raises(InputError, match=r"^the signature for 'bob' is not base64 of 64 bytes$"):
        add_signature(BLANK, "bob", "c2hvcnQ=")


def test_a_signature_made_by_someone_else_does_not_verify() -> None:
    alice_s = detached_signature(BLANK, "alice", insecure_key("alice"))
    with pytest.raises(InputError) as caught:
        add_signature(BLANK, "bob", alice_s)
    assert str(caught.value).startswith(
        "the signature for 'bob' does not verify against room 'r1': it was made for another "
        "room, or another version of this one, or with a key other than the one the room "
        "lists for that user"
    )


def test_a_signature_for_another_version_of_the_room_does_not_verify() -> None:
    other = BLANK.model_copy(update={"room_id": "r2"})
    signature = detached_signature(other, "alice", insecure_key("alice"))
    with pytest.raises(InputError, match="does not verify against room 'r1'"):
        add_signature(BLANK, "alice", signature)


def test_copies_signed_apart_merge_into_one_room_with_every_signature() -> None:
    merged = merge_signed([signed_by("alice"), signed_by("bob"), signed_by("carol", "alice")])
    verify_room(merged)
    assert merged.signatures == SIGNED.signatures


def test_a_later_copy_adds_only_the_users_still_missing() -> None:
    first = signed_by("alice")
    both = signed_by("alice", "bob")
    later = both.model_copy(update={"signatures": {**both.signatures, "alice": "not base64"}})
    merged = merge_signed([first, later])
    assert merged.signatures == {"alice": first.signatures["alice"], "bob": both.signatures["bob"]}


def test_merging_nothing_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"^merge_signed needs at least one room$"):
        merge_signed([])


def test_a_copy_of_another_room_is_named_by_its_position() -> None:
    other = signed_by("bob", room=BLANK.model_copy(update={"room_id": "r2"}))
    with pytest.raises(InputError) as caught:
        merge_signed([signed_by("alice"), signed_by("bob"), other])
    assert str(caught.value) == (
        "copy 3 (room 'r2') is not the same room as copy 1: "
        "its content, pieces, users or restrictions differ"
    )


def test_a_bad_signature_in_a_copy_names_the_copy_and_the_user() -> None:
    forged = BLANK.model_copy(
        update={"signatures": {"bob": detached_signature(BLANK, "alice", insecure_key("alice"))}}
    )
    with pytest.raises(InputError, match=r"^copy 2: the signature for 'bob' does not verify"):
        merge_signed([signed_by("alice"), forged])
