"""``matchlock plan``: against a real HTTP mirror on 127.0.0.1, real game and cache folders,
each piece is planned from where it really is: here (the game's folder, the cache), the first
mirror that answers its HEAD request (404s and a dead port skipped, a file of the wrong size
refused), or only the room; totals add up; ``--json`` has its documented shape."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from rich.console import Console

from matchlock.app.piece_sources import LiveSources
from matchlock.app.plan import plan_room
from matchlock.cli import main
from matchlock.cli.plan import sources_table
from matchlock.core import events as ev
from matchlock.core.config import parse_matchlock_config
from matchlock.core.room import MemberState, PieceState, RoomState
from matchlock.core.roomconfig import new_room
from matchlock.downloads.cache import Cache
from matchlock.downloads.folder_stream import folder_pin
from matchlock.tools.demo.mirror import Route
from matchlock.tools.testing import pinned, signed_room
from tests.downloads.conftest import ContentServer, piece

USERS = {"alice": "A" * 43 + "="}
RYU, DOJO, KEN = b"ryu " * 1000, b"dojo" * 250, b"ken" * 10


def game_with_kfm(root: Path) -> dict[str, Any]:
    """A game folder holding chars/kfm unpacked; its folder-only pin."""
    kfm = root / "chars" / "kfm"
    kfm.mkdir(parents=True)
    (kfm / "kfm.def").write_text("[Info]\nname = kfm\n")
    digest, size = folder_pin(kfm)
    return {"folder_sha256": digest, "folder_size": size}


def write_files(tmp_path: Path, server: ContentServer) -> tuple[Path, Path]:
    """A match-lock config and a room: kfm in the game folder, ryu from the second of its
    mirrors, dojo whose only mirror 404s, ken in the cache, zangief (folder only) nowhere here."""
    server.add("ryu", RYU)
    server.add("dojo", DOJO)
    wrong_size = tmp_path / "ryu-old.bin"
    wrong_size.write_bytes(b"old")
    ryu = piece(
        RYU,
        server.url("missing", "ryu"),
        server.down_url("ryu"),
        wrong_size.as_uri(),
        server.url("ok", "ryu"),
        server.url("ok", "ryu") + "?never-asked",
    )
    zangief = {"folder_sha256": hashlib.sha256(b"z").hexdigest(), "folder_size": 77}
    data = {
        "collections": {
            "chars": {
                "mandatory": True,
                "engine_path": "chars/{piece}",
                "pieces": {
                    "kfm": game_with_kfm(tmp_path / "game"),
                    "ryu": ryu,
                    "ken": piece(KEN, server.url("missing", "ken"), filename="ken.def"),
                    "zangief": zangief,
                },
            },
            "stages": {
                "mandatory": True,
                "pieces": {"dojo": piece(DOJO, server.url("missing", "dojo"))},
            },
        }
    }
    config_file = tmp_path / "matchlock.json"
    config_file.write_text(json.dumps(data))
    config = parse_matchlock_config(config_file.read_bytes())
    ken = config.piece("chars/ken")
    assert ken is not None
    cached = Cache(tmp_path / "cache").folder("chars/ken", ken)
    cached.mkdir(parents=True)
    (cached / "ken.def").write_bytes(KEN)
    room_file = tmp_path / "room.json"
    room_file.write_text(new_room(config, "friday", USERS).model_dump_json())
    return config_file, room_file


async def run_plan(*args: str) -> int:
    return await asyncio.to_thread(main, ["plan", *args])


async def test_each_piece_is_planned_from_where_it_really_is(
    tmp_path: Path, server: ContentServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config, room = write_files(tmp_path, server)
    common = ["--config", str(config), "--dest", str(tmp_path / "cache")]
    code = await run_plan(str(room), *common, "--engine-root", str(tmp_path / "game"), "--json")
    out = capsys.readouterr().out
    assert code == 0
    plan = json.loads(out)
    pieces = {p["piece"]: p for p in plan["pieces"]}
    assert (plan["type"], plan["room_id"], plan["room_source"]) == ("plan", "friday", "last")
    kfm, ryu, ken = pieces["chars/kfm"], pieces["chars/ryu"], pieces["chars/ken"]
    assert (kfm["source"], kfm["where"]) == ("here", "engine")
    assert kfm["folder"] == str((tmp_path / "game" / "chars" / "kfm").absolute())
    assert (ken["source"], ken["where"]) == ("here", "cache")
    assert ken["probes"] == []  # here: no mirror asked
    assert (ryu["source"], ryu["url"], ryu["bytes"]) == ("mirror", server.url("ok", "ryu"), 4000)
    problems = [probe["problem"] for probe in ryu["probes"]]
    assert problems[0] == "HTTP 404 Not Found"
    assert problems[1] is not None and problems[1].startswith("cannot connect")
    assert problems[2] is not None and "has 3 bytes; the piece has 4000" in problems[2]
    assert problems[3] is None and len(problems) == 4  # the fifth is never asked
    assert [r.route for r in server.asked("ryu")] == ["missing", "ok"]
    dojo, zangief = pieces["stages/dojo"], pieces["chars/zangief"]
    assert (dojo["source"], dojo["form"], dojo["url"]) == ("room", "archive", None)
    assert [p["problem"] for p in dojo["probes"]] == ["HTTP 404 Not Found"]
    assert (zangief["source"], zangief["form"], zangief["probes"]) == ("room", "folder", [])
    assert plan["totals"] == {
        "here": kfm["bytes"] + 30,
        "mirror": 4000,
        "room": 1000 + 77,
        "nowhere": 0,
        "total": kfm["bytes"] + 30 + 4000 + 1077,
    }
    assert set(pieces["chars/kfm"]) == {
        "piece", "source", "bytes", "folder", "where", "url", "form", "probes", "problem",
    }  # fmt: skip


async def test_without_the_room_as_a_source_a_piece_no_mirror_gives_is_nowhere(
    tmp_path: Path, server: ContentServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config, room = write_files(tmp_path, server)
    common = ["--config", str(config), "--dest", str(tmp_path / "cache")]
    assert await run_plan(str(room), *common, "--room-source", "never", "--json") == 1
    pieces = {p["piece"]: p for p in json.loads(capsys.readouterr().out)["pieces"]}
    assert pieces["stages/dojo"]["source"] == "nowhere"
    assert pieces["chars/kfm"]["source"] == "nowhere"  # no --engine-root: not here
    assert pieces["chars/ryu"]["source"] == "mirror"


async def test_with_the_room_first_the_answering_mirror_is_the_fallback(
    tmp_path: Path, server: ContentServer
) -> None:
    config_file, _ = write_files(tmp_path, server)
    config = parse_matchlock_config(config_file.read_bytes())
    room = new_room(config, "friday", USERS, room_source="first")
    plan = await plan_room(room, config, tmp_path / "cache")
    ryu = next(p for p in plan.pieces if p.piece == "chars/ryu")
    assert (plan.room_source, ryu.source, ryu.url) == ("first", "room", server.url("ok", "ryu"))


async def test_a_piece_the_config_cannot_install_is_nowhere_with_its_reason(
    tmp_path: Path, server: ContentServer
) -> None:
    config_file, _ = write_files(tmp_path, server)
    config = parse_matchlock_config(config_file.read_bytes())
    room = new_room(config, "friday", USERS)
    data = json.loads(config_file.read_text())
    data["collections"]["chars"]["pieces"]["ryu"]["size"] = 5
    del data["collections"]["stages"]
    other = parse_matchlock_config(json.dumps(data))
    plan = {p.piece: p for p in (await plan_room(room, other, tmp_path / "cache")).pieces}
    assert plan["stages/dojo"].problem == "stages/dojo is not in the match-lock config"
    assert plan["chars/ryu"].source == "nowhere"
    assert "size differs from the match-lock config's size of chars/ryu (5)" in str(
        plan["chars/ryu"].problem
    )


async def test_the_terminal_table_names_each_source_and_the_totals(
    tmp_path: Path, server: ContentServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config, room = write_files(tmp_path, server)
    args = ["--config", str(config), "--dest", str(tmp_path / "cache")]
    assert await run_plan(str(room), *args, "--engine-root", str(tmp_path / "game")) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "here: engine folder" in out and "here: cache folder" in out
    assert f"mirror {server.url('ok', 'ryu')}" in out
    assert "the room (archive)" in out and "the room (folder)" in out
    assert "4,000 from mirrors, 1,077 from the room, 0 from nowhere" in out


def test_the_live_sources_follow_this_members_events_and_the_rooms_holders() -> None:
    data = {
        "collections": {
            "chars": {
                "mandatory": True,
                "pieces": {
                    "ryu": piece(RYU, "https://a.example/ryu", "file:///r"),
                    "kfm": {"folder_sha256": "a" * 64, "folder_size": 5},
                },
            }
        }
    }
    config = parse_matchlock_config(json.dumps(data))
    room = new_room(config, "r", USERS | {"bob": "B" * 43 + "="}, allowed_schemes=["https"])
    live = LiveSources(room, config, "alice", "last")
    ryu, kfm = live.pieces["chars/ryu"], live.pieces["chars/kfm"]
    assert ryu.order == ("https://a.example/ryu", "room:")  # file: is not allowed by the room
    assert (ryu.describe(), kfm.describe()) == ("https://a.example/ryu", "the room")
    failure = ev.ResolvableFailure(index=0, url="https://a.example/ryu", reason="HTTP 404")
    live.apply(ev.ResolvableFailed(at=1, user_id="bob", piece="chars/ryu", failure=failure))
    assert ryu.describe() == "https://a.example/ryu"  # bob's event: not this member's piece
    live.apply(ev.ResolvableFailed(at=1, user_id="alice", piece="chars/ryu", failure=failure))
    assert ryu.describe() == "the room"
    liar = ev.ResolvableFailure(index=1, url="room:bob", reason="bob sent 3 bytes whose ...")
    live.apply(ev.ResolvableFailed(at=2, user_id="alice", piece="chars/ryu", failure=liar))
    assert ryu.describe() == "the room"  # the next holder is asked
    nobody = ev.ResolvableFailure(index=1, url="room:", reason="no member holds it")
    live.apply(ev.ResolvableFailed(at=2, user_id="alice", piece="chars/ryu", failure=nobody))
    assert ryu.describe() == "again: the room"  # every source failed once; retries go on
    live.apply(ev.PieceFinished(at=3, user_id="alice", piece="chars/ryu", source="room:carol"))
    live.apply(ev.PieceFinished(at=3, user_id="alice", piece="chars/kfm", source="engine"))
    assert (ryu.describe(), kfm.describe()) == ("the room: carol", "here (engine folder)")
    never = LiveSources(room, config, "alice", "never").pieces["chars/kfm"]
    assert never.describe() == "nowhere: every source failed"
    state = RoomState(
        kind="room",
        room_id="r",
        status="open",
        members={
            user: MemberState(
                status="connected",
                pieces={
                    "chars/ryu": PieceState(status="finished", done=4000, size=4000),
                    "chars/kfm": PieceState(status=kfm_status, done=0, size=5),
                },
            )
            for user, kfm_status in (("alice", "finished"), ("bob", "in_progress"))
        }
        | {
            "carol": MemberState(
                status="disconnected",
                pieces={"chars/ryu": PieceState(status="finished", done=4000, size=4000)},
            )
        },
        refusals=(),
        events=9,
    )
    assert live.holders(state, "chars/ryu") == ["bob"]  # carol is gone
    assert live.holders(state, "chars/kfm") == []
    console = Console(record=True, width=120)
    console.print(sources_table(live, state))
    text = console.export_text()
    assert "the room: carol" in text and "bob" in text and "nobody yet" in text


def test_the_join_live_table_shows_where_each_piece_comes_from() -> None:
    from matchlock.cli.join import _viewer

    room = signed_room("r", ["alice", "bob"], pinned({"chars/ryu": 4000}))
    config = parse_matchlock_config(
        json.dumps(
            {"collections": {"chars": {"pieces": {"ryu": piece(RYU, "https://a.example/r")}}}}
        )
    )
    console = Console(force_terminal=True, record=True, width=150)
    show, live = _viewer(False, console, LiveSources(room, config, "alice", "last"))
    assert live is not None
    with live:
        show(ev.RoomOpened(at=0, config=room))
        show(ev.MemberJoined(at=1, user_id="bob"))
        show(ev.PieceStarted(at=1, user_id="bob", piece="chars/ryu"))
        show(ev.PieceFinished(at=1, user_id="bob", piece="chars/ryu", source="https://a.example/r"))
    text = console.export_text()
    assert "alice: where each piece comes from" in text
    assert "│ chars/ryu │ https://a.example/r │ bob" in text


class GetOnlyMirror(ContentServer):
    """A mirror whose ``/signed/N`` answers GET only (HEAD: 403, as a URL signed for GET does),
    honouring ``Range: bytes=0-0``; ``/headless/N`` refuses every method but GET with 405."""

    def routes(self) -> dict[str, Route]:
        return {**super().routes(), "signed": self._signed, "headless": self._headless}

    async def _signed(self, request: web.Request, data: bytes) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(status=403)
        if request.headers.get("Range") == "bytes=0-0":
            headers = {"Content-Range": f"bytes 0-0/{len(data)}"}
            return web.Response(status=206, body=data[:1], headers=headers)
        return web.Response(body=data)

    async def _headless(self, request: web.Request, data: bytes) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(status=405)
        return web.Response(body=data[:-1])  # and one byte short: not the piece


async def test_a_mirror_that_refuses_head_is_asked_one_byte_with_get(tmp_path: Path) -> None:
    mirror = GetOnlyMirror()
    await mirror.start()
    try:
        mirror.add("ryu", RYU)
        urls = (mirror.url("headless", "ryu"), mirror.url("signed", "ryu"))
        data = {"collections": {"chars": {"pieces": {"ryu": piece(RYU, *urls)}}}}
        config = parse_matchlock_config(json.dumps(data))
        room = new_room(config, "r", USERS, ["chars/ryu"])
        [ryu] = (await plan_room(room, config, tmp_path / "cache")).pieces
    finally:
        await mirror.stop()
    assert (ryu.source, ryu.url) == ("mirror", urls[1])
    assert [p.problem for p in ryu.probes] == ["it announces 3999 bytes; the piece has 4000", None]
    assert [(r.route, r.range) for r in mirror.asked("ryu")] == [
        ("headless", None),
        ("headless", "bytes=0-0"),
        ("signed", None),
        ("signed", "bytes=0-0"),
    ]
