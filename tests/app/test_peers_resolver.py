"""The room's resolver against frames given by hand (the host's side played by the test, the
part a real file in a real cache): what it acks while a holder's bytes wait to be written, so a
receiver holds at most :data:`EAGER_ACK_BYTES` beyond the host's window, whatever the piece."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.config import PinnedPiece
from matchlock.core.room import Room
from matchlock.downloads.cache import Cache
from matchlock.downloads.resolvers import ResolveFailed, Staging, Wanted
from matchlock.downloads.resolvers.room import Form, RoomRequest, RoomResolver
from matchlock.downloads.resolvers.room_transfer import EAGER_ACK_BYTES
from matchlock.downloads.sink import PartFile
from matchlock.tools.testing import signed_room

CHUNK = tm.MAX_CHUNK_BYTES


async def test_bytes_are_acked_on_arrival_only_up_to_the_bound_then_as_they_are_written(
    tmp_path: Path,
) -> None:
    data = os.urandom(3 * EAGER_ACK_BYTES)
    sha = hashlib.sha256(data).hexdigest()
    room = signed_room(
        "acks", ("alice", "bob"), {"blobs/big": PinnedPiece(sha256=sha, size=len(data))}
    )
    sent: list[tm.Want | tm.Ack] = []
    resolver = RoomResolver(
        room, "bob", Room(), lambda key: ["alice"], record=lambda event: None, clock=lambda: 0.0
    )
    resolver.link_up(lambda frame: sent.append(json_message(frame)))
    cache = Cache(tmp_path)
    cache.prepare()
    failures: list[ResolveFailed] = []

    async def verified(form: Form) -> str | None:
        return None

    with ThreadPoolExecutor(2) as executor:
        async with cache.locked(sha, executor) as held:
            staging = Staging(
                PartFile(held), Wanted("blobs/big", sha, len(data)), lambda n: None, "room:"
            )
            request = RoomRequest(
                "blobs/big", (Form("archive", staging),), False, verified, failures.append
            )
            obtaining = asyncio.create_task(resolver.obtain(request))
            while not sent:
                await asyncio.sleep(0)
            assert isinstance(sent[0], tm.Want) and sent[0].offset == 0
            resolver.receive(
                tm.Sending(transfer=7, piece="blobs/big", form="archive", offset=0, holder="alice")
            )
            for offset in range(0, len(data), CHUNK):  # all of it at once, nothing written yet
                resolver.receive(pr.DataChunk(7, offset, data[offset : offset + CHUNK]))
            eager = [m.offset for m in sent if isinstance(m, tm.Ack)]
            assert eager == list(range(CHUNK, EAGER_ACK_BYTES + 1, CHUNK))  # then it stopped
            resolver.receive(tm.End(transfer=7))
            delivered = await obtaining
    acks = [m.offset for m in sent if isinstance(m, tm.Ack)]
    assert acks == sorted(acks) and acks[-1] == len(data)  # the rest as it was written
    assert delivered.holder == "alice" and failures == []


def json_message(frame: bytes) -> tm.Want | tm.Ack:
    """A frame the resolver sent, decoded as the host would."""
    message = pr.decode_client_message(frame)
    assert isinstance(message, tm.Want | tm.Ack), json.loads(frame)
    return message
