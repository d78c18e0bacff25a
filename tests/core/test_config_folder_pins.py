"""Folder pins and the room source: pieces pinned by their folder digest (with or without an
archive), ``restrictions.room_source``, and rooms signed before these fields existed, which
must keep verifying and keep their content fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from matchlock.core.config import (
    PinnedPiece,
    parse_matchlock_config,
    parse_room_config,
)
from matchlock.core.errors import ConfigError, RestrictionError
from matchlock.core.events import RoomOpened
from matchlock.core.fingerprint import content_fingerprint
from matchlock.core.roomconfig import new_room
from matchlock.core.signing import (
    canonical_room_bytes,
    check_room,
    pin_problems,
    sign_room,
    verify_room,
)
from matchlock.store.eventlog import read_events
from matchlock.tools.testing import insecure_key, signed_room

FIXTURES = Path(__file__).parent / "fixtures"
REPLAY_LOGS = Path(__file__).parents[2] / "replay-logs"
DOCS_SCHEMAS = Path(__file__).parents[2] / "docs" / "schemas"
A, B, C = "a" * 64, "b" * 64, "c" * 64


def config_of(pieces: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"collections": {"chars": {"mandatory": True, "pieces": pieces}}}


def test_a_room_signed_by_the_previous_code_still_verifies_with_the_same_bytes() -> None:
    """The fixture was signed by matchlock before folder pins and room_source existed."""
    room = parse_room_config((FIXTURES / "room-signed-v1.json").read_bytes())
    verify_room(room)
    assert canonical_room_bytes(room) == (FIXTURES / "room-signed-v1.canonical").read_bytes()
    full = "ec0d2fd4e6217c8d9181977609692a4c104d68cda69e88561cb093a876afa4f5"
    assert content_fingerprint(room).full == full
    # Serializing it again writes no field the previous code would refuse.
    dumped = json.loads(room.model_dump_json())
    assert "room_source" not in dumped["restrictions"]
    assert all(set(pin) == {"sha256", "size"} for pin in dumped["content"].values())


def test_every_recorded_room_opened_still_parses_and_verifies() -> None:
    """Old logs keep replaying: the room_opened events of replay-logs/ carry the old shape."""
    opened = []
    for log in sorted(REPLAY_LOGS.glob("*.log")):
        opened += [e for e in read_events(log).events if isinstance(e, RoomOpened)]
    assert opened
    for event in opened:
        verify_room(event.config)


def test_unset_fields_are_left_out_and_set_ones_are_signed() -> None:
    room = signed_room("r", ["alice"], {"chars/kfm": PinnedPiece(folder_sha256=A, folder_size=5)})
    pinned = json.loads(canonical_room_bytes(room))["content"]["chars/kfm"]
    assert pinned == {"folder_sha256": A, "folder_size": 5}
    changed = room.model_copy(
        update={"restrictions": room.restrictions.model_copy(update={"room_source": "first"})}
    )
    assert b'"room_source":"first"' in canonical_room_bytes(changed)
    with pytest.raises(Exception, match="alice"):
        verify_room(changed)  # the signature covered the room without room_source
    verify_room(sign_room(changed, "alice", insecure_key("alice")))


@pytest.mark.parametrize(
    ("pin", "message"),
    [
        ({"sha256": A}, "sha256 and size go together"),
        ({"folder_sha256": A}, "folder_sha256 and folder_size go together"),
        ({"folder_size": 3}, "folder_sha256 and folder_size go together"),
        ({}, "pin the archive"),
    ],
)
def test_a_pin_needs_whole_pairs_and_at_least_one(pin: dict[str, Any], message: str) -> None:
    room = json.loads((FIXTURES / "room-signed-v1.json").read_text())
    room["content"]["chars/kfm"] = pin
    with pytest.raises(ConfigError, match=message):
        parse_room_config(json.dumps(room))


def test_room_source_takes_only_its_three_values() -> None:
    room = json.loads((FIXTURES / "room-signed-v1.json").read_text())
    room["restrictions"]["room_source"] = "sometimes"
    with pytest.raises(ConfigError, match=r"\$\.restrictions\.room_source"):
        parse_room_config(json.dumps(room))
    room["restrictions"]["room_source"] = "never"
    assert parse_room_config(json.dumps(room)).restrictions.room_source == "never"


@pytest.mark.parametrize(
    ("piece", "message"),
    [
        ({"folder_sha256": A, "folder_size": 1, "resolvables": [{"url": "https://m/x"}]},
         "has no resolvables"),
        ({"folder_sha256": A, "folder_size": 1, "unpack": "zip"}, "no filename or unpack"),
        ({"folder_sha256": A}, "folder_sha256 and folder_size go together"),
        ({"size": 3, "resolvables": [{"url": "https://m/x"}]}, "sha256 and size go together"),
    ],
)  # fmt: skip
def test_a_folder_only_piece_is_refused_when_malformed(piece: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_matchlock_config(json.dumps(config_of({"kfm": piece})))


def test_pieces_may_have_no_resolvables_and_an_archive_may_keep_folder_sha256_alone() -> None:
    config = parse_matchlock_config(
        json.dumps(
            config_of(
                {
                    "kfm": {"folder_sha256": A, "folder_size": 9},
                    "ryu": {"sha256": B, "size": 4},
                    "ken": {"sha256": C, "size": 2, "unpack": "zip", "folder_sha256": A,
                            "resolvables": [{"url": "https://m/ken.zip"}]},
                }
            )
        )
    )  # fmt: skip
    kfm, ryu, ken = (config.pieces()[f"chars/{name}"] for name in ("kfm", "ryu", "ken"))
    assert (kfm.archive, kfm.folder, kfm.content_digest, kfm.content_size) == (None, (A, 9), A, 9)
    assert (ryu.archive, ryu.resolvables, ryu.content_digest, ryu.content_size) == (
        (B, 4),
        (),
        B,
        4,
    )
    assert ken.folder is None and ken.folder_sha256 == A


def folder_config() -> Any:
    return parse_matchlock_config(
        json.dumps(
            config_of(
                {
                    "kfm": {"folder_sha256": A, "folder_size": 9},
                    "ken": {"sha256": C, "size": 2, "unpack": "zip", "folder_sha256": B,
                            "folder_size": 5, "resolvables": [{"url": "https://m/ken.zip"}]},
                    "ryu": {"sha256": B, "size": 4, "unpack": "zip", "folder_sha256": C,
                            "resolvables": [{"url": "https://m/ryu.zip"}]},
                }
            )
        )
    )  # fmt: skip


def test_a_new_room_pins_each_pair_the_config_gives_whole_and_fits() -> None:
    config = folder_config()
    room = new_room(config, "r", {"alice": "A" * 43 + "="})
    assert room.content["chars/kfm"] == PinnedPiece(folder_sha256=A, folder_size=9)
    assert room.content["chars/ken"] == PinnedPiece(
        sha256=C, size=2, folder_sha256=B, folder_size=5
    )
    assert room.content["chars/ryu"] == PinnedPiece(sha256=B, size=4)  # no folder_size: archive
    assert room.restrictions.max_total_bytes == 9 + 2 + 4
    assert room.restrictions.max_piece_bytes == 9
    assert check_room(room, config) == []


def test_pin_problems_compare_each_pinned_pair() -> None:
    config = folder_config()
    pieces = {
        "chars/kfm": PinnedPiece(sha256=A, size=9),  # the config has no archive for it
        "chars/ken": PinnedPiece(folder_sha256=B, folder_size=6),  # wrong folder size
        "chars/ryu": PinnedPiece(folder_sha256=C, folder_size=123),  # digest alone matches
    }
    room = signed_room("r", ["alice"], pieces)
    problems = {key: pin_problems(key, config.piece(key), room) for key in pieces}
    assert [p.path for p in problems["chars/kfm"]] == ['$.content["chars/kfm"].sha256']
    assert "does not give (sha256 missing)" in problems["chars/kfm"][0].message
    assert [(p.path, p.value) for p in problems["chars/ken"]] == [
        ('$.content["chars/ken"].folder_size', "6")
    ]
    assert problems["chars/ryu"] == []


def test_a_folder_only_piece_is_limited_by_its_folder_size_and_needs_no_scheme() -> None:
    config = folder_config()
    with pytest.raises(RestrictionError) as raised:
        new_room(config, "r", {"alice": "A" * 43 + "="}, ["chars/kfm"], max_piece_bytes=8)
    assert [p.message for p in raised.value.problems] == [
        "piece's folder is 9 bytes, more than restrictions.max_piece_bytes (8)"
    ]
    room = new_room(
        config, "r", {"alice": "A" * 43 + "="}, ["chars/kfm"], allowed_schemes=["https"]
    )
    assert check_room(room, config) == []


def test_the_fingerprint_of_a_folder_only_piece_uses_its_folder_pin() -> None:
    folder = signed_room("r", ["alice"], {"chars/kfm": PinnedPiece(folder_sha256=A, folder_size=9)})
    archive = signed_room("r", ["alice"], {"chars/kfm": PinnedPiece(sha256=A, size=9)})
    both = signed_room(
        "r", ["alice"], {"chars/kfm": PinnedPiece(sha256=A, size=9, folder_sha256=B, folder_size=1)}
    )
    assert content_fingerprint(folder) == content_fingerprint(archive) == content_fingerprint(both)


def schema_errors(name: str, value: dict[str, Any]) -> list[str]:
    schema = json.loads((DOCS_SCHEMAS / f"{name}.schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [error.message for error in validator.iter_errors(value)]


PIN_CASES: list[tuple[dict[str, Any], bool]] = [
    ({"sha256": A, "size": 1}, True),
    ({"folder_sha256": A, "folder_size": 1}, True),
    ({"sha256": A, "size": 1, "folder_sha256": B, "folder_size": 2}, True),
    ({"sha256": A}, False),
    ({"size": 1}, False),
    ({"folder_sha256": A}, False),
    ({"folder_size": 1}, False),
    ({"sha256": A, "size": 1, "folder_size": 1}, False),
    ({}, False),
    ({"sha256": None, "size": None, "folder_sha256": A, "folder_size": 1}, True),
]


@pytest.mark.parametrize(("pin", "valid"), PIN_CASES)
def test_the_room_schema_says_what_a_pin_must_be(pin: dict[str, Any], valid: bool) -> None:
    room = json.loads((FIXTURES / "room-signed-v1.json").read_text())
    room["content"]["chars/kfm"] = pin
    try:
        parse_room_config(json.dumps(room))
    except ConfigError:
        accepted = False
    else:
        accepted = True
    assert accepted == valid
    errors = schema_errors("room", room)
    # The schema shows the pairs as values to give or leave out, never as null.
    assert (not errors) == (valid and None not in pin.values()), errors


PIECE_CASES: list[tuple[dict[str, Any], bool]] = [
    ({"sha256": A, "size": 1, "resolvables": [{"url": "https://m/x"}]}, True),
    ({"sha256": A, "size": 1, "folder_sha256": B}, True),
    ({"folder_sha256": B, "folder_size": 3}, True),
    ({"sha256": A, "size": 1, "folder_size": 3}, False),
    ({"folder_sha256": B}, False),
    ({"folder_sha256": B, "folder_size": 3, "resolvables": [{"url": "https://m/x"}]}, False),
    ({"folder_sha256": B, "folder_size": 3, "filename": "x"}, False),
    ({"folder_sha256": B, "folder_size": 3, "unpack": "zip"}, False),
    ({"size": 1}, False),
]


@pytest.mark.parametrize(("piece", "valid"), PIECE_CASES)
def test_the_matchlock_schema_says_what_a_piece_must_be(piece: dict[str, Any], valid: bool) -> None:
    data = config_of({"kfm": piece})
    try:
        parse_matchlock_config(json.dumps(data))
    except ConfigError:
        accepted = False
    else:
        accepted = True
    assert accepted == valid
    assert (not schema_errors("matchlock", data)) == valid
