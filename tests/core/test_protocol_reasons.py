"""What a peer is told when its frame is refused: the field, by its path (keys a peer chose are
quoted and clipped), and for a wrong type, the JSON type that arrived; a key written twice is
named; and a frame whose strings merely hold ':' is not taken for one with a key twice."""

from __future__ import annotations

import json
from typing import Any

import pytest

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.tools.testing import pinned, signed_room

ROOM = json.loads(signed_room("r1", ("alice",), pinned({"chars/kfm": 100})).model_dump_json())


def refusal(data: bytes | dict[str, Any]) -> pr.MessageError:
    frame = data if isinstance(data, bytes) else json.dumps(data).encode()
    with pytest.raises(pr.MessageError) as caught:
        pr.decode_client_message(frame)
    return caught.value


def hello(**fields: Any) -> dict[str, Any]:
    return {"type": "hello", "protocol": 1, "room": ROOM, "user_id": "alice", **fields}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "null"),
        ([1], "an array"),
        ({"v": 1}, "an object"),
        ("1", "a string"),
        (True, "a boolean"),
        (1.5, "a number"),
    ],
)
def test_a_wrong_type_names_the_field_and_the_json_type_that_arrived(
    value: object, shown: str
) -> None:
    error = refusal(hello(protocol=value))
    assert error.code == "wrong-type"
    assert error.reason == f"hello.protocol: Input should be a valid integer (got {shown})"


def test_a_key_that_is_no_identifier_is_quoted_in_the_path() -> None:
    room = {**ROOM, "users": {**ROOM["users"], "a-b": {"public_key": 5}}}
    error = refusal(hello(room=room))
    assert error.reason.startswith('hello.room.users."a-b".public_key: ')


def test_a_long_key_a_peer_chose_is_clipped_in_the_path() -> None:
    key = "a-" * 50
    error = refusal(hello(room={**ROOM, "signatures": {key: 5}}))
    assert f"hello.room.signatures.{json.dumps(ev.clip(key, 64))}: " in error.reason
    assert key not in error.reason


def test_a_key_written_twice_is_named() -> None:
    error = refusal(b'{"type":"goodbye","type":"goodbye"}')
    assert (error.code, error.reason) == (
        "duplicate-key",
        'the key "type" appears twice in one object',
    )


def test_a_long_key_written_twice_is_named_clipped() -> None:
    key = "s-" * 50
    once = json.dumps(hello(room={**ROOM, "signatures": {key: "x"}}))
    frame = once.replace(f'"{key}": "x"', f'"{key}": "x", "{key}": "x"')
    error = refusal(frame.encode())
    assert error.code == "duplicate-key"
    assert error.reason == f"the key {json.dumps(ev.clip(key, 64))} appears twice in one object"


def test_colons_inside_strings_and_before_spaces_are_no_key_twice() -> None:
    frame = b'{"type" : "answer", "signature": "a:b:c"}'
    message = pr.decode_client_message(frame)
    assert isinstance(message, pr.Answer) and message.signature == "a:b:c"


def test_nan_where_an_integer_belongs_is_not_finite_and_says_so() -> None:
    room = json.dumps(ROOM).encode()
    frame = b'{"type":"hello","protocol":NaN,"user_id":"alice","room":' + room + b"}"
    error = refusal(frame)
    assert str(error) == (
        "not-finite: hello.protocol: Input should be a valid integer (got NaN or Infinity)"
    )


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_time_that_is_no_finite_number_is_refused_not_finite(number: bytes) -> None:
    event = b'{"type":"piece_started","at":%s,"user_id":"alice","piece":"chars/kfm"}' % number
    error = refusal(b'{"type":"report","event":' + event + b"}")
    assert (error.code, error.reason) == (
        "not-finite",
        "report.event.piece_started.at: Input should be a finite number",
    )


def test_a_value_of_the_right_type_that_is_not_acceptable_is_a_bad_value() -> None:
    error = refusal(hello(user_id="a b"))
    assert error.code == "bad-value"
    assert error.reason.startswith("hello.user_id: String should match pattern")


def test_a_message_that_is_no_object_is_refused_with_no_field_path() -> None:
    error = refusal(b"[1]")
    assert (error.code, error.reason) == ("wrong-type", "Input should be an object (got an array)")


STARTED_V2 = b'{"type":"piece_started","v":2,"at":1,"user_id":"alice","piece":"chars/kfm"}'


def test_a_reported_event_of_another_version_is_refused_naming_where() -> None:
    error = refusal(b'{"type":"report","event":' + STARTED_V2 + b"}")
    assert (error.code, error.reason) == (
        "unknown-version",
        "report.event.v: event version 2 is not 1, the one spoken",
    )


@pytest.mark.parametrize(
    ("frame", "where"),
    [
        (b'{"type":"event","seq":1,"event":' + STARTED_V2 + b"}", "event.event.v"),
        (b'{"type":"welcome","since":0,"events":[' + STARTED_V2 + b"]}", "welcome.events.0.v"),
    ],
)
def test_a_host_s_event_of_another_version_is_refused_naming_where(
    frame: bytes, where: str
) -> None:
    with pytest.raises(pr.MessageError) as caught:
        pr.decode_host_message(frame)
    assert (caught.value.code, caught.value.reason) == (
        "unknown-version",
        f"{where}: event version 2 is not 1, the one spoken",
    )


def test_a_frame_of_exactly_the_limit_is_read() -> None:
    frame = pr.encode(pr.Goodbye())
    assert isinstance(pr.decode_client_message(frame, limit=len(frame)), pr.Goodbye)
    with pytest.raises(pr.MessageError) as caught:
        pr.decode_client_message(frame, limit=len(frame) - 1)
    assert caught.value.code == "too-large"
