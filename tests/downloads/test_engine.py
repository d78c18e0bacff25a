"""Pieces the game already has: used when they verify, reported and re-installed when not."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matchlock.core.events import Event, PieceFinished
from matchlock.core.events import FolderRejected as FolderRejectedEvent
from matchlock.downloads import FolderRejected, download
from matchlock.downloads.folder_digest import folder_digest
from tests.downloads.conftest import FAST_POLICY, ContentServer, config, piece, zip_bytes

FILES = {"kfm.def": b"[Info]\nname = kfm\n", "kfm.sff": os.urandom(4000)}


def game_with_kfm(root: Path) -> Path:
    folder = root / "chars" / "kfm"
    folder.mkdir(parents=True)
    for name, content in FILES.items():
        (folder / name).write_bytes(content)
    return folder


def chars(server: ContentServer, **fields: object) -> dict[str, Any]:
    data = zip_bytes(FILES)
    server.add("kfm", data)
    return {
        "chars": {
            "engine_path": "chars/{piece}",
            "pieces": {"kfm": piece(data, server.url("ok", "kfm"), unpack="zip", **fields)},
        }
    }


async def run(
    pieces: dict[str, Any], tmp_path: Path
) -> tuple[dict[str, Path], list[Event], list[FolderRejected]]:
    events: list[Event] = []
    notices: list[FolderRejected] = []
    folders = await download(
        config(pieces),
        tmp_path / "cache",
        engine_root=tmp_path / "game",
        on_event=events.append,
        on_notice=notices.append,
        policy=FAST_POLICY,
    )
    return folders, events, notices


def sources(events: list[Event]) -> list[str]:
    return [e.source for e in events if isinstance(e, PieceFinished)]


async def test_a_verified_engine_folder_is_used_without_a_request(
    server: ContentServer, tmp_path: Path
) -> None:
    folder = game_with_kfm(tmp_path / "game")
    pieces = chars(server, folder_sha256=folder_digest(folder))
    folders, events, notices = await run(pieces, tmp_path)
    assert folders == {"chars/kfm": folder}
    assert sources(events) == ["engine"]
    assert server.requests == [] and notices == []
    assert not any((tmp_path / "cache").glob("*-zip"))


async def test_a_tampered_engine_folder_is_reported_and_the_piece_installed_in_the_cache(
    server: ContentServer, tmp_path: Path
) -> None:
    folder = game_with_kfm(tmp_path / "game")
    pieces = chars(server, folder_sha256=folder_digest(folder))
    (folder / "kfm.def").write_bytes(b"[Info]\nname = cheater\n")
    folders, events, notices = await run(pieces, tmp_path)
    (notice,) = notices
    assert (notice.where, notice.folder) == ("engine", folder)
    assert "its folder digest is" in notice.reason
    (rejected,) = [e for e in events if isinstance(e, FolderRejectedEvent)]  # in the log too
    assert (rejected.piece, rejected.where, rejected.folder) == ("chars/kfm", "engine", str(folder))
    assert rejected.reason == notice.reason
    installed = folders["chars/kfm"]
    assert installed.parent == (tmp_path / "cache").absolute()
    assert folder_digest(installed) == pieces["chars"]["pieces"]["kfm"]["folder_sha256"]
    assert (folder / "kfm.def").read_bytes() == b"[Info]\nname = cheater\n", "game files untouched"
    assert sources(events) == [server.url("ok", "kfm")]


async def test_an_engine_folder_without_folder_sha256_is_not_trusted(
    server: ContentServer, tmp_path: Path
) -> None:
    game_with_kfm(tmp_path / "game")
    folders, _, notices = await run(chars(server), tmp_path)
    (notice,) = notices
    assert "cannot be verified" in notice.reason
    assert folders["chars/kfm"].parent == (tmp_path / "cache").absolute()


async def test_a_single_file_piece_is_found_in_the_engine_by_its_digest(
    server: ContentServer, tmp_path: Path
) -> None:
    song = os.urandom(30_000)
    folder = tmp_path / "game" / "sound" / "theme"
    folder.mkdir(parents=True)
    (folder / "theme.ogg").write_bytes(song)
    server.add("theme.ogg", song)
    pieces = {
        "music": {
            "engine_path": "sound/{piece}",
            "pieces": {"theme": piece(song, server.url("ok", "theme.ogg"))},
        }
    }
    folders, events, _ = await run(pieces, tmp_path)
    assert folders == {"music/theme": folder}
    assert sources(events) == ["engine"] and server.requests == []
