"""Pieces from room members over a real websocket room host on 127.0.0.1: a piece only one member
can download (the others' mirror answers 404) reaches them from that member, relayed by the
host; each receiver's log says from whom, the holder's log what it served."""

from __future__ import annotations

import asyncio
from pathlib import Path

from matchlock.app.hosting import RoomHost
from matchlock.store.eventlog import replay_file
from matchlock.transport.connect import listen
from tests.app.peer_rooms import lock, member, room_of, sources, transfers
from tests.app.room_content import KFM_DEF
from tests.downloads.conftest import ContentServer


async def test_a_piece_only_one_member_has_comes_from_it_over_a_websocket_host(
    server: ContentServer, tmp_path: Path
) -> None:
    room = room_of("ws-peers", ("alice", "bob"))
    host = RoomHost(tmp_path / "host")
    await host.start()
    listener = await listen("ws://127.0.0.1:0", host)
    try:
        async with asyncio.timeout(40):
            alice, bob = await asyncio.gather(
                member(listener.url, room, "alice", lock(server, "ok"), tmp_path),
                member(listener.url, room, "bob", lock(server, "missing"), tmp_path),
            )
    finally:
        await listener.close()
        await host.stop()
    assert (bob["chars/kfm"] / "kfm.def").read_bytes() == KFM_DEF
    assert len(server.asked("kfm.zip")) == 2  # alice's, and bob's 404: bob never got it there
    assert sources(tmp_path / "bob" / "room.log")["chars/kfm"] == "room:alice"
    received = transfers(tmp_path / "bob" / "room.log")
    assert [(e.type, e.holder, e.outcome) for e in received] == [  # type: ignore[union-attr]
        ("transfer_received", "alice", "verified")
    ]
    served = transfers(tmp_path / "alice" / "room.log")
    assert [(e.type, e.outcome) for e in served] == [("transfer_served", "sent")]
    final = replay_file(tmp_path / "host" / "ws-peers.log").state
    assert final.status == "closed"
    assert final.members["bob"].pieces["chars/kfm"].source == "room:alice"
    assert alice.keys() == bob.keys()
