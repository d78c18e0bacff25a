"""The content fingerprint: its documented bytes and digest, what it depends on (only the pinned
content), and that ``fingerprint``, ``join --json`` and ``download --json`` all carry the same."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from matchlock.app.configfile import load_matchlock_config, load_room_config
from matchlock.cli import main
from matchlock.core.config import RoomConfig, parse_matchlock_config, parse_room_config
from matchlock.core.fingerprint import (
    FINGERPRINT_DOMAIN,
    content_fingerprint,
    fingerprint_bytes,
    pieces_fingerprint,
)
from matchlock.core.roomconfig import new_room
from matchlock.core.signing import public_key_to_b64, sign_room
from tests.app.content_files import join_args, result_line, write_match
from tests.core.test_signing import doc_example

SHAS = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
NAMES = st.text("abc_0", min_size=1, max_size=3)
KEYS = st.builds("{}/{}".format, NAMES, NAMES)
CONTENT = st.dictionaries(KEYS, st.tuples(SHAS, st.integers(0, 2**53 - 2)), max_size=4)


def pins(content: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {key: (pin["sha256"], pin["size"]) for key, pin in content.items()}


def test_the_worked_example_of_the_docs() -> None:
    """docs/ikemen-go.md: the bytes hashed and the digests are what we compute."""
    content = pins(json.loads(doc_example("ikemen-go.md", "fingerprint-content")))
    expected = doc_example("ikemen-go.md", "fingerprint-bytes") + "\n"
    assert fingerprint_bytes(content) == expected.encode("ascii")
    assert expected.startswith(FINGERPRINT_DOMAIN.decode("ascii"))
    digests = dict(line.split() for line in doc_example("ikemen-go.md", "fingerprint").splitlines())
    room = parse_room_config(doc_example("canonical-form.md", "room"))
    fingerprint = content_fingerprint(room)  # the room of canonical-form.md pins that content
    assert (fingerprint.full, fingerprint.short) == (digests["full"], digests["short"])
    assert fingerprint.pieces == 3


def test_the_launcher_example_shows_the_fingerprint_of_its_own_pieces() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "ikemen-go.md").read_text()
    block = re.search(r"```json\n(.*?)\n```", text, re.DOTALL)
    assert block is not None
    config = parse_matchlock_config(block.group(1))
    short = pieces_fingerprint(config, ["chars/kfm", "stages/training"]).short
    assert f'"fingerprint": {{"short": "{short}"' in text
    assert f"-contentfingerprint {short}" in text


def room_of(content: dict[str, tuple[str, int]], room_id: str, users: int) -> RoomConfig:
    keys = [Ed25519PrivateKey.from_private_bytes(bytes([n + 1]) * 32) for n in range(users)]
    pieces: dict[str, list[str]] = {}
    for address in content:
        collection, name = address.split("/")
        pieces.setdefault(collection, []).append(name)
    data = {
        "room_id": room_id,
        "restrictions": {
            "allowed_collections": sorted(pieces),
            "max_pieces": users,
            "max_piece_bytes": 1,
            "max_total_bytes": 2,
        },
        "pieces": pieces,
        "users": {
            f"u{n}": {"public_key": public_key_to_b64(k.public_key())} for n, k in enumerate(keys)
        },
        "content": {
            k: {"sha256": sha, "size": size} for k, (sha, size) in reversed(content.items())
        },
    }
    room = parse_room_config(json.dumps(data))
    for n, private in enumerate(keys):
        room = sign_room(room, f"u{n}", private)
    return room


@settings(max_examples=30, deadline=None)
@given(CONTENT, st.integers(1, 3))
def test_only_the_pinned_content_counts(content: dict[str, tuple[str, int]], users: int) -> None:
    base = content_fingerprint(room_of(content, "a", 1))
    other = room_of(dict(reversed(content.items())), "another-room", users)  # order, id, users
    assert content_fingerprint(other) == base
    assert content_fingerprint(other.model_copy(update={"signatures": {}})) == base
    assert len(base.full) == 64 and base.short == base.full[:16]
    for key, (sha, size) in content.items():
        changed_size = {**content, key: (sha, size + 1)}
        changed_sha = {**content, key: ("f" * 64 if sha != "f" * 64 else "e" * 64, size)}
        assert content_fingerprint(room_of(changed_size, "a", 1)) != base
        assert content_fingerprint(room_of(changed_sha, "a", 1)) != base
        fewer = {k: v for k, v in content.items() if k != key}
        assert content_fingerprint(room_of(fewer, "a", 1)) != base


def test_malformed_content_is_refused() -> None:
    with pytest.raises(ValueError, match="not a piece address"):
        fingerprint_bytes({"kfm": ("a" * 64, 1)})
    with pytest.raises(ValueError, match="64 lowercase hex"):
        fingerprint_bytes({"chars/kfm": ("A" * 64, 1)})
    with pytest.raises(ValueError, match="size must be >= 0"):
        fingerprint_bytes({"chars/kfm": ("a" * 64, -1)})
    assert fingerprint_bytes({}) == FINGERPRINT_DOMAIN


def test_a_download_of_a_rooms_pieces_has_the_rooms_fingerprint(tmp_path: Path) -> None:
    match = write_match(tmp_path)
    config, room = load_matchlock_config(match.config), load_room_config(match.room)
    assert pieces_fingerprint(config, room.piece_keys()) == content_fingerprint(room)
    unsigned = new_room(config, "other", {"x": room.users["p1"].public_key}, ["chars/kfm"])
    assert pieces_fingerprint(config, ["chars/kfm"]) == content_fingerprint(unsigned)
    with pytest.raises(KeyError, match="chars/ryu is not in the match-lock config"):
        pieces_fingerprint(config, ["chars/ryu"])


def test_the_command_prints_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    match = write_match(tmp_path)
    capsys.readouterr()
    fingerprint = content_fingerprint(load_room_config(match.room))
    assert main(["fingerprint", str(match.room)]) == 0
    assert capsys.readouterr().out == fingerprint.short + "\n"
    assert main(["fingerprint", str(match.room), "--full"]) == 0
    assert capsys.readouterr().out == fingerprint.full + "\n"
    assert main(["fingerprint", str(match.room), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {
        "type": "fingerprint",
        "room_id": "friday-1",
        "fingerprint": {"short": fingerprint.short, "full": fingerprint.full, "pieces": 2},
    }


def test_join_and_download_results_carry_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    match = write_match(tmp_path)
    expected = content_fingerprint(load_room_config(match.room)).as_json()
    capsys.readouterr()
    assert main(join_args(match, "--dest", str(tmp_path / "cache"))) == 0
    assert result_line(capsys.readouterr().out)["fingerprint"] == expected
    args = ["download", str(match.config), "--dest", str(tmp_path / "cache"), "--json"]
    assert main(args) == 0
    assert result_line(capsys.readouterr().out)["fingerprint"] == expected
    assert main([*args, "--mandatory-only"]) == 0  # the same pieces: the same content
    assert result_line(capsys.readouterr().out)["fingerprint"] == expected


def test_a_partial_download_fingerprints_what_it_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    match = write_match(tmp_path)
    (tmp_path / "dojo.zip").unlink()
    capsys.readouterr()
    args = ["download", str(match.config), "--dest", str(tmp_path / "cache"), "--json"]
    assert main(args) == 1
    result = result_line(capsys.readouterr().out)
    assert set(result["folders"]) == {"chars/kfm"} and set(result["failures"]) == {"stages/dojo"}
    config = load_matchlock_config(match.config)
    assert result["fingerprint"] == pieces_fingerprint(config, ["chars/kfm"]).as_json()
