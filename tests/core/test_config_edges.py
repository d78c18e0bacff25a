"""How a config's problems are shown: the value as JSON (cut at 80 characters), the path in
JSON-path form whatever the key, and the config named by default."""

from __future__ import annotations

import json
from typing import Any

import pytest

from matchlock.core.config import (
    MAX_NAME_LENGTH,
    is_safe_name,
    parse_matchlock_config,
    parse_room_config,
    split_piece_key,
)
from matchlock.core.errors import ConfigError, Problem

SHA = "a" * 64


def piece(**fields: Any) -> dict[str, Any]:
    return {"sha256": SHA, "size": 1, "resolvables": [{"url": "https://a.example/p"}], **fields}


def collections(name: str, pieces: dict[str, Any]) -> dict[str, Any]:
    return {"collections": {name: {"pieces": pieces}}}


def only_problem(data: dict[str, Any]) -> Problem:
    with pytest.raises(ConfigError) as caught:
        parse_matchlock_config(json.dumps(data))
    [problem] = caught.value.problems
    return problem


def test_a_null_value_is_shown_as_null() -> None:
    problem = only_problem(collections("chars", {"kfm": piece(unpack=None)}))
    assert (problem.path, problem.value) == ("$.collections.chars.pieces.kfm.unpack", "null")


def test_a_value_is_shown_whole_up_to_80_characters() -> None:
    value = "x" * 78  # 80 characters with its quotes
    problem = only_problem(collections("chars", {"kfm": piece(size=value)}))
    assert problem.value == json.dumps(value)


def test_a_longer_value_is_cut_to_80_characters_ending_in_an_ellipsis() -> None:
    value = "x" * 79  # 81 characters with its quotes
    problem = only_problem(collections("chars", {"kfm": piece(size=value)}))
    assert problem.value == json.dumps(value)[:77] + "..."
    assert len(problem.value) == 80


def test_a_safe_id_that_is_no_identifier_is_still_a_dotted_step() -> None:
    problem = only_problem(collections("chars-2", {"kfm": piece(size=-1)}))
    assert problem.path == "$.collections.chars-2.pieces.kfm.size"


def test_an_unsafe_key_is_a_json_string_in_brackets_with_no_validator_tag() -> None:
    problem = only_problem(collections("a..b", {"kfm": piece()}))
    assert problem.path == '$.collections["a..b"]'
    assert problem.value == '"a..b"'


def test_a_key_with_a_bracket_is_named_in_the_path_not_taken_for_a_validator_tag() -> None:
    problem = only_problem(collections("chars[1]", {"kfm": piece()}))
    assert problem.path == '$.collections["chars[1]"]'
    problem = only_problem({**collections("chars", {"kfm": piece()}), "extra[0]": 1})
    assert problem.path == '$["extra[0]"]'


def test_a_refused_field_value_has_the_field_path_and_no_validator_tag() -> None:
    problem = only_problem(collections("chars", {"kfm": piece(filename="a..b")}))
    assert problem.path == "$.collections.chars.pieces.kfm.filename"
    assert problem.message == "Value error, must not contain '..'"


def test_errors_name_the_kind_of_config_by_default() -> None:
    with pytest.raises(ConfigError) as matchlock:
        parse_matchlock_config("{}")
    with pytest.raises(ConfigError) as room:
        parse_room_config("{}")
    assert matchlock.value.source == "match-lock config"
    assert str(matchlock.value).startswith("match-lock config: 1 problem(s)\n")
    assert room.value.source == "room config"


def test_not_json_is_said_in_our_words_with_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_matchlock_config('{"collections": }')
    [problem] = caught.value.problems
    assert problem.path == "$"
    assert problem.message.startswith("not valid JSON: ")
    assert problem.message.endswith(" at line 1 column 17")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a..b", "must not contain '..'"),
        ("kfm.", "must not end with '.' (Windows drops it)"),
        ("nul.txt", "is a device name on Windows (CON, NUL, COM1 ...)"),
    ],
)
def test_an_unsafe_id_is_refused_with_the_reason_it_is_unsafe(name: str, why: str) -> None:
    problem = only_problem(collections("chars", {name: piece()}))
    assert problem.message == f"Value error, {why}"


def test_ids_that_differ_only_in_case_are_both_named() -> None:
    problem = only_problem(collections("chars", {"kfm": piece(), "KFM": piece()}))
    assert problem.message == "Value error, 'kfm' and 'KFM' differ only in case"


@pytest.mark.parametrize("length", [1, MAX_NAME_LENGTH])
def test_a_piece_address_takes_ids_of_one_to_the_longest_length(length: int) -> None:
    name = "k" * length
    assert split_piece_key(f"{name}/{name}") == (name, name)
    assert is_safe_name(name)


def test_an_empty_or_overlong_id_is_no_safe_name() -> None:
    assert not is_safe_name("")
    assert not is_safe_name("k" * (MAX_NAME_LENGTH + 1))
