"""What the log decoder says about a damaged line that still carries a valid hash of itself: the
line number, and for an event that is not one, the field and pydantic's complaint; a header cut
short with more lines after it is corruption at line 1, not a torn tail."""

from __future__ import annotations

import hashlib

import pytest

from matchlock.core import events as ev
from matchlock.core.chain import LogDecoder, encode_event, encode_header
from matchlock.core.errors import LogCorruptError

HEADER, HEADER_HASH = encode_header("room/r1")


def corruption(lines: list[bytes]) -> LogCorruptError:
    with pytest.raises(LogCorruptError) as caught:
        list(LogDecoder("room.log").events(lines))
    return caught.value


def sealed(prefix: bytes) -> bytes:
    """``prefix`` closed with its own hash, as a log line is (whatever the prefix holds)."""
    return prefix + b',"hash":"' + hashlib.sha256(prefix).hexdigest().encode() + b'"}\n'


def test_an_event_missing_a_field_names_the_line_the_field_and_why() -> None:
    joined = ev.MemberJoined(at=1, user_id="alice")
    line, _ = encode_event(1, HEADER_HASH, joined, body=b'{"type":"member_joined","at":1}')
    error = corruption([HEADER, line])
    assert (error.path, error.line) == ("room.log", 2)
    assert error.reason == "not a valid event: event.member_joined.user_id: Field required"


def test_a_line_that_is_no_json_object_is_said_to_be_not_valid() -> None:
    error = corruption([HEADER, sealed(b"[1")])
    assert error.line == 2
    assert error.reason.startswith("not valid: Invalid JSON: ")


def test_a_header_cut_short_before_more_lines_is_corruption_at_line_1() -> None:
    error = corruption([HEADER[:10], b"more\n"])
    assert (error.path, error.line, error.reason) == (
        "room.log",
        1,
        "the header line is cut short",
    )


def test_a_line_without_its_hash_is_named() -> None:
    line, _ = encode_event(1, HEADER_HASH, ev.MemberJoined(at=1, user_id="alice"))
    error = corruption([HEADER, line[:-80] + b"\n"])
    assert (error.path, error.line, error.reason) == (
        "room.log",
        2,
        "the line does not end with its hash",
    )


def test_a_line_whose_hash_is_not_of_its_content_is_named() -> None:
    line, _ = encode_event(1, HEADER_HASH, ev.MemberJoined(at=1, user_id="alice"))
    error = corruption([HEADER, line.replace(b"alice", b"alicf")])
    assert (error.path, error.line, error.reason) == (
        "room.log",
        2,
        "the line's hash does not match its content",
    )


def test_a_sealed_first_line_that_is_no_header_is_named() -> None:
    line, _ = encode_event(0, "0" * 64, ev.MemberJoined(at=1, user_id="alice"))
    error = corruption([line])
    assert (error.path, error.line, error.reason) == (
        "room.log",
        1,
        "the first line is not a matchlock log header",
    )


def test_a_header_whose_hash_is_wrong_is_named_at_line_1() -> None:
    error = corruption([HEADER.replace(b"room/r1", b"room/r2")])
    assert (error.path, error.line) == ("room.log", 1)


def joined_line(seq: int, prev: str) -> bytes:
    return encode_event(seq, prev, ev.MemberJoined(at=1, user_id="alice"))[0]


def test_a_line_cut_short_before_more_lines_is_named() -> None:
    first = joined_line(1, HEADER_HASH)
    error = corruption([HEADER, first[:-1], first])
    assert (error.path, error.line, error.reason) == ("room.log", 2, "the line is cut short")


def test_a_line_out_of_sequence_names_both_numbers() -> None:
    error = corruption([HEADER, joined_line(2, HEADER_HASH)])
    assert (error.path, error.line) == ("room.log", 2)
    assert error.reason == "expected seq 1, found 2 (a line removed, duplicated or moved)"


def test_a_line_chained_to_another_line_says_so() -> None:
    error = corruption([HEADER, joined_line(1, "f" * 64)])
    assert (error.path, error.line, error.reason) == (
        "room.log",
        2,
        "prev does not match the line before (a line removed, duplicated or moved)",
    )


def test_a_header_chained_to_something_is_named() -> None:
    prefix = HEADER[: HEADER.index(b',"hash":"')].replace(b"0" * 64, b"1" * 64)
    error = corruption([sealed(prefix)])
    assert (error.path, error.line, error.reason) == (
        "room.log",
        1,
        "the header must have seq 0 and an all-zero prev",
    )


def test_the_decoder_says_where_the_next_line_goes() -> None:
    empty = LogDecoder("room.log")
    assert list(empty.events([])) == []
    assert (empty.header, empty.seq, empty.last_hash) == (None, -1, "0" * 64)
    decoder = LogDecoder("room.log")
    line = joined_line(1, HEADER_HASH)
    assert len(list(decoder.events([HEADER]))) == 0
    assert (decoder.seq, decoder.last_hash) == (0, HEADER_HASH)
    decoder = LogDecoder("room.log")
    assert len(list(decoder.events([HEADER, line]))) == 1
    assert (decoder.seq, decoder.last_hash) == (
        1,
        encode_event(1, HEADER_HASH, ev.MemberJoined(at=1, user_id="alice"))[1],
    )
