"""Signing in parallel: detached signatures, adding them, merging signed copies (API and CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from matchlock.app.configfile import load_room_config, room_config_json
from matchlock.core.config import RoomConfig, parse_room_config
from matchlock.core.errors import InputError, UsageError
from matchlock.core.signing import (
    add_signature,
    detached_signature,
    merge_signed,
    public_key_to_b64,
    sign_room,
    signature_report,
    verify_room,
)
from tests.cli.test_cli_room import NEW_ROOM, Cli, cli

__all__ = ["cli"]  # the fixture, used by the CLI tests below

KEYS = {name: Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32) for n, name in enumerate(
    ("alice", "bob", "carol"), start=1
)}  # fmt: skip


def room(room_id: str = "friday", size: int = 100) -> RoomConfig:
    data = {
        "room_id": room_id,
        "restrictions": {
            "allowed_collections": ["chars"],
            "max_pieces": 1,
            "max_piece_bytes": 1000,
            "max_total_bytes": 1000,
        },
        "pieces": {"chars": ["kfm"]},
        "users": {u: {"public_key": public_key_to_b64(k.public_key())} for u, k in KEYS.items()},
        "content": {"chars/kfm": {"sha256": "a" * 64, "size": size}},
    }
    return parse_room_config(json.dumps(data))


def test_detached_signatures_made_at_once_add_up_to_a_signed_room() -> None:
    unsigned = room()
    signatures = {user: detached_signature(unsigned, user, key) for user, key in KEYS.items()}
    assert unsigned.signatures == {}  # signing detached changed nothing
    collected = unsigned
    for user in ("carol", "alice", "bob"):  # any order
        collected = add_signature(collected, user, signatures[user])
    verify_room(collected)
    in_turn = unsigned
    for user, key in KEYS.items():
        in_turn = sign_room(in_turn, user, key)
    assert collected == in_turn


def test_a_signature_for_another_room_is_refused_naming_the_user() -> None:
    other = detached_signature(room("saturday"), "bob", KEYS["bob"])
    with pytest.raises(InputError, match="'bob' does not verify against room 'friday'"):
        add_signature(room(), "bob", other)
    changed = detached_signature(room(size=101), "bob", KEYS["bob"])
    with pytest.raises(InputError, match="'bob' does not verify"):
        add_signature(room(), "bob", changed)
    alices = detached_signature(room(), "alice", KEYS["alice"])
    with pytest.raises(InputError, match="'bob' does not verify"):
        add_signature(room(), "bob", alices)  # right room, wrong user's key


def test_malformed_and_stranger_signatures_are_refused() -> None:
    with pytest.raises(InputError, match="for 'bob' is not base64 of 64 bytes"):
        add_signature(room(), "bob", "c2lnbmF0dXJl")
    with pytest.raises(InputError, match="'dave', whom room 'friday' does not expect"):
        add_signature(room(), "dave", detached_signature(room(), "bob", KEYS["bob"]))
    with pytest.raises(UsageError, match="does not belong to user 'alice'"):
        detached_signature(room(), "alice", KEYS["bob"])


def test_merge_collects_every_copy_and_refuses_another_room() -> None:
    unsigned = room()
    copies = [sign_room(unsigned, user, key) for user, key in KEYS.items()]
    merged = merge_signed(copies)
    assert signature_report(merged).ok
    assert merge_signed([merged, copies[0]]) == merged  # nothing twice
    partial = merge_signed(copies[:2])
    assert signature_report(partial).missing == ("carol",)
    stranger = sign_room(room(size=101), "carol", KEYS["carol"])
    with pytest.raises(InputError, match=r"copy 3 .* is not the same room as copy 1"):
        merge_signed([copies[0], copies[1], stranger])
    forged = copies[1].model_copy(update={"signatures": {"bob": copies[0].signatures["alice"]}})
    with pytest.raises(InputError, match="copy 2: the signature for 'bob' does not verify"):
        merge_signed([copies[0], forged])
    with pytest.raises(UsageError):
        merge_signed([])


def make_room(cli: Cli) -> Path:
    for user in ("alice", "bob"):
        assert cli("keygen", "--out", f"{user}.key") == 0
    assert cli(*NEW_ROOM) == 0
    return cli.folder / "room.json"


def test_sign_detached_prints_only_the_signature_and_add_signature_collects(cli: Cli) -> None:
    path = make_room(cli)
    before = path.read_bytes()
    signatures = {}
    for user in ("alice", "bob"):
        assert (
            cli("room", "sign", "room.json", "--user", user, "--key", f"{user}.key", "--detached")
            == 0
        )
        signatures[user] = cli.out.strip()
        assert len(cli.out.splitlines()) == 1 and len(signatures[user]) == 88
    assert path.read_bytes() == before
    args = [f"{user}={signature}" for user, signature in signatures.items()]
    assert cli("room", "add-signature", "room.json", *args) == 0
    assert "every expected user has signed" in cli.out
    assert signature_report(load_room_config(path)).ok


def test_add_signature_refuses_one_for_another_room_and_leaves_the_file(cli: Cli) -> None:
    path = make_room(cli)
    other = load_room_config(path).model_copy(update={"room_id": "saturday"})
    (cli.folder / "other.json").write_text(room_config_json(other))
    assert cli("room", "sign", "other.json", "--user", "bob", "--key", "bob.key", "--detached") == 0
    wrong = cli.out.strip()
    assert (
        cli("room", "sign", "room.json", "--user", "alice", "--key", "alice.key", "--detached") == 0
    )
    right = cli.out.strip()
    before = path.read_bytes()
    assert cli("room", "add-signature", "room.json", f"alice={right}", f"bob={wrong}") == 2
    assert "the signature for 'bob' does not verify against room 'friday'" in cli.err
    assert path.read_bytes() == before  # alice's good one was not written alone either
    with pytest.raises(SystemExit):
        cli("room", "add-signature", "room.json", "bob")
    assert "expected USER_ID=SIGNATURE, got 'bob'" in cli.capsys.readouterr().err


def test_merge_of_copies_signed_apart(cli: Cli) -> None:
    path = make_room(cli)
    for user in ("alice", "bob"):
        copy = cli.folder / f"{user}.json"
        copy.write_bytes(path.read_bytes())
        assert cli("room", "sign", copy.name, "--user", user, "--key", f"{user}.key") == 0
    assert cli("room", "merge", "alice.json", "bob.json", "--out", "room.json") == 0
    assert signature_report(load_room_config(path)).ok
    other = load_room_config(path).model_copy(update={"room_id": "saturday", "signatures": {}})
    (cli.folder / "other.json").write_text(room_config_json(other))
    assert cli("room", "merge", "alice.json", "other.json", "--out", "merged.json") == 2
    assert (
        "copy 2 (other.json) (room 'saturday') is not the same room as copy 1 (alice.json)"
        in cli.err
    )
    assert not (cli.folder / "merged.json").exists()
