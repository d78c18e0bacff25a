"""Several ``matchlock serve --store nats://...`` nodes sharing rooms, with real parts: a real
``nats-server -js``, real node processes, real members downloading real pieces. A room whose
members are split across two nodes completes, every member hearing the same events in the
same order; two nodes racing to append to one room never fork it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from matchlock.store.eventlog import fold_events
from tests.app.cluster_nodes import (
    Room,
    all_there,
    burst,
    check_room,
    joined,
    start_nodes,
    stream_events,
)
from tests.downloads.conftest import ContentServer
from tests.store.nats_server import (
    NatsServer,
    nats_server_fixture,  # noqa: F401 (the fixture nats_server)
)


async def test_a_room_split_across_two_nodes_completes(
    nats_server: NatsServer, server: ContentServer, tmp_path: Path
) -> None:
    nodes = await start_nodes(nats_server.url, 2, tmp_path)
    room = Room("split", ("alice", "bob", "carol", "dave"), server, tmp_path)
    try:
        async with asyncio.timeout(60):
            found = await asyncio.gather(
                *(room.member(user, nodes[n % 2].url) for n, user in enumerate(room.users))
            )
    finally:
        codes = [await node.stop() for node in nodes]
    assert codes == [0, 0], [node.stderr() for node in nodes]
    results = dict(zip(room.users, found, strict=True))
    events = await check_room(nats_server.url, room, results)
    joined = [e.user_id for e in events if e.type == "member_joined"]
    assert sorted(joined) == sorted(room.users)


async def test_two_nodes_racing_to_append_to_one_room_never_fork_it(
    nats_server: NatsServer, server: ContentServer, tmp_path: Path
) -> None:
    """alice on one node and bob on the other report 300 steps each at once: the nodes' appends
    collide (the stream refuses the later one, which re-reads, rebases and appends again) until
    some did; every step lands once, in its member's order, and both heard the same log."""
    nodes = await start_nodes(nats_server.url, 2, tmp_path)
    users = ("alice", "bob")
    pairs = list(zip(nodes, users, strict=True))
    try:
        for round_ in range(20):
            room = Room(f"race{round_}", users, server, tmp_path)
            async with asyncio.timeout(60):
                members = [await joined(room, node.url, user) for node, user in pairs]
                await asyncio.gather(*(all_there(*member) for member in members))
                heard = await asyncio.gather(*(burst(*member, 300) for member in members))
            events = await stream_events(nats_server.url, room.room_id)
            for (member, _), got in zip(members, heard, strict=True):
                user, seen = member.user_id, member.seen
                assert got == events[seen - len(got) : seen], f"{user} heard otherwise"
                steps = [e.done for e in events if e.type == "piece_progress" and e.user_id == user]
                assert steps == list(range(1, 301)), f"{user}'s reports, as recorded: {steps}"
            fold_events(events, room.room_id)
            if any("another node appended first" in node.stderr() for node in nodes):
                break
        else:
            raise AssertionError("20 rounds and the nodes' appends never collided")
    finally:
        for node in nodes:
            await node.stop()
