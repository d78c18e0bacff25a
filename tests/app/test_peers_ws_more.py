"""More rooms whose pieces come from members over a real websocket host on 127.0.0.1: three
members served by the one holder, a member that does not serve (``serve=False``) leaving the
others without the piece, a holder whose cached archive was altered after it verified (it
checks again, says it does not hold it, and the next holder serves), a folder-only piece given
from a player's game folder, a piece pinned both ways whose holder has only the folder, and the
room first or never among a piece's sources."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from matchlock.core import events as ev
from matchlock.core.config import PinnedPiece, parse_matchlock_config
from matchlock.core.errors import RoomIncompleteError
from matchlock.downloads.cache import Cache
from matchlock.downloads.folder_digest import folder_digest
from matchlock.downloads.kept import kept_archive, verified_unchanged
from matchlock.tools.testing import signed_room
from tests.app.peer_rooms import WsRoom, lock, member, room_of, sources, transfers
from tests.app.room_content import KFM, KFM_DEF
from tests.downloads.conftest import ContentServer, sha256


async def test_three_members_get_a_piece_from_its_one_holder(
    server: ContentServer, tmp_path: Path
) -> None:
    users = ("alice", "bob", "carol", "dave")
    room = room_of("three", users)
    async with WsRoom(tmp_path) as hosted, asyncio.timeout(60):
        await asyncio.gather(
            *(
                member(
                    hosted.url, room, u, lock(server, "ok" if u == "alice" else "missing"), tmp_path
                )
                for u in users
            )
        )
    given = {u: sources(tmp_path / u / "room.log")["chars/kfm"] for u in ("bob", "carol", "dave")}
    for user, source in given.items():  # from alice, or from one who had it from her already
        assert source.startswith("room:") and source != f"room:{user}", (user, source)
    assert "room:alice" in given.values()
    served = transfers(tmp_path / "alice" / "room.log")
    assert {e.outcome for e in served} == {"sent"}
    assert len(served) == list(given.values()).count("room:alice")


async def test_a_member_that_does_not_serve_gives_nothing(
    server: ContentServer, tmp_path: Path
) -> None:
    room = room_of("no-serve", ("alice", "bob"))
    async with WsRoom(tmp_path) as hosted, asyncio.timeout(60):
        alice = asyncio.create_task(
            member(hosted.url, room, "alice", lock(server, "ok"), tmp_path, serve=False)
        )
        with pytest.raises(
            RoomIncompleteError, match="no other member of the room holds chars/kfm"
        ):
            await member(hosted.url, room, "bob", lock(server, "missing"), tmp_path)
        alice.cancel()
    assert transfers(tmp_path / "alice" / "room.log") == []
    given_up = transfers(tmp_path / "bob" / "room.log")
    assert [(e.type, e.outcome, e.holder) for e in given_up] == [  # type: ignore[union-attr]
        ("transfer_received", "unavailable", "")
    ] * len(given_up)
    assert given_up and "no other member of the room holds chars/kfm" in given_up[0].reason


async def test_a_holder_whose_cached_archive_was_altered_says_so_and_the_next_holder_serves(
    server: ContentServer, tmp_path: Path
) -> None:
    room = room_of("altered", ("alice", "bob", "carol"))
    async with WsRoom(tmp_path) as hosted, asyncio.timeout(60):
        holders = [
            asyncio.create_task(member(hosted.url, room, u, lock(server, "ok"), tmp_path))
            for u in ("alice", "carol")
        ]
        caches = [Cache(tmp_path / u / "cache") for u in ("alice", "carol")]
        kept = [kept_archive(cache, sha256(KFM)) for cache in caches]
        while not all(  # kept, and recorded as verified
            verified_unchanged(cache, sha256(KFM), path)
            for cache, path in zip(caches, kept, strict=True)
        ):
            await asyncio.sleep(0.02)
        with kept[0].open("r+b") as file:  # same file, same size, one byte changed in place
            file.seek(100)
            file.write(bytes([KFM[100] ^ 0xFF]))
        assert not verified_unchanged(caches[0], sha256(KFM), kept[0])  # so alice hashes it again
        bob = await member(hosted.url, room, "bob", lock(server, "missing"), tmp_path)
        await asyncio.gather(*holders)
    assert (bob["chars/kfm"] / "kfm.def").read_bytes() == KFM_DEF
    assert sources(tmp_path / "bob" / "room.log")["chars/kfm"] == "room:carol"
    (refusal,) = transfers(tmp_path / "alice" / "room.log")
    assert refusal.outcome == "unheld" and "sha256" in refusal.reason
    failures = [
        e.failure
        for e in read_log(tmp_path / "bob" / "room.log")
        if isinstance(e, ev.ResolvableFailed)
    ]
    assert [f.url for f in failures][1:] == ["room:alice"]  # after the 404: alice could not


def read_log(path: Path) -> list[ev.Event]:
    from matchlock.store.eventlog import read_events

    return read_events(path).events


async def test_a_folder_only_piece_comes_from_a_players_game_folder(tmp_path: Path) -> None:
    game = tmp_path / "game" / "chars" / "kfm"
    (game / "data").mkdir(parents=True)
    (game / "kfm.def").write_bytes(KFM_DEF)
    (game / "data" / "kfm.sff").write_bytes(bytes(range(256)) * 64)
    digest, size = folder_digest(game), len(KFM_DEF) + 256 * 64
    room = signed_room(
        "folders",
        ("alice", "bob"),
        {"chars/kfm": PinnedPiece(folder_sha256=digest, folder_size=size)},
    )
    body = {
        "collections": {
            "chars": {
                "mandatory": True,
                "engine_path": "chars/{piece}",
                "pieces": {"kfm": {"folder_sha256": digest, "folder_size": size}},
            }
        }
    }
    config = parse_matchlock_config(json.dumps(body))
    async with WsRoom(tmp_path) as hosted, asyncio.timeout(60):
        alice, bob = await asyncio.gather(
            member(hosted.url, room, "alice", config, tmp_path, engine_root=tmp_path / "game"),
            member(hosted.url, room, "bob", config, tmp_path),
        )
    assert alice["chars/kfm"] == game.absolute()
    assert bob["chars/kfm"].is_relative_to(tmp_path / "bob")
    assert folder_digest(bob["chars/kfm"]) == digest
    assert (bob["chars/kfm"] / "data" / "kfm.sff").read_bytes() == bytes(range(256)) * 64
    assert sources(tmp_path / "bob" / "room.log")["chars/kfm"] == "room:alice"
    (received,) = transfers(tmp_path / "bob" / "room.log")
    assert (received.form, received.outcome) == ("folder", "verified")
    assert hashlib.sha256(b"").hexdigest() != digest


async def test_with_the_room_first_members_that_all_lack_a_piece_go_on_to_their_mirrors(
    server: ContentServer, tmp_path: Path
) -> None:
    room = room_of("first", ("alice", "bob"))
    async with WsRoom(tmp_path) as hosted, asyncio.timeout(60):
        await asyncio.gather(  # neither holds anything yet: nobody waits for the other
            *(
                member(hosted.url, room, u, lock(server, "ok"), tmp_path, room_source="first")
                for u in ("alice", "bob")
            )
        )
    for user in ("alice", "bob"):
        failures = [
            e.failure.url
            for e in read_log(tmp_path / user / "room.log")
            if isinstance(e, ev.ResolvableFailed) and e.user_id == user
        ]
        assert set(failures) <= {"room:"}, failures  # the room was asked, before the mirror


async def test_with_the_room_never_a_piece_no_mirror_has_fails_without_asking_it(
    server: ContentServer, tmp_path: Path
) -> None:
    room = room_of("never", ("alice", "bob"))
    async with WsRoom(tmp_path) as hosted, asyncio.timeout(60):
        alice = asyncio.create_task(member(hosted.url, room, "alice", lock(server, "ok"), tmp_path))
        with pytest.raises(RoomIncompleteError, match="404") as failed:
            await member(
                hosted.url, room, "bob", lock(server, "missing"), tmp_path, room_source="never"
            )
        alice.cancel()
    assert "room:" not in str(failed.value)
    assert transfers(tmp_path / "bob" / "room.log") == []


async def test_a_piece_whose_holder_has_only_its_folder_comes_as_the_folder(
    server: ContentServer, tmp_path: Path
) -> None:
    game = tmp_path / "game" / "chars" / "kfm"
    with zipfile.ZipFile(io.BytesIO(KFM)) as archive:
        archive.extractall(game)  # alice has kfm unpacked in her game, not its archive
    digest, size = (
        folder_digest(game),
        sum(f.stat().st_size for f in game.rglob("*") if f.is_file()),
    )
    pinned = PinnedPiece(sha256=sha256(KFM), size=len(KFM), folder_sha256=digest, folder_size=size)
    room = signed_room("both-pins", ("alice", "bob"), {"chars/kfm": pinned})
    kfm = {
        "sha256": sha256(KFM), "size": len(KFM), "unpack": "zip", "folder_sha256": digest,
        "folder_size": size, "resolvables": [{"url": server.url("missing", "kfm.zip")}],
    }  # fmt: skip
    body = {"chars": {"mandatory": True, "engine_path": "chars/{piece}", "pieces": {"kfm": kfm}}}
    config = parse_matchlock_config(json.dumps({"collections": body}))
    async with WsRoom(tmp_path) as hosted, asyncio.timeout(60):
        _, bob = await asyncio.gather(
            member(hosted.url, room, "alice", config, tmp_path, engine_root=tmp_path / "game"),
            member(hosted.url, room, "bob", config, tmp_path),
        )
    assert folder_digest(bob["chars/kfm"]) == digest
    assert sources(tmp_path / "bob" / "room.log")["chars/kfm"] == "room:alice"
    got = [(e.form, e.outcome) for e in transfers(tmp_path / "bob" / "room.log")]
    assert got[-1] == ("folder", "verified")
    assert ("archive", "cut") in got  # asked for the archive first: alice had none to give
