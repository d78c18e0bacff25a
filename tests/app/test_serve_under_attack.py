"""A real ``matchlock serve`` process under attack while a real room completes on it.

Over the websocket and the direct TCP transports, seeded attackers speak docs/protocol.md badly
on many connections at once: garbage and binary frames, frames over the limit, half lines,
silence, hellos with unexpected users, tampered or unsigned configs, wrong versions and types,
duplicate keys, answers with forged signatures, late answers for members who have since joined
or left, reports and goodbyes from strangers. Meanwhile two members join and complete with real
downloads. Then: the host never died and printed no traceback; both members finished with
their folders; the room's log replays to a closed room with both goodbyes; and nothing in it
comes from a peer that never proved who it was."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import signal
from pathlib import Path

import pytest
import websockets

from matchlock.app.joining import join
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol
from matchlock.core.config import PinnedPiece, RoomConfig
from matchlock.store.eventlog import replay_file
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport.connect import open_connection
from tests.app.room_content import DOJO, KFM, content
from tests.downloads.conftest import ContentServer, config, sha256
from tests.transport.test_serve import start_serve

USERS = ("alice", "bob")
ATTACKERS = 24


def room_config() -> RoomConfig:
    pinned = {
        "chars/kfm": PinnedPiece(sha256=sha256(KFM), size=len(KFM)),
        "stages/dojo": PinnedPiece(sha256=sha256(DOJO), size=len(DOJO)),
    }
    return signed_room("attacked", USERS, pinned)


def hostile_frames(rng: random.Random, room: RoomConfig) -> list[bytes]:
    """What one attacker sends, in order (each a frame; the transport adds its framing)."""
    hello = json.loads(pr.encode(pr.Hello(protocol=1, room=room, user_id="alice")))
    unsigned = {**hello, "room": {**hello["room"], "signatures": {}}}
    tampered = {**hello, "room": {**hello["room"], "room_id": "attacked"}}
    tampered["room"]["restrictions"] = {**tampered["room"]["restrictions"], "max_pieces": 99}
    forged = base64.b64encode(insecure_key("mallory").sign(b"x" * 40)).decode()
    choices = [
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))),
        b"\xff\xfe not utf-8 \x80",
        json.dumps({**hello, "user_id": "mallory"}).encode(),
        json.dumps({**hello, "protocol": "1"}).encode(),
        json.dumps({**hello, "protocol": True}).encode(),
        json.dumps({**hello, "since": 10**6}).encode(),
        json.dumps(unsigned).encode(),
        json.dumps(tampered).encode(),
        b'{"type":"hello","user_id":"alice","user_id":"bob"}',
        b'{"type":"hello","protocol":1,"room":{},"user_id":"alice","since":NaN}',
        json.dumps({"type": "answer", "signature": forged}).encode(),
        b'{"type":"report","event":{"type":"piece_finished","user_id":"alice",'
        b'"piece":"chars/kfm","source":"\x1b[31mevil","at":0,"v":1}}',
        b'{"type":"goodbye"}',
        b"[" * 5000 + b"]" * 5000,
        b"{" + b" " * (pr.MAX_MESSAGE_BYTES + 10) + b"}",
    ]
    first = json.dumps(hello).encode() if rng.random() < 0.5 else rng.choice(choices)
    return [first, *rng.choices(choices, k=rng.randrange(1, 6))]


async def attack_ws(url: str, frames: list[bytes], rng: random.Random) -> None:
    with contextlib.suppress(Exception):
        async with websockets.connect(url, max_size=None, open_timeout=5) as socket:
            for frame in frames:
                if rng.random() < 0.2:
                    await socket.send(frame)  # a binary frame
                else:
                    await socket.send(frame.decode("utf-8", "replace"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(socket.recv(), 0.05)
            if rng.random() < 0.3:
                await asyncio.sleep(1.0)  # linger, saying nothing


async def attack_tcp(url: str, frames: list[bytes], rng: random.Random) -> None:
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    with contextlib.suppress(Exception):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for frame in frames:
                line = frame.replace(b"\n", b" ")
                cut = rng.random() < 0.15
                writer.write(line[: len(line) // 2] if cut else line + b"\n")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(65536), 0.05)
                if cut:
                    await asyncio.sleep(1.0)  # half a line, then silence
                    break
        finally:
            writer.close()


async def late_answer(url: str, room: RoomConfig) -> None:
    """Challenged as alice before she joins; answers correctly once she has (or has left):
    the host must refuse or welcome read-only, never crash the handler."""
    client = ClientProtocol(room, "alice", insecure_key("alice"))
    with contextlib.suppress(Exception):
        conn = await open_connection(url)
        conn.send_nowait(client.hello())
        answer = client.receive(await conn.recv()).sends
        await asyncio.sleep(2.0)
        for frame in answer:
            conn.send_nowait(frame)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.recv(), 2.0)
        await conn.close()


@pytest.mark.parametrize("transport", ["ws", "tcp"])
async def test_a_room_completes_on_a_host_under_attack(
    server: ContentServer, tmp_path: Path, transport: str
) -> None:
    room = room_config()
    serve, url = await start_serve(
        "--listen", "127.0.0.1:0", "--log-dir", str(tmp_path / "host"), "--transport", transport
    )
    rng = random.Random(f"attack-{transport}")
    attack = attack_ws if transport == "ws" else attack_tcp
    try:
        attackers = [
            asyncio.create_task(attack(url, hostile_frames(rng, room), random.Random(i)))
            for i in range(ATTACKERS)
        ]
        attackers.append(asyncio.create_task(late_answer(url, room)))
        await asyncio.sleep(0.3)  # the attack is under way before the members come
        async with asyncio.timeout(40):
            results = await asyncio.gather(
                *(
                    join(
                        url,
                        room=room,
                        user_id=user,
                        key=insecure_key(user),
                        config=config(content(server, ("ok",))),
                        dest=tmp_path / user,
                        retry_delay=0.1,
                        deadline=35,
                    )
                    for user in USERS
                )
            )
            await asyncio.gather(*attackers)
        assert serve.returncode is None, "the host died"
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err = await serve.communicate()
    assert "Traceback" not in err.decode(), err.decode()[-3000:]
    assert all(set(r) == {"chars/kfm", "stages/dojo"} for r in results)
    final = replay_file(tmp_path / "host" / "attacked.log").state
    assert final.status == "closed"
    assert {m.status for m in final.members.values()} == {"goodbye"}
    assert final.refusals == (), final.refusals  # only strangers misbehaved: none recorded
