"""A cluster losing a part mid-room, with real parts: real ``nats-server -js`` processes, real
``matchlock serve --store`` nodes, real members (each given every node's URL, tried in turn)
downloading real pieces, one of them slowly so that the room is under way when the part dies.

- A node SIGKILLed mid-room: its members move to the other node and finish there, from what
  they hold; every event any member heard is in the stream, in its order.
- A NATS server of a 3-server cluster SIGKILLed mid-room, the stream on 3 replicas: the room
  finishes (nodes that were connected to it drop their members, who join again).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from matchlock.store.nats import NatsRepository
from tests.app.cluster_nodes import Room, check_room, start_nodes
from tests.downloads.conftest import ContentServer
from tests.store.nats_server import (
    NatsServer,
    nats_cluster_fixture,  # noqa: F401 (the fixture nats_cluster)
    nats_server_fixture,  # noqa: F401 (the fixture nats_server)
)

USERS = ("alice", "bob", "carol", "dave")


async def test_a_node_killed_mid_room_and_its_members_finish_on_the_other(
    nats_server: NatsServer, server: ContentServer, tmp_path: Path
) -> None:
    nodes = await start_nodes(nats_server.url, 2, tmp_path)
    room = Room("failover", USERS, server, tmp_path, slow=True)
    doomed, other = nodes
    try:
        async with asyncio.timeout(90):
            members = [  # alice and carol start on the doomed node, bob and dave on the other
                asyncio.create_task(room.member(user, [first.url, second.url]))
                for user, (first, second) in zip(
                    USERS, [(doomed, other), (other, doomed)] * 2, strict=True
                )
            ]
            await room.reached(nats_server.url, "piece_progress", ("alice", "carol"))
            await doomed.kill()
            found = await asyncio.gather(*members)
    finally:
        for node in nodes:
            await node.stop()
    events = await check_room(nats_server.url, room, dict(zip(USERS, found, strict=True)))
    moved = [e.user_id for e in events if e.type == "member_disconnected"]
    assert {"alice", "carol"} <= set(moved), moved  # recorded by the node they moved to


async def test_a_nats_server_killed_mid_room_with_replicas_3_and_the_room_finishes(
    nats_cluster: list[NatsServer], server: ContentServer, tmp_path: Path
) -> None:
    store = ",".join(nats.url for nats in nats_cluster)
    maker = NatsRepository(store, replicas=3)  # the stream, made on 3 replicas before any node
    try:
        assert await maker.ids() == []
    finally:
        await maker.close()
    nodes = await start_nodes(store, 2, tmp_path)
    room = Room("replicated", USERS, server, tmp_path, slow=True)
    urls = [node.url for node in nodes]
    try:
        async with asyncio.timeout(120):
            members = [
                asyncio.create_task(room.member(user, urls[n % 2 :] + urls[: n % 2], deadline=110))
                for n, user in enumerate(USERS)
            ]
            await room.reached(store, "piece_progress", USERS)
            nats_cluster[0].process.kill()  # SIGKILL, mid-room
            nats_cluster[0].process.wait()
            found = await asyncio.gather(*members)
    finally:
        codes = [await node.stop() for node in nodes]
    assert codes == [0, 0], [node.stderr() for node in nodes]
    survivor = nats_cluster[1].url
    await check_room(survivor, room, dict(zip(USERS, found, strict=True)))
