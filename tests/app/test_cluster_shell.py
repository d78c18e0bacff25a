"""The cluster node's shell (:class:`~matchlock.app.cluster.ClusterHost`) in this process, on a
real ``nats-server -js``, where a race between its own tasks is made to happen every time, and
what a refused append at stop does."""

from __future__ import annotations

import pytest

from matchlock.app.cluster import ClusterHost
from matchlock.store.eventlog import EventLog
from matchlock.store.nats import NatsRepository, NatsStore
from tests.core.host_peers import CONFIG, Net
from tests.store.nats_server import (
    NatsServer,
    nats_server_fixture,  # noqa: F401 (the fixture nats_server)
)


async def test_a_room_opened_here_while_it_was_loading_is_not_loaded_over_it(
    nats_server: NatsServer,
) -> None:
    """A member's hello found no log of its room, so the node let it open the room; meanwhile
    another node opened it in the stream, and a second hello's load read that log: the load
    must leave the room this node holds (its first append conflicts and is rebased), not fold
    another room_opened into it."""
    other, mine = NatsRepository(nats_server.url), NatsRepository(nats_server.url)
    node = ClusterHost(mine)
    try:
        elsewhere = Net()
        elsewhere.member("bob")
        log = EventLog.new(other.create(CONFIG.room_id), f"room/{CONFIG.room_id}")
        await log.append(*elsewhere.recorded)
        here = Net(node.core)
        here.member("alice")  # opened here, in memory: not appended yet
        await node._load(CONFIG.room_id)  # the second hello's load
        hosted = node.core.rooms[CONFIG.room_id]
        assert [e.type for e in hosted.history] == ["room_opened", "member_joined"]
        assert hosted.room.members["alice"].status == "connected"
    finally:
        await other.close()
        await mine.close()


async def test_lines_the_stream_refuses_at_stop_are_said_not_raised(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    other, mine = NatsRepository(nats_server.url), NatsRepository(nats_server.url)
    node = ClusterHost(mine)
    try:
        await node.start()
        elsewhere = Net()
        elsewhere.member("bob")
        log = EventLog.new(NatsStore(mine, CONFIG.room_id, 0), f"room/{CONFIG.room_id}")
        log.buffer(*elsewhere.recorded)  # buffered here, never acknowledged: nobody heard it
        node.logs[CONFIG.room_id] = log
        await other.create(CONFIG.room_id).append([b"another node's header\n"], durable=True)
        await node.stop()
        assert "lines left unwritten at stop" in caplog.text
    finally:
        await other.close()
        await mine.close()
