"""``matchlock keygen`` and ``matchlock room new | sign | verify``, in-process and end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from matchlock.app.configfile import load_room_config
from matchlock.app.keys import load_public_key
from matchlock.cli import main
from matchlock.core.signing import public_key_to_b64, signature_report

REPO = Path(__file__).resolve().parents[2]
SHA = "0" * 64


def piece(size: int, *urls: str) -> dict[str, Any]:
    return {"sha256": SHA, "size": size, "resolvables": [{"url": url} for url in urls]}


def write_config(path: Path, *, with_ryu: bool = True, kfm_sha: str = SHA) -> Path:
    chars = {"kfm": piece(100, "https://a.example/kfm.zip") | {"sha256": kfm_sha}}
    if with_ryu:
        chars["ryu"] = piece(300, "http://b.example/ryu.zip", "https://a.example/ryu.zip")
    data = {
        "collections": {
            "chars": {"mandatory": True, "pieces": chars},
            "stages": {"pieces": {"dojo": piece(50, "file:///srv/dojo.zip")}},
        }
    }
    path.write_text(json.dumps(data))
    return path


class Cli:
    """Runs ``matchlock`` in this process, keeping what it printed."""

    def __init__(self, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.folder = folder
        self.capsys = capsys
        self.out = self.err = ""

    def __call__(self, *args: str) -> int:
        code = main(list(args))
        self.out, self.err = self.capsys.readouterr()
        return code


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """A command line running in a fresh folder that holds ``matchlock.json``."""
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "matchlock.json")
    return Cli(tmp_path, capsys)


NEW_ROOM = (
    *("room", "new", "--room-id", "friday", "--config", "matchlock.json"),
    *("--user", "alice=alice.key.pub", "--user", "bob=bob.key.pub", "--out", "room.json"),
)
"""The ``matchlock room new`` command line of the tests' two-user room."""

ALICE_ROOM = (
    *("room", "new", "--room-id", "r", "--config", "matchlock.json"),
    *("--user", "alice=alice.key.pub", "--out", "room.json"),
)
"""The same for a room of alice alone."""


def make_signed_room(cli: Cli) -> Path:
    for user in ("alice", "bob"):
        assert cli("keygen", "--out", f"{user}.key") == 0
    assert cli(*NEW_ROOM) == 0
    for user in ("alice", "bob"):
        assert cli("room", "sign", "room.json", "--user", user, "--key", f"{user}.key") == 0
    return cli.folder / "room.json"


def test_keygen_prints_the_public_key_and_both_paths(cli: Cli) -> None:
    assert cli("keygen", "--out", "alice.key") == 0
    public = public_key_to_b64(load_public_key(cli.folder / "alice.key.pub"))
    assert f"public key:  {public}" in cli.out
    assert "alice.key" in cli.out and "alice.key.pub" in cli.out
    assert cli("keygen", "--out", "alice.key") == 2
    assert "already exists" in cli.err
    assert cli("keygen", "--out", "alice.key", "--force") == 0
    assert public_key_to_b64(load_public_key(cli.folder / "alice.key.pub")) != public


def test_new_sign_verify_and_tampering(cli: Cli) -> None:
    room_path = make_signed_room(cli)
    assert "every expected user has signed" in cli.out
    assert cli("room", "verify", "room.json") == 0
    assert cli("room", "verify", "room.json", "--config", "matchlock.json") == 0
    assert "is valid" in cli.out

    data = json.loads(room_path.read_text())
    data["restrictions"]["max_pieces"] = 3
    room_path.write_text(json.dumps(data))
    assert cli("room", "verify", "room.json") == 1
    assert "alice: wrong" in cli.out and "bob: wrong" in cli.out
    assert "cannot open" in cli.err


def test_verify_names_users_who_have_not_signed_and_strangers(cli: Cli) -> None:
    room_path = make_signed_room(cli)
    data = json.loads(room_path.read_text())
    data["signatures"]["mallory"] = data["signatures"].pop("bob")
    room_path.write_text(json.dumps(data))
    assert cli("room", "verify", "room.json") == 1
    assert "alice: valid" in cli.out
    assert "bob: missing: has not signed" in cli.out
    assert "mallory: unexpected" in cli.out


def test_verify_with_a_config_catches_a_missing_piece(cli: Cli) -> None:
    make_signed_room(cli)
    write_config(cli.folder / "other.json", with_ryu=False)
    assert cli("room", "verify", "room.json", "--config", "other.json") == 1
    assert '$.pieces.chars[1]: piece is not in the match-lock config (got "chars/ryu")' in cli.out
    assert "alice: valid" in cli.out


def test_new_derives_restrictions_from_the_mandatory_pieces(cli: Cli) -> None:
    make_signed_room(cli)
    room = load_room_config(cli.folder / "room.json")
    assert room.pieces == {"chars": ("kfm", "ryu")}
    limits = room.restrictions
    assert limits.allowed_collections == ("chars",)
    assert (limits.max_pieces, limits.max_piece_bytes, limits.max_total_bytes) == (2, 300, 400)
    assert limits.allowed_schemes == ("http", "https")
    assert {key: (pin.sha256, pin.size) for key, pin in room.content.items()} == {
        "chars/kfm": (SHA, 100),
        "chars/ryu": (SHA, 300),
    }
    assert list(room.users) == ["alice", "bob"]
    assert room.users["bob"].public_key == public_key_to_b64(
        load_public_key(cli.folder / "bob.key.pub")
    )


def test_new_with_chosen_pieces_and_limits(cli: Cli) -> None:
    assert cli("keygen", "--out", "alice.key") == 0
    assert (
        cli(
            "room",
            "new",
            "--room-id",
            "r",
            "--config",
            "matchlock.json",
            "--user",
            "alice=alice.key.pub",
            "--piece",
            "stages/dojo",
            "--piece",
            "chars/kfm",
            "--max-pieces",
            "5",
            "--allow-scheme",
            "https",
            "--allow-scheme",
            "file",
            "--allow-collection",
            "stages",
            "--allow-collection",
            "chars",
            "--out",
            "room.json",
        )
        == 0
    )
    room = load_room_config(cli.folder / "room.json")
    assert room.pieces == {"stages": ("dojo",), "chars": ("kfm",)}
    limits = room.restrictions
    assert limits.allowed_collections == ("stages", "chars")
    assert (limits.max_pieces, limits.max_piece_bytes, limits.max_total_bytes) == (5, 100, 150)
    assert limits.allowed_schemes == ("https", "file")
    assert signature_report(room).missing == ("alice",)


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--piece", "chars/ghost"], "$.pieces.chars[0]: piece is not in the match-lock config"),
        (["--max-piece-bytes", "200"], "max_piece_bytes (200)"),
        (["--allow-scheme", "file"], "no resolvable uses an allowed scheme"),
        (["--allow-collection", "stages"], "not in restrictions.allowed_collections"),
        (["--room-id", "../escape"], "$.room_id"),
    ],
)
def test_new_refuses_a_room_that_does_not_fit(cli: Cli, extra: list[str], complaint: str) -> None:
    assert cli("keygen", "--out", "alice.key") == 0
    code = cli(*ALICE_ROOM, *extra)
    assert code == 2
    assert complaint in cli.err
    assert not (cli.folder / "room.json").exists()


def test_new_refuses_to_overwrite_and_needs_pieces(cli: Cli) -> None:
    assert cli("keygen", "--out", "alice.key") == 0
    (cli.folder / "room.json").write_text("keep me")
    args = ["room", "new", "--room-id", "r", "--user", "alice=alice.key.pub", "--out", "room.json"]
    assert cli(*args, "--config", "matchlock.json") == 2
    assert "already exists" in cli.err
    assert (cli.folder / "room.json").read_text() == "keep me"
    assert cli(*args, "--config", "matchlock.json", "--force") == 0
    (cli.folder / "optional.json").write_text(json.dumps({"collections": {}}))
    assert cli(*args, "--config", "optional.json", "--force") == 2
    assert "no mandatory pieces" in cli.err
    assert cli(*args, "--config", "missing.json", "--force") == 2
    assert "missing.json" in cli.err


def test_sign_refuses_foreign_keys_and_strangers(cli: Cli) -> None:
    make_signed_room(cli)
    before = (cli.folder / "room.json").read_bytes()
    assert cli("room", "sign", "room.json", "--user", "alice", "--key", "bob.key") == 2
    assert "does not belong to user 'alice'" in cli.err
    assert cli("room", "sign", "room.json", "--user", "eve", "--key", "bob.key") == 2
    assert "does not expect user 'eve'" in cli.err
    assert cli("room", "sign", "room.json", "--user", "bob", "--key", "nokey") == 2
    assert "no such key file" in cli.err
    assert (cli.folder / "room.json").read_bytes() == before


def test_bad_room_files_and_arguments_are_usage_errors(cli: Cli) -> None:
    (cli.folder / "room.json").write_text('{"room_id": 1}')
    assert cli("room", "verify", "room.json") == 2
    assert "$.room_id" in cli.err
    with pytest.raises(SystemExit) as caught:
        cli(
            "room",
            "new",
            "--room-id",
            "r",
            "--config",
            "matchlock.json",
            "--user",
            "alice",
            "--out",
            "x.json",
        )
    assert caught.value.code == 2


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "matchlock", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_end_to_end_in_a_separate_process(tmp_path: Path) -> None:
    write_config(tmp_path / "matchlock.json")
    for user in ("alice", "bob"):
        assert run(tmp_path, "keygen", "--out", f"{user}.key").returncode == 0
    made = run(tmp_path, *NEW_ROOM)
    assert made.returncode == 0, made.stderr
    for user in ("alice", "bob"):
        signed = run(tmp_path, "room", "sign", "room.json", "--user", user, "--key", f"{user}.key")
        assert signed.returncode == 0, signed.stderr
    verified = run(tmp_path, "room", "verify", "room.json", "--config", "matchlock.json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "alice: valid" in verified.stdout and "bob: valid" in verified.stdout

    data = json.loads((tmp_path / "room.json").read_text())
    data["pieces"]["chars"].reverse()
    (tmp_path / "room.json").write_text(json.dumps(data))
    tampered = run(tmp_path, "room", "verify", "room.json")
    assert tampered.returncode == 1
    assert "alice: wrong" in tampered.stdout and "bob: wrong" in tampered.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_terminal_gets_a_table(tmp_path: Path) -> None:
    import pty

    write_config(tmp_path / "matchlock.json")
    assert run(tmp_path, "keygen", "--out", "alice.key").returncode == 0
    assert run(tmp_path, *ALICE_ROOM).returncode == 0
    controller, terminal = pty.openpty()
    env = os.environ | {"PYTHONPATH": str(REPO), "COLUMNS": "120"}
    process = subprocess.Popen(
        [sys.executable, "-m", "matchlock", "room", "verify", "room.json"],
        cwd=tmp_path,
        env=env,
        stdout=terminal,
        stderr=subprocess.DEVNULL,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 1
    text = shown.decode("utf-8", "replace")
    assert "signatures" in text and "alice" in text and "missing" in text
    assert "alice: missing" not in text  # the table, not the plain lines


def test_verify_with_a_config_catches_different_content(cli: Cli) -> None:
    make_signed_room(cli)
    write_config(cli.folder / "other.json", kfm_sha="e" * 64)
    assert cli("room", "verify", "room.json", "--config", "other.json") == 1
    assert '$.content["chars/kfm"].sha256: differs from the match-lock config' in cli.out


def test_a_room_that_pins_no_content_is_refused(cli: Cli) -> None:
    room_path = make_signed_room(cli)
    data = json.loads(room_path.read_text())
    del data["content"]
    room_path.write_text(json.dumps(data))
    assert cli("room", "verify", "room.json") == 2
    assert "$.content: Field required" in cli.err
