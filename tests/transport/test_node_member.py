"""A member written in Node from docs/protocol.md alone gets its pieces from a Python member over
a real TCP room host on 127.0.0.1: the version 2 hello, the transfer messages and the binary data
frames (0x00, a u32 length, the frame) are what the docs say, a piece of 6 MiB (more than a
window) included."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from pathlib import Path

from matchlock.app.hosting import RoomHost
from matchlock.core import events as ev
from matchlock.core.config import PinnedPiece
from matchlock.store.eventlog import read_events
from matchlock.tools.testing import signed_room
from matchlock.transport.connect import listen
from tests.app.peer_rooms import member
from tests.downloads.conftest import ContentServer, config, piece, sha256

NODE_MEMBER = Path(__file__).with_name("node_member.mjs")


async def test_a_node_member_written_from_the_docs_gets_pieces_from_a_peer(
    server: ContentServer, tmp_path: Path
) -> None:
    node = shutil.which("node")
    assert node is not None, "this test needs Node.js (apt-get install nodejs)"
    big, small = os.urandom(6 << 20), b"a small piece"
    server.add("big.bin", big)
    server.add("small.bin", small)
    pieces = {
        "big": piece(big, server.url("ok", "big.bin")),
        "small": piece(small, server.url("ok", "small.bin")),
    }
    pinned = {
        f"blobs/{name}": PinnedPiece(sha256=sha256(data), size=len(data))
        for name, data in (("big", big), ("small", small))
    }
    room = signed_room("node-room", ["alice", "bob"], pinned)
    (tmp_path / "room.json").write_text(room.model_dump_json(exclude_none=True))
    seed = hashlib.sha256(b"matchlock-test:bob").hexdigest()  # insecure_key("bob")
    host = RoomHost(tmp_path / "host")
    await host.start()
    listener = await listen("tcp://127.0.0.1:0", host)
    address, port = listener.url.removeprefix("tcp://").rsplit(":", 1)
    bob = await asyncio.create_subprocess_exec(
        node, str(NODE_MEMBER), address, port, str(tmp_path / "room.json"), "bob", seed,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            lock = config({"blobs": {"mandatory": True, "pieces": pieces}})
            await member(listener.url, room, "alice", lock, tmp_path)
            _, err = await bob.communicate()
    finally:
        if bob.returncode is None:
            bob.kill()
            await bob.wait()
        await listener.close()
        await host.stop()
    assert bob.returncode == 0, err.decode()
    events = read_events(tmp_path / "host" / "node-room.log").events
    finished = {
        e.piece: e.source for e in events if isinstance(e, ev.PieceFinished) and e.user_id == "bob"
    }
    assert finished == {"blobs/big": "room:alice", "blobs/small": "room:alice"}
    assert isinstance(events[-1], ev.RoomClosed)
