"""Canonical bytes, signatures and restriction checks of room configs."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import assume, given
from hypothesis import strategies as st

from matchlock.app.configfile import room_config_json
from matchlock.core.config import (
    MAX_EXACT_INTEGER,
    SCHEMES,
    MatchLockConfig,
    RoomConfig,
    is_safe_name,
    parse_matchlock_config,
    parse_room_config,
)
from matchlock.core.errors import InputError, RestrictionError, SignatureError, UsageError
from matchlock.core.signing import (
    ROOM_SIGNATURE_DOMAIN,
    canonical_room_bytes,
    check_room,
    public_key_from_b64,
    public_key_to_b64,
    require_room_fits,
    sign_room,
    signature_report,
    signed_room_bytes,
    verify_room,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"

PRIVATE_KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32) for n in range(1, 6)]
PUBLIC_KEYS = [public_key_to_b64(key.public_key()) for key in PRIVATE_KEYS]
KEY_OF = dict(zip(PUBLIC_KEYS, PRIVATE_KEYS, strict=True))

NAMES = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,9}", fullmatch=True).filter(is_safe_name)
INTEGERS = st.integers(0, MAX_EXACT_INTEGER)
PINS = st.fixed_dictionaries(
    {"sha256": st.from_regex(r"[0-9a-f]{64}", fullmatch=True), "size": INTEGERS}
)


def doc_example(page: str, name: str) -> str:
    """The fenced block that follows ``<!-- example: name -->`` in a docs page."""
    text = (DOCS / page).read_text(encoding="utf-8")
    found = re.search(rf"<!-- example: {name} -->\n```[a-z]*\n(.*?)\n```", text, re.DOTALL)
    assert found is not None, f"{page} has no example {name!r}"
    return found.group(1)


@st.composite
def room_data(draw: st.DrawFn) -> dict[str, Any]:
    """A valid room config as JSON data (no signatures); user n holds key n."""
    collections = draw(st.lists(NAMES, max_size=3, unique_by=str.casefold))
    users = draw(st.lists(NAMES, min_size=1, max_size=3, unique_by=str.casefold))
    restrictions: dict[str, Any] = {
        "allowed_collections": draw(st.lists(NAMES, max_size=3)),
        "max_pieces": draw(INTEGERS),
        "max_piece_bytes": draw(INTEGERS),
        "max_total_bytes": draw(INTEGERS),
    }
    schemes = draw(st.none() | st.lists(st.sampled_from(SCHEMES), unique=True))
    if schemes is not None:
        restrictions["allowed_schemes"] = schemes
    room = {
        "room_id": draw(NAMES),
        "restrictions": restrictions,
        "pieces": {
            c: draw(st.lists(NAMES, max_size=3, unique_by=str.casefold)) for c in collections
        },
        "users": {user: {"public_key": PUBLIC_KEYS[n]} for n, user in enumerate(users)},
    }
    room["content"] = {key: draw(PINS) for key in piece_keys(room)}
    return room


def piece_keys(room: dict[str, Any]) -> list[str]:
    return [f"{c}/{name}" for c, names in room["pieces"].items() for name in names]


def parse(data: dict[str, Any]) -> RoomConfig:
    return parse_room_config(json.dumps(data))


def sign_all(room: RoomConfig) -> RoomConfig:
    for user_id, user in room.users.items():
        room = sign_room(room, user_id, KEY_OF[user.public_key])
    return room


# --- canonical form ----------------------------------------------------------------------------


def test_the_documented_example_is_true() -> None:
    """docs/canonical-form.md: its canonical bytes, digests and signatures are what we produce."""
    room = parse_room_config(doc_example("canonical-form.md", "room"))
    canonical = canonical_room_bytes(room)
    print(canonical.decode("utf-8"))
    assert canonical == doc_example("canonical-form.md", "canonical").encode("utf-8")
    digests = dict(line.split() for line in doc_example("canonical-form.md", "sha256").splitlines())
    print(
        hashlib.sha256(canonical).hexdigest(), hashlib.sha256(signed_room_bytes(room)).hexdigest()
    )
    assert digests == {
        "canonical": hashlib.sha256(canonical).hexdigest(),
        "signed": hashlib.sha256(b"matchlock-room-config-v1\n" + canonical).hexdigest(),
    }
    seeds = dict(line.split() for line in doc_example("canonical-form.md", "seeds").splitlines())
    for user_id, seed in seeds.items():
        room = sign_room(room, user_id, Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed)))
    print(json.dumps(room.signatures, indent=2))
    assert room.signatures == json.loads(doc_example("canonical-form.md", "signatures"))
    verify_room(room)


def test_signed_bytes_are_the_domain_line_then_the_canonical_bytes() -> None:
    room = parse_room_config(doc_example("canonical-form.md", "room"))
    assert ROOM_SIGNATURE_DOMAIN == b"matchlock-room-config-v1\n"
    assert signed_room_bytes(room) == ROOM_SIGNATURE_DOMAIN + canonical_room_bytes(room)


def reorder(data: st.DataObject, value: Any) -> Any:
    """The same JSON value with every object's keys in a drawn order (arrays keep theirs)."""
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {key: reorder(data, value[key]) for key in keys}
    if isinstance(value, list):
        return [reorder(data, item) for item in value]
    return value


@given(st.data(), room_data())
def test_canonical_bytes_ignore_key_order_whitespace_and_signatures(
    data: st.DataObject, room: dict[str, Any]
) -> None:
    reference = canonical_room_bytes(parse(room))
    shuffled = reorder(data, room) | {"signatures": {"someone": "x"}}
    indent = data.draw(st.sampled_from([None, 0, 2, "\t", " \n "]))
    separators = data.draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " : ")]))
    text = json.dumps(shuffled, indent=indent, separators=separators)
    assert canonical_room_bytes(parse_room_config(text)) == reference


@given(room_data())
def test_canonical_bytes_are_compact_sorted_json_of_every_field(room: dict[str, Any]) -> None:
    canonical = canonical_room_bytes(parse(room))
    value = json.loads(canonical)
    assert set(value) == {"room_id", "restrictions", "pieces", "content", "users"}
    assert "allowed_schemes" in value["restrictions"]  # defaults are written out
    assert canonical == json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    assert canonical_room_bytes(parse_room_config(canonical)) == canonical
    assert b" " not in canonical and b"\n" not in canonical


def test_integers_beyond_exact_doubles_are_refused() -> None:
    room = parse_room_config(doc_example("canonical-form.md", "room"))
    limits = room.restrictions.model_copy(update={"max_total_bytes": MAX_EXACT_INTEGER})
    canonical_room_bytes(room.model_copy(update={"restrictions": limits}))
    limits = room.restrictions.model_copy(update={"max_total_bytes": MAX_EXACT_INTEGER + 1})
    with pytest.raises(InputError, match=r"\$\.restrictions\.max_total_bytes"):
        canonical_room_bytes(room.model_copy(update={"restrictions": limits}))


# --- signatures --------------------------------------------------------------------------------


@given(room_data())
def test_a_room_signed_by_every_user_verifies(room: dict[str, Any]) -> None:
    signed = sign_all(parse(room))
    verify_room(signed)
    report = signature_report(signed)
    assert report.ok and report.valid == tuple(signed.users)
    # signatures cover the canonical form, not the file's text
    verify_room(parse_room_config(room_config_json(signed)))


def change_room_id(data: st.DataObject, room: dict[str, Any]) -> None:
    room["room_id"] = data.draw(NAMES)


def change_restrictions(data: st.DataObject, room: dict[str, Any]) -> None:
    limits = room["restrictions"]
    field = data.draw(
        st.sampled_from(["max_pieces", "max_piece_bytes", "max_total_bytes", "allowed_schemes"])
    )
    if field == "allowed_schemes":
        limits[field] = data.draw(st.lists(st.sampled_from(SCHEMES), unique=True))
    else:
        limits[field] = data.draw(INTEGERS)
    extra = data.draw(st.lists(NAMES, max_size=1))
    limits["allowed_collections"] = data.draw(
        st.permutations(limits["allowed_collections"] + extra)
    )


def change_pieces(data: st.DataObject, room: dict[str, Any]) -> None:
    collection = data.draw(NAMES)
    twin = next((c for c in room["pieces"] if c.casefold() == collection.casefold()), collection)
    if data.draw(st.booleans()) and twin in room["pieces"]:
        del room["pieces"][twin]
    else:
        room["pieces"][twin] = data.draw(st.lists(NAMES, max_size=3, unique_by=str.casefold))
    old = room["content"]  # keep pinning exactly the expected pieces, as the schema wants
    room["content"] = {key: old.get(key) or data.draw(PINS) for key in piece_keys(room)}


def change_content(data: st.DataObject, room: dict[str, Any]) -> None:
    keys = piece_keys(room)
    if keys:
        room["content"][data.draw(st.sampled_from(keys))] = data.draw(PINS)


def change_users(data: st.DataObject, room: dict[str, Any]) -> None:
    users = room["users"]
    user = data.draw(st.sampled_from(sorted(users)) | NAMES)
    user = next((u for u in users if u.casefold() == user.casefold()), user)
    if user in users and len(users) > 1 and data.draw(st.booleans()):
        del users[user]
    else:
        users[user] = {"public_key": data.draw(st.sampled_from(PUBLIC_KEYS))}


MUTATIONS = [change_room_id, change_restrictions, change_pieces, change_content, change_users]
"""Each changes one part of a room's signed content in place (possibly to what it was)."""


@given(st.data(), room_data())
def test_any_change_to_a_signed_field_breaks_every_signature(
    data: st.DataObject, room: dict[str, Any]
) -> None:
    signed = sign_all(parse(room))
    changed = json.loads(json.dumps(room))
    data.draw(st.sampled_from(MUTATIONS))(data, changed)
    tampered = parse(changed | {"signatures": signed.signatures})
    # Setting a field to its default, or a key to the same key, changes nothing that is signed.
    assume(canonical_room_bytes(tampered) != canonical_room_bytes(signed))
    report = signature_report(tampered)
    assert report.valid == ()
    assert report.wrong == tuple(u for u in tampered.users if u in signed.signatures)
    assert report.missing == tuple(u for u in tampered.users if u not in signed.signatures)
    assert report.unexpected == tuple(u for u in signed.signatures if u not in tampered.users)
    with pytest.raises(SignatureError):
        verify_room(tampered)


def four_user_room() -> RoomConfig:
    users = {
        name: {"public_key": key}
        for name, key in zip(["alice", "bob", "carol", "dave"], PUBLIC_KEYS, strict=False)
    }
    return parse(
        {
            "room_id": "r1",
            "restrictions": {
                "allowed_collections": [],
                "max_pieces": 0,
                "max_piece_bytes": 0,
                "max_total_bytes": 0,
            },
            "pieces": {},
            "content": {},
            "users": users,
        }
    )


def noncanonical(text: str) -> str:
    """The same bytes in padded base64 whose unused low bits are not zero."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    data = text.rstrip("=")
    last = alphabet.index(data[-1])
    assert last % 4 == 0  # the unused bits of a canonical last character are zero
    return data[:-1] + alphabet[last + 1] + text[len(data) :]


def test_every_kind_of_bad_signature_is_named() -> None:
    room = four_user_room()
    alice = sign_room(room, "alice", PRIVATE_KEYS[0]).signatures["alice"]
    carol_bytes = PRIVATE_KEYS[2].sign(signed_room_bytes(room))
    bad = room.model_copy(
        update={
            "signatures": {
                "alice": alice,
                "carol": base64.b64encode(carol_bytes[:63]).decode(),
                "dave": alice,  # a real signature, by another key
                "mallory": alice,
            }
        }
    )
    with pytest.raises(SignatureError) as caught:
        verify_room(bad)
    error = caught.value
    assert (error.missing, error.malformed, error.wrong, error.unexpected) == (
        ["bob"],
        ["carol"],
        ["dave"],
        ["mallory"],
    )
    assert error.room_id == "r1"
    for name in ("bob", "carol", "dave", "mallory"):
        assert name in str(error)
    report = signature_report(bad)
    assert report.valid == ("alice",) and not report.ok
    assert report.error().missing == ["bob"]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda s: "not base64!",
        lambda s: "",
        lambda s: s[:-4],
        lambda s: s[:40] + " " + s[40:],
        lambda s: base64.b64encode(base64.b64decode(s) + b"\0").decode(),
        noncanonical,
        lambda s: s.rstrip("="),
    ],
)
def test_malformed_signatures(spoil: Any) -> None:
    room = sign_room(four_user_room(), "alice", PRIVATE_KEYS[0])
    spoilt = spoil(room.signatures["alice"])
    report = signature_report(room.model_copy(update={"signatures": {"alice": spoilt}}))
    assert report.malformed == ("alice",)


def test_noncanonical_base64_would_decode_to_the_same_bytes() -> None:
    signature = sign_room(four_user_room(), "alice", PRIVATE_KEYS[0]).signatures["alice"]
    for good in (signature, PUBLIC_KEYS[0]):
        assert base64.b64decode(noncanonical(good)) == base64.b64decode(good)
        assert noncanonical(good) != good and len(noncanonical(good)) == len(good)


def test_sign_room_adds_a_sorted_signature_and_leaves_the_input_alone() -> None:
    room = four_user_room()
    signed = sign_room(sign_room(room, "bob", PRIVATE_KEYS[1]), "alice", PRIVATE_KEYS[0])
    assert room.signatures == {}
    assert list(signed.signatures) == ["alice", "bob"]
    assert len(base64.b64decode(signed.signatures["bob"])) == 64
    resigned = sign_room(signed, "bob", PRIVATE_KEYS[1])
    assert resigned.signatures == signed.signatures  # Ed25519 is deterministic


def test_sign_room_refuses_unexpected_users_and_foreign_keys() -> None:
    room = four_user_room()
    with pytest.raises(UsageError, match="does not expect user 'eve'"):
        sign_room(room, "eve", PRIVATE_KEYS[0])
    with pytest.raises(UsageError, match="does not belong to user 'bob'"):
        sign_room(room, "bob", PRIVATE_KEYS[0])


def test_public_keys_round_trip_and_bad_ones_are_input_errors() -> None:
    key = PRIVATE_KEYS[0].public_key()
    text = public_key_to_b64(key)
    assert len(text) == 44
    assert public_key_from_b64(text + "\n").public_bytes_raw() == key.public_bytes_raw()
    short = base64.b64encode(b"x" * 31).decode()
    for bad in ("abc", short, base64.b64encode(b"x" * 33).decode(), noncanonical(text)):
        with pytest.raises(InputError, match=r"bob\.pub"):
            public_key_from_b64(bad, "bob.pub")


# --- restrictions ------------------------------------------------------------------------------


SHA = "0" * 64


def piece(size: int, *urls: str) -> dict[str, Any]:
    return {"sha256": SHA, "size": size, "resolvables": [{"url": url} for url in urls]}


def config() -> MatchLockConfig:
    return parse_matchlock_config(
        json.dumps(
            {
                "collections": {
                    "chars": {
                        "mandatory": True,
                        "pieces": {
                            "kfm": piece(100, "https://a.example/kfm"),
                            "ryu": piece(300, "http://b.example/ryu", "https://a.example/ryu"),
                        },
                    },
                    "stages": {"pieces": {"dojo": piece(50, "file:///srv/dojo")}},
                    "secret": {"pieces": {"x": piece(1, "https://a.example/x")}},
                }
            }
        )
    )


def pins_from_config(pieces: dict[str, list[str]]) -> dict[str, Any]:
    """Each piece pinned as the config states it (made up for pieces it lacks)."""
    known = config()
    pins = {}
    for key in piece_keys({"pieces": pieces}):
        found = known.piece(key)
        pins[key] = (
            {"sha256": SHA, "size": 1}
            if found is None
            else found.model_dump(include={"sha256", "size"})
        )
    return pins


def room_with(
    pieces: dict[str, list[str]], content: dict[str, Any] | None = None, **limits: Any
) -> RoomConfig:
    restrictions = {
        "allowed_collections": ["chars", "stages"],
        "max_pieces": 10,
        "max_piece_bytes": 300,
        "max_total_bytes": 450,
    } | limits
    return parse(
        {
            "room_id": "r",
            "restrictions": restrictions,
            "pieces": pieces,
            "content": pins_from_config(pieces) if content is None else content,
            "users": {"alice": {"public_key": PUBLIC_KEYS[0]}},
        }
    )


def test_a_room_within_its_limits_fits() -> None:
    room = room_with(
        {"chars": ["kfm", "ryu"], "stages": ["dojo"]},
        max_pieces=3,
        allowed_schemes=["https", "file"],
    )
    assert check_room(room, config()) == []
    require_room_fits(room, config())


def test_a_disallowed_resolvable_is_fine_when_another_is_allowed() -> None:
    room = room_with({"chars": ["ryu"]}, allowed_schemes=["https"])
    assert check_room(room, config()) == []
    room = room_with({"chars": ["ryu"]}, allowed_schemes=["file"])
    [problem] = check_room(room, config())
    assert (problem.path, problem.value) == ("$.pieces.chars[0]", '"chars/ryu"')
    assert "http, https" in problem.message


def test_every_restriction_problem_is_named_with_path_and_value() -> None:
    room = room_with(
        {"chars": ["kfm", "ryu", "ghost"], "stages": ["dojo"], "secret": ["x"]},
        max_pieces=3,
        max_piece_bytes=200,
        max_total_bytes=400,
    )
    problems = check_room(room, config())
    assert [(p.path, p.value) for p in problems] == [
        ("$.pieces.chars[1]", '"chars/ryu"'),
        ("$.pieces.chars[2]", '"chars/ghost"'),
        ("$.pieces.stages[0]", '"stages/dojo"'),
        ("$.pieces.secret", '"secret"'),
        ("$.pieces", "5"),
        ("$.pieces", "451"),
    ]
    messages = [p.message for p in problems]
    assert "max_piece_bytes (200)" in messages[0]
    assert "not in the match-lock config" in messages[1]
    assert "no resolvable uses an allowed scheme" in messages[2]
    assert "allowed_collections" in messages[3]
    assert "max_pieces (3)" in messages[4]
    assert "max_total_bytes (400)" in messages[5]
    with pytest.raises(RestrictionError) as caught:
        require_room_fits(room, config())
    assert caught.value.problems == problems
    assert "$.pieces.chars[2]" in str(caught.value)


def test_a_piece_missing_from_an_unknown_collection_is_named() -> None:
    room = room_with({"chars": ["kfm"], "music": ["song"]}, allowed_collections=["chars", "music"])
    assert [(p.path, p.value) for p in check_room(room, config())] == [
        ("$.pieces.music[0]", '"music/song"')
    ]


def test_pinned_content_must_match_the_config() -> None:
    pins = pins_from_config({"chars": ["kfm", "ryu"]})
    pins["chars/kfm"]["sha256"] = "f" * 64
    pins["chars/ryu"]["size"] = 299
    room = room_with({"chars": ["kfm", "ryu"]}, content=pins)
    problems = check_room(room, config())
    assert [(p.path, p.value) for p in problems] == [
        ('$.content["chars/kfm"].sha256', json.dumps("f" * 64)),
        ('$.content["chars/ryu"].size', "299"),
    ]
    assert SHA in problems[0].message and "(300)" in problems[1].message
