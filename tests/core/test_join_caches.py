"""What a host remembers to make joins cheap never changes what it accepts: a room config's
signature checks are remembered by :func:`~matchlock.core.signing.room_digest`, which must
determine the canonical bytes and the signatures exactly (so a config that differs in any signed
byte or any signature is checked again), and decoded public keys are kept, which must not make
a wrong signature or a malformed key pass."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings

from matchlock.core import protocol as pr
from matchlock.core import signing
from matchlock.core.admission import Admission
from matchlock.core.client import ClientProtocol
from matchlock.core.config import MAX_EXACT_INTEGER, RoomConfig
from matchlock.core.errors import InputError
from matchlock.core.signing import canonical_room_bytes, public_key_from_b64, room_digest
from matchlock.tools.testing import insecure_key, pinned, signed_room
from tests.core.test_host import CONFIG, Harness, refused
from tests.core.test_signing import parse, room_data, sign_all


def canonical_from_json(room: RoomConfig) -> bytes:
    """The canonical bytes rebuilt from the JSON that :func:`room_digest` hashes."""
    value: dict[str, Any] = json.loads(room.model_dump_json())
    del value["signatures"]
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@settings(max_examples=60, deadline=None)
@given(room_data())
def test_the_json_a_digest_hashes_determines_the_canonical_bytes(data: dict[str, Any]) -> None:
    room = sign_all(parse(data))
    assert canonical_from_json(room) == canonical_room_bytes(room)
    assert json.loads(room.model_dump_json())["signatures"] == room.signatures


def test_the_fields_left_out_when_unset_are_left_out_of_the_digested_json_too() -> None:
    room = signed_room("optional", ["ann"], pinned({"chars/kfm": 10}))
    limits = room.restrictions.model_copy(update={"room_source": "first"})
    pins = room.content["chars/kfm"].model_copy(
        update={"folder_sha256": "ab" * 32, "folder_size": 7}
    )
    for variant in (
        room,
        room.model_copy(update={"restrictions": limits}),
        room.model_copy(update={"content": {"chars/kfm": pins}}),
    ):
        assert canonical_from_json(variant) == canonical_room_bytes(variant)
    assert (
        len({room_digest(room), room_digest(room.model_copy(update={"restrictions": limits}))}) == 2
    )


def test_a_changed_signature_or_signed_byte_changes_the_digest() -> None:
    room = signed_room("digest", ["ann", "ben"], pinned({"chars/kfm": 10}))
    other = signed_room("digest-other", ["ann", "ben"], pinned({"chars/kfm": 10}))
    swapped = room.model_copy(
        update={"signatures": {**room.signatures, "ben": other.signatures["ben"]}}
    )
    resized = room.model_copy(update={"content": dict(pinned({"chars/kfm": 11}))})
    digests = {room_digest(r) for r in (room, swapped, resized)}
    assert len(digests) == 3 and room_digest(room.model_copy(deep=True)) == room_digest(room)


def hello(user: str, room: RoomConfig) -> bytes:
    return pr.encode(pr.Hello(protocol=1, room=room, user_id=user))


def test_a_host_that_accepted_a_config_refuses_it_with_one_signature_changed() -> None:
    h = Harness()
    conn = h.connect()
    h.send(conn, hello("alice", CONFIG))  # checked and remembered: challenged
    assert isinstance(h.last(conn), pr.Challenge)
    foreign = signed_room("elsewhere", ["alice", "bob"], pinned({"chars/kfm": 10}))
    forged = CONFIG.model_copy(
        update={"signatures": {**CONFIG.signatures, "bob": foreign.signatures["bob"]}}
    )
    conn = h.connect()
    h.send(conn, hello("alice", forged))
    refused(h, conn, "unsigned-config", fatal=True)
    assert h.host.rooms == {}


def test_a_config_with_an_integer_beyond_exact_doubles_is_refused_unsigned() -> None:
    limits = CONFIG.restrictions.model_copy(update={"max_total_bytes": MAX_EXACT_INTEGER + 1})
    huge = CONFIG.model_copy(update={"restrictions": limits})  # the wire refuses it before
    admission = Admission()
    for _ in range(2):  # the second time from what the admission remembers
        refusal = admission.refusal(huge)
        assert refusal is not None and refusal[0] == "unsigned-config"
        assert "max_total_bytes" in refusal[1]


def test_a_kept_key_is_the_same_key_and_a_wrong_signature_stays_wrong() -> None:
    text = signing.public_key_to_b64(insecure_key("ann").public_key())
    assert public_key_from_b64(text) is public_key_from_b64(f" {text}\n")
    message = b"matchlock-room-config-v1\n{}"
    good = base64.b64encode(insecure_key("ann").sign(message)).decode()
    bad = base64.b64encode(insecure_key("ben").sign(message)).decode()
    for _ in range(2):
        assert signing._signature_status(text, good, message) == "valid"
        assert signing._signature_status(text, bad, message) == "wrong"


def test_a_malformed_key_is_refused_each_time_naming_its_source() -> None:
    for source in ("first", "second"):
        with pytest.raises(InputError, match=f"^{source}: expected base64"):
            public_key_from_b64("AAAA", source)


def test_the_answer_to_a_room_not_yet_open_does_not_digest_its_config_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digested: list[str] = []

    def counted(room: RoomConfig) -> bytes:
        digested.append(room.room_id)
        return room_digest(room)

    monkeypatch.setattr("matchlock.core.admission.room_digest", counted)
    h = Harness()
    h.join("alice")  # the hello digests the config; its answer, the same object, does not
    assert digested == ["r1"] and "r1" in h.host.rooms
    h.join("bob")  # the room is open: compared with the room's config, never digested
    assert digested == ["r1"]


def test_a_room_closed_between_a_kept_configs_hello_and_its_answer_is_admitted_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness()
    h.join("alice")
    client = ClientProtocol(CONFIG, "bob", insecure_key("bob"))
    other = h.connect()
    h.send(other, client.hello())  # challenged with the open room's config
    h.host.rooms.clear()  # the room is gone before bob answers (as when it ends and empties)
    checked: list[RoomConfig] = []
    monkeypatch.setattr(h.host.admission, "refusal", checked.append)
    h.send(other, client.receive(pr.encode(h.last(other))).sends[0])
    assert checked == [CONFIG] and any(isinstance(m, pr.Welcome) for m in h.sent[other])
