"""What a room host does when sending to one connection fails in a way no transport should.

Found by an outside tester: on uvloop, a direct TCP connection reset at once after its hello
made its transport raise ``ValueError`` as the host named it in an error, which killed the
host's one sender, silently: the process stayed up and never sent another frame to anyone.
The transports now name a connection by the address read as it was made
(tests/transport/test_reset_peers.py); and whatever one connection's send raises, only that
connection is closed, while the host's sender, should it ever end on an error, stops the host
loudly (:class:`~matchlock.core.errors.HostFailedError`) instead of going on deaf.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from matchlock.app.hosting import RoomHost
from matchlock.core.client import ClientProtocol
from matchlock.core.errors import HostFailedError
from matchlock.tools.testing import insecure_key, pinned, signed_room
from matchlock.transport.memory import MemoryConnection, memory_pair

_tasks: set[asyncio.Task[None]] = set()
ROOM = signed_room("sends", ["ann", "ben"], pinned({"chars/kfm": 10}))


class BrokenSend(MemoryConnection):
    """A connection whose transport raises on send once ``broken``, as uvloop's did."""

    broken = False

    def send_nowait(self, frame: bytes) -> None:
        if self.broken:
            raise ValueError("negative file descriptor")
        super().send_nowait(frame)


async def joined(
    host: RoomHost, user: str, kind: type[MemoryConnection] = MemoryConnection
) -> tuple[ClientProtocol, MemoryConnection, MemoryConnection]:
    client, _ = memory_pair()
    served = kind(client._outbox, client._inbox)  # the host's end, of the given kind
    _tasks.add(asyncio.create_task(host.handle(served)))
    member = ClientProtocol(ROOM, user, insecure_key(user))
    client.send_nowait(member.hello())
    async with asyncio.timeout(5):
        while member.phase != "joined":
            for frame in member.receive(await client.recv()).sends:
                client.send_nowait(frame)
    return member, client, served


async def test_a_send_that_raises_closes_that_connection_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = RoomHost(tmp_path)
    await host.start()
    _, _, ann_served = await joined(host, "ann", BrokenSend)
    assert isinstance(ann_served, BrokenSend)
    ann_served.broken = True
    with caplog.at_level(logging.ERROR, "matchlock.app.hosting"):
        ben, ben_end, _ = await joined(host, "ben")  # telling ann of ben raises
        async with asyncio.timeout(5):
            while not ann_served.closed:
                await asyncio.sleep(0.01)
    assert "cannot send to" in caplog.text and "negative file descriptor" in caplog.text
    async with asyncio.timeout(5):  # the host goes on: ben hears that ann is gone
        while ben.room.members["ann"].status == "connected":
            for frame in ben.receive(await ben_end.recv()).sends:
                ben_end.send_nowait(frame)
    assert host.failure is None and ann_served.closed
    await host.stop()


async def test_a_sender_that_ends_on_an_error_stops_the_host_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = RoomHost(tmp_path)
    await host.start()

    def broken(out: object) -> None:
        raise RuntimeError("a bug in the sender")

    host._send = broken  # type: ignore[method-assign]  # a step of the sender's own fails
    with caplog.at_level(logging.ERROR, "matchlock.app.hosting"):
        await hello_only(host, "ann")  # the host's challenge is the first frame it sends
        async with asyncio.timeout(5):
            await host._failed.wait()
    assert isinstance(host.failure, HostFailedError)
    assert "failed while sending (RuntimeError: a bug in the sender)" in str(host.failure)
    assert "failed while sending" in caplog.text
    with pytest.raises(HostFailedError):
        await host.unless_failed(asyncio.sleep(5))
    await host.stop()


async def hello_only(host: RoomHost, user: str) -> None:
    client, served = memory_pair()
    _tasks.add(asyncio.create_task(host.handle(served)))
    member = ClientProtocol(ROOM, user, insecure_key(user))
    client.send_nowait(member.hello())
