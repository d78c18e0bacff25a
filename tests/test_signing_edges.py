"""What a user reads when a room does not fit its match-lock config: each problem is one plain
sentence that names the restriction and both sides of it (what is allowed, what the piece has)."""

from __future__ import annotations

import json
from typing import Any

from matchlock.config import parse_matchlock_config, parse_room_config
from matchlock.signing import check_room

SHA = "a" * 64
KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="

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


def room(pieces: dict[str, list[str]], **restrictions: Any) -> Any:
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
