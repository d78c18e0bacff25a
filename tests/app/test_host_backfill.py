"""A room host holds only the last events of each room; a member joining over a real
websocket, in a room whose history is longer, is welcomed with every event, read back from
the room's log file (before and after a restart), and the host's memory holds only the tail."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from matchlock.app.hosting import RoomHost
from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol
from matchlock.core.hosted import HELD_EVENTS
from matchlock.store.eventlog import read_events
from matchlock.tools.testing import insecure_key, pinned, signed_room
from matchlock.transport import Connection, ConnectionClosed
from matchlock.transport.base import Listener
from matchlock.transport.connect import listen, open_connection

ROOM = signed_room("long", ["ann", "ben", "cid"], pinned({"chars/kfm": 1 << 30}))
REPORTS = 3 * HELD_EVENTS


async def join(conn: Connection, user: str) -> tuple[ClientProtocol, list[ev.Event]]:
    """Join ``ROOM`` as ``user`` on ``conn``, up to the welcome; the events it brought."""
    client = ClientProtocol(ROOM, user, insecure_key(user))
    conn.send_nowait(client.hello())
    conn.send_nowait(client.receive(await conn.recv()).sends[0])
    welcome = client.receive(await conn.recv())
    assert welcome.joined
    return client, welcome.events


async def report_many(conn: Connection, client: ClientProtocol, user: str) -> None:
    """Start the piece and report progress ``REPORTS`` times, reading every relay back."""
    events: list[pr.ReportEvent] = [ev.PieceStarted(at=0, user_id=user, piece="chars/kfm")]
    events += [
        ev.PieceProgress(at=0, user_id=user, piece="chars/kfm", done=done)
        for done in range(1, REPORTS + 1)
    ]
    for event in events:
        conn.send_nowait(pr.encode(pr.Report(event=event)))
    while client.room.events < 2 + len(events):  # opened, joined, then these
        client.receive(await conn.recv())


async def a_long_room(tmp_path: Path) -> tuple[RoomHost, Listener, ClientProtocol]:
    """A host with its logs in ``tmp_path``, listening on a websocket, and ann in its room,
    having reported :data:`REPORTS` times (more than the host holds)."""
    host = RoomHost(tmp_path)
    await host.start()
    listener = await listen("ws://127.0.0.1:0", host)
    ann_conn = await open_connection(listener.url)
    ann, _ = await join(ann_conn, "ann")
    await report_many(ann_conn, ann, "ann")
    return host, listener, ann


async def test_a_welcome_older_than_the_held_events_is_read_from_the_log(tmp_path: Path) -> None:
    host, listener, ann = await a_long_room(tmp_path)
    history = host.core.rooms["long"].history
    assert len(history) > 2 * HELD_EVENTS
    assert history.start > 0  # the oldest are only in the log
    ben_conn = await open_connection(listener.url)
    ben, welcomed = await join(ben_conn, "ben")
    assert len(welcomed) == ann.room.events  # every event so far (its joining comes next)
    assert welcomed == read_events(tmp_path / "long.log").events[: len(welcomed)]
    assert ben.room.snapshot() == ann.room.snapshot()
    await listener.close()
    await host.stop()

    restarted = RoomHost(tmp_path)  # rebuilt from the log, holding its tail only again
    await restarted.start()
    assert restarted.core.rooms["long"].history.start > 0
    listener = await listen("ws://127.0.0.1:0", restarted)
    cid_conn = await open_connection(listener.url)
    _, welcomed = await join(cid_conn, "cid")
    logged = read_events(tmp_path / "long.log").events
    assert welcomed == logged[: len(welcomed)]
    assert len(welcomed) == len(restarted.core.rooms["long"].history) - 1
    await listener.close()
    await restarted.stop()


async def test_a_welcome_whose_log_cannot_be_read_closes_only_that_member(tmp_path: Path) -> None:
    """The room's log cannot be read for a while (a real ``IsADirectoryError``: the file moved
    aside, a folder at its name): the member who needs its older events is closed, the host
    and the room go on, and once the file is back the member is welcomed with every event."""
    host, listener, ann = await a_long_room(tmp_path)
    log, aside = tmp_path / "long.log", tmp_path / "aside"
    log.rename(aside)  # the host's descriptor still writes the file
    log.mkdir()
    ben_conn = await open_connection(listener.url)
    client = ClientProtocol(ROOM, "ben", insecure_key("ben"))
    ben_conn.send_nowait(client.hello())
    ben_conn.send_nowait(client.receive(await ben_conn.recv()).sends[0])
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(5):  # at once, not at the handshake timeout (10 s)
            await ben_conn.recv()
    log.rmdir()
    aside.rename(log)
    ben_conn = await open_connection(listener.url)
    ben, welcomed = await join(ben_conn, "ben")
    assert welcomed == read_events(log).events[: len(welcomed)]
    assert ben.room.snapshot() == ann.room.snapshot()
    assert host.failure is None
    await listener.close()
    await host.stop()
