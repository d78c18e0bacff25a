"""Folder-only pieces outside a transfer: where the cache keeps one, when a game or cache
folder counts as holding one, ``matchlock cache verify`` of one, ``matchlock digest --pin``,
and a room made, signed and verified for one from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matchlock.app.configfile import load_room_config
from matchlock.cli import main
from matchlock.core import events as ev
from matchlock.core.config import Piece, parse_matchlock_config
from matchlock.downloads import DownloadError, download_sync
from matchlock.downloads.cache import Cache, piece_file_name
from matchlock.downloads.folder_stream import decode_folder_stream, encode_folder_stream, folder_pin
from matchlock.downloads.manage import list_cache, verify_cache
from matchlock.downloads.verify import folder_problem


def character(root: Path) -> Path:
    (root / "sprites").mkdir(parents=True)
    (root / "kfm.def").write_text("[Info]\nname = kfm\n")
    (root / "sprites" / "kfm.sff").write_bytes(bytes(range(256)) * 40)
    return root


def folder_only(folder: Path) -> Piece:
    digest, size = folder_pin(folder)
    return Piece.model_validate_json(json.dumps({"folder_sha256": digest, "folder_size": size}))


def test_a_folder_only_piece_lives_in_the_cache_under_its_folder_digest(tmp_path: Path) -> None:
    piece = folder_only(character(tmp_path / "game" / "kfm"))
    cache = Cache(tmp_path / "cache")
    assert piece.folder_sha256 is not None
    assert cache.folder("chars/kfm", piece) == cache.root / f"{piece.folder_sha256}-folder"
    assert piece_file_name("chars/kfm", piece) == "kfm"  # no resolvable to name it after


def test_a_game_folder_holds_a_folder_only_piece_only_with_its_digest(tmp_path: Path) -> None:
    folder = character(tmp_path / "game" / "kfm")
    piece = folder_only(folder)
    assert folder_problem(folder, piece, "kfm", None) is None
    (folder / "kfm.def").write_text("[Info]\nname = edited\n")
    problem = folder_problem(folder, piece, "kfm", None)
    assert problem is not None and f"expected {piece.folder_sha256}" in problem


def test_cache_verify_checks_a_received_folder_against_its_name(tmp_path: Path) -> None:
    source = character(tmp_path / "game" / "kfm")
    piece = folder_only(source)
    assert piece.folder is not None
    cache = Cache(tmp_path / "cache")
    cache.prepare()
    part = cache.part_path(piece.content_digest)
    part.write_bytes(b"".join(encode_folder_stream(source, *piece.folder).chunks()))
    staging = cache.new_staging(cache.folder("chars/kfm", piece))
    decode_folder_stream(part, staging, folder_sha256=piece.folder[0], folder_size=piece.folder[1])
    part.unlink()
    cache.publish(staging, cache.folder("chars/kfm", piece))
    [entry] = list_cache(cache.root)
    assert (entry.kind, entry.sha256, entry.size) == ("folder", piece.folder[0], piece.folder[1])
    assert [v.status for v in verify_cache(cache.root)] == ["ok"]
    (cache.folder("chars/kfm", piece) / "kfm.def").write_text("changed")
    [verdict] = verify_cache(cache.root)
    assert verdict.status == "damaged" and f"expected {piece.folder[0]}" in verdict.reason


def test_digest_pin_prints_the_folder_pin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = character(tmp_path / "kfm")
    assert main(["digest", str(folder), "--pin"]) == 0
    pin = json.loads(capsys.readouterr().out)
    assert pin == {"folder_sha256": folder_pin(folder)[0], "folder_size": 18 + 10240}
    assert main(["digest", str(folder)]) == 0
    assert capsys.readouterr().out == pin["folder_sha256"] + "\n"


def test_a_room_for_a_folder_only_piece_is_made_signed_and_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digest, size = folder_pin(character(tmp_path / "kfm"))
    config = {
        "collections": {
            "chars": {
                "mandatory": True,
                "pieces": {"kfm": {"folder_sha256": digest, "folder_size": size}},
            }
        }
    }
    (tmp_path / "m.json").write_text(json.dumps(config))
    parse_matchlock_config((tmp_path / "m.json").read_bytes())
    key = tmp_path / "alice.key"
    assert main(["keygen", "--out", str(key)]) == 0
    room_file = tmp_path / "room.json"
    new = ["room", "new", "--room-id", "r", "--config", str(tmp_path / "m.json")]
    new += ["--user", f"alice={key}.pub", "--room-source", "first", "--out", str(room_file)]
    assert main(new) == 0
    room = load_room_config(room_file)
    assert room.restrictions.room_source == "first"
    assert room.content["chars/kfm"].folder == (digest, size)
    assert room.content["chars/kfm"].archive is None
    assert main(["room", "sign", str(room_file), "--user", "alice", "--key", str(key)]) == 0
    capsys.readouterr()
    verify = ["room", "verify", str(room_file), "--config", str(tmp_path / "m.json")]
    assert main(verify) == 0, capsys.readouterr()


def test_a_download_finds_a_folder_only_piece_in_the_game_and_cannot_fetch_one_absent(
    tmp_path: Path,
) -> None:
    kfm = character(tmp_path / "game" / "chars" / "kfm")
    digest, size = folder_pin(kfm)
    data = {
        "collections": {
            "chars": {
                "mandatory": True,
                "engine_path": "chars/{piece}",
                "pieces": {
                    "kfm": {"folder_sha256": digest, "folder_size": size},
                    "ryu": {"folder_sha256": "0" * 64, "folder_size": 3},
                },
            }
        }
    }
    config = parse_matchlock_config(json.dumps(data))
    events: list[ev.Event] = []
    with pytest.raises(DownloadError) as raised:
        download_sync(
            config, tmp_path / "cache", engine_root=tmp_path / "game", on_event=events.append
        )
    assert raised.value.folders == {"chars/kfm": kfm.absolute()}
    assert list(raised.value.failures) == ["chars/ryu"]
    finished = [e for e in events if isinstance(e, ev.PieceFinished)]
    assert [(e.piece, e.source) for e in finished] == [("chars/kfm", "engine")]
    opened = next(e for e in events if isinstance(e, ev.DownloadOpened))
    assert opened.sizes == {"chars/kfm": size, "chars/ryu": 3}
