"""The config models: good configs parse, bad ones report every problem with path and value."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from matchlock.core.config import (
    MAX_NAME_LENGTH,
    parse_matchlock_config,
    parse_room_config,
    split_piece_key,
)
from matchlock.core.errors import ConfigError

SHA = "a" * 64
KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="


def matchlock_data() -> dict[str, Any]:
    return {
        "collections": {
            "chars": {
                "mandatory": True,
                "engine_path": "chars/{piece}",
                "pieces": {
                    "kfm": {
                        "sha256": SHA,
                        "size": 10,
                        "unpack": "zip",
                        "folder_sha256": "b" * 64,
                        "resolvables": [
                            {"url": "https://a.example/kfm.zip"},
                            {"url": "file:///srv/kfm.zip"},
                        ],
                    },
                    "ryu": {"sha256": SHA, "size": 0, "resolvables": [{"url": "http://b/r"}]},
                },
            },
            "stages": {
                "pieces": {
                    "dojo": {
                        "sha256": SHA,
                        "size": 5,
                        "resolvables": [{"url": "https://a.example/dojo.tar.gz"}],
                    }
                }
            },
        }
    }


def room_data() -> dict[str, Any]:
    return {
        "room_id": "friday-night",
        "restrictions": {
            "allowed_collections": ["chars"],
            "max_pieces": 2,
            "max_piece_bytes": 10,
            "max_total_bytes": 20,
        },
        "pieces": {"chars": ["kfm", "ryu"]},
        "users": {"alice": {"public_key": KEY}},
        "content": {
            "chars/kfm": {"sha256": SHA, "size": 10},
            "chars/ryu": {"sha256": SHA, "size": 10},
        },
    }


def problems_of(parse: Any, data: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse(json.dumps(data))
    return [(p.path, p.value) for p in caught.value.problems]


def test_a_good_matchlock_config_parses_with_defaults_and_order() -> None:
    config = parse_matchlock_config(json.dumps(matchlock_data()))
    assert list(config.pieces()) == ["chars/kfm", "chars/ryu", "stages/dojo"]
    assert list(config.pieces(mandatory_only=True)) == ["chars/kfm", "chars/ryu"]
    kfm = config.piece("chars/kfm")
    assert kfm is not None and kfm.unpack == "zip" and kfm.folder_sha256 == "b" * 64
    assert [r.scheme for r in kfm.resolvables] == ["https", "file"]
    dojo = config.piece("stages/dojo")
    assert dojo is not None and dojo.unpack == "none" and dojo.filename is None
    assert config.collections["stages"].mandatory is False
    assert config.piece("stages/nope") is None and config.piece("nope/kfm") is None


def test_a_good_room_config_parses_with_defaults() -> None:
    room = parse_room_config(json.dumps(room_data()))
    assert room.restrictions.allowed_schemes == ("https",)
    assert room.signatures == {}
    assert room.piece_keys() == ["chars/kfm", "chars/ryu"]


def test_configs_are_frozen() -> None:
    room = parse_room_config(json.dumps(room_data()))
    with pytest.raises(ValueError, match="frozen"):
        room.room_id = "other"  # type: ignore[misc]


def test_every_problem_is_reported_with_its_path_and_value() -> None:
    data = matchlock_data()
    chars = data["collections"]["chars"]
    chars["pieces"]["kfm"]["size"] = -1
    chars["pieces"]["ryu"]["sha256"] = "XYZ"
    chars["pieces"]["ryu"]["colour"] = "red"
    data["collections"]["stages"]["pieces"]["dojo"]["resolvables"][0]["url"] = "https:///x"
    assert problems_of(parse_matchlock_config, data) == [
        ("$.collections.chars.pieces.kfm.size", "-1"),
        ("$.collections.chars.pieces.ryu.sha256", '"XYZ"'),
        ("$.collections.chars.pieces.ryu.colour", '"red"'),
        ("$.collections.stages.pieces.dojo.resolvables[0].url", '"https:///x"'),
    ]


def test_room_problems_are_all_reported() -> None:
    data = room_data()
    data["pieces"]["chars"] = ["kfm", "kfm"]
    data["users"]["bob"] = {"public_key": "short"}
    data["restrictions"]["max_pieces"] = "2"
    del data["restrictions"]["max_total_bytes"]
    paths = [path for path, _ in problems_of(parse_room_config, data)]
    assert paths == [
        "$.restrictions.max_pieces",
        "$.restrictions.max_total_bytes",
        "$.pieces",
        "$.users.bob.public_key",
    ]


def test_not_json_is_one_problem_with_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_matchlock_config('{"collections": {"a": }', source="my.json")
    assert caught.value.source == "my.json"
    [problem] = caught.value.problems
    assert problem.path == "$" and "line 1 column 23" in problem.message
    assert "my.json" in str(caught.value)


UNSAFE_IDS = [
    "..",
    "a..b",
    ".hidden",
    "-x",
    "a/b",
    "/abs",
    "a\\b",
    "C:",
    "",
    "a b",
    "é",
    "x" * (MAX_NAME_LENGTH + 1),
    "kfm.",
    "CON",
    "nul.txt",
    "com1",
]


@pytest.mark.parametrize("name", UNSAFE_IDS)
def test_unsafe_ids_are_refused_everywhere(name: str) -> None:
    shown = json.dumps(name, ensure_ascii=False)
    data = matchlock_data()
    data["collections"]["chars"]["pieces"][name] = data["collections"]["chars"]["pieces"]["kfm"]
    assert shown in [value for _, value in problems_of(parse_matchlock_config, data)]
    data = matchlock_data()
    data["collections"][name] = data["collections"].pop("stages")
    assert shown in [value for _, value in problems_of(parse_matchlock_config, data)]
    for field in ("room_id", "piece", "user", "collection"):
        room = room_data()
        if field == "room_id":
            room["room_id"] = name
        elif field == "piece":
            room["pieces"]["chars"] = [name]
        elif field == "user":
            room["users"][name] = {"public_key": KEY}
        else:
            room["pieces"][name] = ["kfm"]
        assert shown in [value for _, value in problems_of(parse_room_config, room)], field


def test_the_longest_safe_id_is_accepted() -> None:
    room = room_data()
    room["room_id"] = "r" * MAX_NAME_LENGTH
    assert parse_room_config(json.dumps(room)).room_id == "r" * MAX_NAME_LENGTH


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", "12"),
        ("size", True),
        ("size", 1.0),
        ("sha256", SHA.upper()),
        ("unpack", "rar"),
        ("filename", "../x"),
        ("resolvables", [{"url": "ftp://a/b"}]),
        ("resolvables", ["https://a/b"]),
    ],
)
def test_piece_fields_are_strict(field: str, value: Any) -> None:
    data = matchlock_data()
    data["collections"]["chars"]["pieces"]["kfm"][field] = value
    paths = [path for path, _ in problems_of(parse_matchlock_config, data)]
    assert any(path.startswith(f"$.collections.chars.pieces.kfm.{field}") for path in paths)


@pytest.mark.parametrize(
    "template", ["../x/{piece}", "/abs/{piece}", "c:/x/{piece}", "a\\..\\{piece}", "chars"]
)
def test_engine_path_must_be_a_relative_template(template: str) -> None:
    data = matchlock_data()
    data["collections"]["chars"]["engine_path"] = template
    assert problems_of(parse_matchlock_config, data) == [
        ("$.collections.chars.engine_path", json.dumps(template))
    ]


@pytest.mark.parametrize(
    ("path", "value"),
    [(("mandatory",), "yes"), (("mandatory",), 1), (("pieces",), [])],
)
def test_collection_fields_are_strict(path: tuple[str, ...], value: Any) -> None:
    data = copy.deepcopy(matchlock_data())
    data["collections"]["chars"][path[0]] = value
    assert [p for p, _ in problems_of(parse_matchlock_config, data)] == [
        f"$.collections.chars.{path[0]}"
    ]


@pytest.mark.parametrize("key", ["A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg", "x" * 44, 7])
def test_room_public_keys_must_be_44_characters_of_base64(key: Any) -> None:
    room = room_data()
    room["users"]["alice"]["public_key"] = key
    assert [p for p, _ in problems_of(parse_room_config, room)] == ["$.users.alice.public_key"]


def test_a_room_needs_a_user_and_knows_no_extra_fields() -> None:
    room = room_data()
    room["users"] = {}
    room["host"] = "me"
    assert [p for p, _ in problems_of(parse_room_config, room)] == ["$.users", "$.host"]


def test_split_piece_key() -> None:
    assert split_piece_key("chars/kfm") == ("chars", "kfm")
    for bad in ("chars", "chars/", "/kfm", "chars/../x", "a/b/c"):
        with pytest.raises(ValueError, match="collection/piece"):
            split_piece_key(bad)


def test_room_content_pins_every_expected_piece() -> None:
    pin = {"sha256": SHA, "size": 10}
    parsed = parse_room_config(json.dumps(room_data()))
    assert parsed.content["chars/ryu"].size == 10
    unpinned = room_data()
    del unpinned["content"]
    assert problems_of(parse_room_config, unpinned) == [("$.content", "")]
    with pytest.raises(ConfigError) as caught:
        parse_room_config(json.dumps(room_data() | {"content": {"chars/kfm": pin}}))
    [problem] = caught.value.problems
    assert "chars/ryu" in problem.message


@pytest.mark.parametrize("key", ["chars", "chars/../x", "/kfm", "chars/kfm/x"])
def test_room_content_keys_are_piece_addresses(key: str) -> None:
    room = room_data() | {"content": {key: {"sha256": SHA, "size": 1}}}
    paths = [path for path, _ in problems_of(parse_room_config, room)]
    assert any(path.startswith("$.content") for path in paths)
