"""What a user reads when a room does not fit its match-lock config: each problem is one plain
sentence that names the restriction and both sides of it (what is allowed, what the piece has)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from matchlock.core.config import RoomConfig, RoomUser, parse_matchlock_config, parse_room_config
from matchlock.core.errors import InputError, UsageError
from matchlock.core.signing import check_room, sign_room
from matchlock.tools.testing import insecure_key

SHA = "a" * 64
KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

CONFIG = parse_matchlock_config(
    json.dumps(
        {
            "collections": {
                "chars": {
                    "pieces": {
                        "kfm": {
                            "sha256": SHA,
                            "size": 10,
                            "resolvables": [{"url": "http://a.example/kfm.zip"}],
                        }
                    }
                },
                "stages": {
                    "pieces": {
                        "dojo": {
                            "sha256": SHA,
                            "size": 10,
                            "resolvables": [{"url": "https://a.example/dojo.zip"}],
                        }
                    }
                },
            }
        }
    )
)


def room(pieces: dict[str, list[str]], **restrictions: Any) -> RoomConfig:
    limits = {
        "allowed_collections": ["chars"],
        "max_pieces": 10,
        "max_piece_bytes": 100,
        "max_total_bytes": 100,
        **restrictions,
    }
    pin = {"sha256": SHA, "size": 10}
    content = {f"{c}/{p}": pin for c, names in pieces.items() for p in names}
    data = {
        "room_id": "r",
        "restrictions": limits,
        "pieces": pieces,
        "users": {"alice": {"public_key": KEY}},
        "content": content,
    }
    return parse_room_config(json.dumps(data))


def test_no_allowed_scheme_lists_every_allowed_scheme_and_the_piece_s_own() -> None:
    [problem] = check_room(room({"chars": ["kfm"]}, allowed_schemes=["https", "file"]), CONFIG)
    assert problem.message == (
        "no resolvable uses an allowed scheme (allowed: https, file; it has: http)"
    )


def test_a_collection_the_room_does_not_allow_is_named_as_such() -> None:
    [problem] = check_room(room({"stages": ["dojo"]}), CONFIG)
    assert (problem.path, problem.value) == ("$.pieces.stages", '"stages"')
    assert problem.message == "collection is not in restrictions.allowed_collections"


def test_a_piece_the_config_lacks_is_named_as_such() -> None:
    [problem] = check_room(room({"chars": ["ghost"]}), CONFIG)
    assert (problem.path, problem.value) == ("$.pieces.chars[0]", '"chars/ghost"')
    assert problem.message == "piece is not in the match-lock config"


def test_signing_for_a_user_the_room_does_not_expect_lists_whom_it_expects() -> None:
    two = room({"chars": ["kfm"]}).model_copy(
        update={"users": {"alice": RoomUser(public_key=KEY), "bob": RoomUser(public_key=KEY)}}
    )
    with pytest.raises(UsageError) as caught:
        sign_room(two, "mallory", insecure_key("mallory"))
    assert str(caught.value) == "room 'r' does not expect user 'mallory' (it expects: alice, bob)"


def test_a_listed_key_with_a_second_spelling_is_named_by_its_path() -> None:
    last = B64.index(KEY[-2])
    assert last % 4 == 0  # the two unused bits of the canonical spelling are zero
    twin = KEY[:-2] + B64[last + 1] + "="  # the same 32 bytes, one unused bit set
    odd = room({"chars": ["kfm"]}).model_copy(
        update={"users": {"alice": RoomUser(public_key=twin)}}
    )
    with pytest.raises(InputError, match=r"^\$\.users\.alice\.public_key: expected base64"):
        sign_room(odd, "alice", insecure_key("alice"))
