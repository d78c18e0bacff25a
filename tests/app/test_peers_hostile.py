"""Hostile peers in a real websocket room on 127.0.0.1: a hand-written member (the real client
core, a real connection, no serving code of ours) that claims kfm and answers every ``serve``
with bytes of the right length that are not kfm; requests the host must refuse (a piece
outside the room, an offset past the form's bound); and a hand-written requester that cancels a
transfer halfway, which the real holder stops and records; a hand-written holder that sends half
of kfm and goes silent, which the receiver cancels, resuming from the half it holds with the
next holder."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path

from matchlock.core import events as ev
from matchlock.core import transfer_messages as tm
from matchlock.core.client import ClientProtocol
from matchlock.core.config import PinnedPiece
from matchlock.downloads.resolvers import FetchPolicy
from matchlock.store.eventlog import read_events
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport import Connection
from matchlock.transport.connect import open_connection
from tests.app.peer_rooms import PIECES, WsRoom, lock, member, room_of, sources, transfers
from tests.app.room_content import KFM, KFM_DEF
from tests.downloads.conftest import ContentServer, config, piece, sha256


async def fake_holder(url: str, room_users: tuple[str, ...], user: str, *, lie: bool) -> None:
    """``user`` joins and claims every piece finished; asked for kfm, it sends garbage of kfm's
    size and ``end`` (``lie``), or kfm's first half and then nothing, staying connected."""
    room = room_of("hostile", room_users)
    client = ClientProtocol(room, user, insecure_key(user), serve=True)
    conn = await open_connection(url)
    conn.send_nowait(client.hello())
    try:
        while True:
            out = client.receive(await conn.recv())
            for frame in out.sends:
                conn.send_nowait(frame)
            if out.joined:
                for key in PIECES:
                    for event in (
                        ev.PieceStarted(at=0.0, user_id=user, piece=key),
                        ev.PieceFinished(at=0.0, user_id=user, piece=key, source="cache"),
                    ):
                        conn.send_nowait(client.report(event))
            for message in out.transfers:
                if isinstance(message, tm.Serve) and lie:
                    conn.send_nowait(client.data(message.transfer, 0, bytes(len(KFM))))
                    conn.send_nowait(client.end(message.transfer))
                elif isinstance(message, tm.Serve):
                    conn.send_nowait(client.data(message.transfer, 0, KFM[: len(KFM) // 2]))
            if out.closed:
                return
    finally:
        await conn.close()


async def test_a_holder_that_sends_wrong_bytes_is_named_and_the_next_holder_serves(
    server: ContentServer, tmp_path: Path
) -> None:
    users = ("aaron", "bob", "carol")  # aaron sorts first: the host asks him first
    room = room_of("hostile", users)
    async with WsRoom(tmp_path) as hosted, asyncio.timeout(60):
        lying = asyncio.create_task(fake_holder(hosted.url, users, "aaron", lie=True))
        carol = asyncio.create_task(member(hosted.url, room, "carol", lock(server, "ok"), tmp_path))
        while not any(
            isinstance(e, ev.PieceFinished) and e.user_id == "carol" and e.piece == "chars/kfm"
            for e in _events(tmp_path / "carol" / "room.log")
        ):
            await asyncio.sleep(0.02)
        bob = await member(hosted.url, room, "bob", lock(server, "missing"), tmp_path)
        await carol
        with contextlib.suppress(Exception):
            await lying
    assert (bob["chars/kfm"] / "kfm.def").read_bytes() == KFM_DEF
    assert sources(tmp_path / "bob" / "room.log")["chars/kfm"] == "room:carol"
    failures = [
        e.failure
        for e in _events(tmp_path / "bob" / "room.log")
        if isinstance(e, ev.ResolvableFailed) and e.user_id == "bob"
    ]
    lie = next(f for f in failures if f.url == "room:aaron")
    assert f"aaron sent {len(KFM)} bytes whose sha256 is " in lie.reason
    assert "not the pinned" in lie.reason
    outcomes = [(e.holder, e.outcome) for e in transfers(tmp_path / "bob" / "room.log")]  # type: ignore[union-attr]
    assert outcomes == [("aaron", "corrupt"), ("carol", "verified")]


async def test_a_holder_that_stalls_is_cancelled_and_the_piece_resumes_from_another(
    server: ContentServer, tmp_path: Path
) -> None:
    users = ("aaron", "bob", "carol")  # aaron sorts first: the host asks him first
    room = room_of("hostile", users)
    async with WsRoom(tmp_path) as hosted, asyncio.timeout(60):
        stalling = asyncio.create_task(fake_holder(hosted.url, users, "aaron", lie=False))
        carol = asyncio.create_task(member(hosted.url, room, "carol", lock(server, "ok"), tmp_path))
        while not any(
            isinstance(e, ev.PieceFinished) and e.user_id == "carol" and e.piece == "chars/kfm"
            for e in _events(tmp_path / "carol" / "room.log")
        ):
            await asyncio.sleep(0.02)
        quick = FetchPolicy(read_timeout=1.0)
        bob = await member(hosted.url, room, "bob", lock(server, "missing"), tmp_path, policy=quick)
        await carol
        stalling.cancel()
    assert (bob["chars/kfm"] / "kfm.def").read_bytes() == KFM_DEF
    received = [
        (e.holder, e.offset, e.bytes, e.outcome)
        for e in transfers(tmp_path / "bob" / "room.log")
        if isinstance(e, ev.TransferReceived) and e.piece == "chars/kfm"
    ]
    half = len(KFM) // 2
    assert received == [("aaron", 0, half, "stalled"), ("carol", half, len(KFM) - half, "verified")]
    assert sources(tmp_path / "bob" / "room.log")["chars/kfm"] == "room:carol"


def _events(path: Path) -> list[ev.Event]:
    return read_events(path).events if path.exists() else []


async def test_requests_outside_the_room_or_past_the_bound_are_refused(tmp_path: Path) -> None:
    users = ("alice", "bob")
    room = room_of("hostile", users)
    async with WsRoom(tmp_path) as hosted, asyncio.timeout(30):
        client = ClientProtocol(room, "bob", insecure_key("bob"))
        conn = await open_connection(hosted.url)
        conn.send_nowait(client.hello())
        refused: list[str] = []
        try:
            while len(refused) < 2:
                out = client.receive(await conn.recv())
                for frame in out.sends:
                    conn.send_nowait(frame)
                if out.joined:
                    conn.send_nowait(client.want("chars/ryu", "archive"))
                    conn.send_nowait(client.want("chars/kfm", "archive", offset=len(KFM) + 1))
                if out.refused is not None:
                    assert not out.refused.fatal
                    refused.append(out.refused.code)
        finally:
            await conn.close()
    assert refused == ["not-in-room", "out-of-range"]


async def test_a_requester_that_cancels_stops_the_holder_which_records_it(
    server: ContentServer, tmp_path: Path
) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB, served at 128 KiB/s: the cancel arrives mid-way
    server.add("big.bin", big)
    pinned = {"blobs/big": PinnedPiece(sha256=sha256(big), size=len(big))}
    room = signed_room("cancel", ("alice", "bob"), pinned)
    pieces = {"big": piece(big, server.url("ok", "big.bin"))}
    lock = config({"blobs": {"mandatory": True, "pieces": pieces}})
    async with WsRoom(tmp_path) as hosted, asyncio.timeout(60):
        alice = asyncio.create_task(
            member(hosted.url, room, "alice", lock, tmp_path, upload_limit=128 * 1024)
        )
        client = ClientProtocol(room, "bob", insecure_key("bob"))
        conn = await open_connection(hosted.url)
        conn.send_nowait(client.hello())
        try:
            await cancel_the_first_transfer(client, conn)
            started = ev.PieceStarted(at=0.0, user_id="bob", piece="blobs/big")
            conn.send_nowait(client.report(started))
            for done in itertools.count(1):  # each report is a room event: alice's log is
                if _served(tmp_path / "alice" / "room.log"):  # written with the next one
                    break
                report = ev.PieceProgress(at=0.0, user_id="bob", piece="blobs/big", done=done)
                conn.send_nowait(client.report(report))
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
            alice.cancel()
    (served,) = _served(tmp_path / "alice" / "room.log")
    assert served.outcome == "cancelled" and "bob cancelled it: changed my mind" in served.reason
    assert served.bytes < len(big)  # stopped before the end


async def cancel_the_first_transfer(client: ClientProtocol, conn: Connection) -> None:
    """Join, ask for the big piece once a member holds it, cancel as soon as it is sent."""
    asked = False
    while True:
        out = client.receive(await conn.recv())
        for frame in out.sends:
            conn.send_nowait(frame)
        if client.holders("blobs/big") and not asked:
            conn.send_nowait(client.want("blobs/big", "archive"))
            asked = True
        for message in out.transfers:
            if isinstance(message, tm.Sending):
                conn.send_nowait(client.cancel(message.transfer, "changed my mind"))
                return


def _served(log: Path) -> list[ev.TransferServed]:
    return [e for e in _events(log) if isinstance(e, ev.TransferServed)]
