"""``join_events``: a join's room events through ``async for``, its result after the loop, its
failure raised from the loop; real downloads, members on the in-memory transport."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from matchlock.app.hosting import RoomHost
from matchlock.app.roomevents import join_events
from matchlock.core import events as ev
from matchlock.core.errors import JoinRefusedError, UsageError
from matchlock.tools.testing import insecure_key
from matchlock.transport.memory import memory_connector
from tests.app.test_join import ROOM, USERS, match_lock, member
from tests.downloads.conftest import ContentServer


async def test_every_event_arrives_in_order_and_the_folders_after(
    server: ContentServer, tmp_path: Path
) -> None:
    host = RoomHost(None)
    await host.start()
    locks = match_lock(server)
    others = [asyncio.create_task(member(host, tmp_path, u, locks)) for u in USERS[1:]]
    seen: list[ev.Event] = []
    async with join_events(
        "memory://",
        room=ROOM,
        user_id=USERS[0],
        key=insecure_key(USERS[0]),
        config=locks,
        dest=tmp_path / "alice",
        connect=memory_connector(host),
        retry_delay=0.05,
        deadline=20,
    ) as events:
        with pytest.raises(UsageError):
            _ = events.folders  # not before the room has closed
        async for event in events:
            seen.append(event)
    await asyncio.gather(*others)
    await host.stop()
    assert seen[0].type == "room_opened"  # the welcome: the whole history
    assert seen[-1].type == "room_closed"
    assert set(events.folders) == {"chars/kfm", "stages/dojo"}
    assert [e.type for e in seen].count("member_goodbye") == len(USERS)


async def test_a_refused_join_raises_from_the_loop(server: ContentServer, tmp_path: Path) -> None:
    host = RoomHost(None)
    await host.start()
    async with join_events(
        "memory://",
        room=ROOM,
        user_id="alice",
        key=insecure_key("mallory"),  # not alice's key: the answer is refused
        config=match_lock(server),
        dest=tmp_path / "alice",
        connect=memory_connector(host),
        deadline=10,
    ) as events:
        with pytest.raises(JoinRefusedError) as refused:
            async for _ in events:
                pass
    await host.stop()
    assert refused.value.code == "bad-answer"


def test_on_event_is_refused_and_iterating_outside_async_with_is_said() -> None:
    with pytest.raises(UsageError):
        join_events("memory://", on_event=print)

    async def first() -> ev.Event:
        async for event in join_events("memory://"):
            return event
        raise AssertionError("no event")

    with pytest.raises(UsageError):
        asyncio.run(first())
