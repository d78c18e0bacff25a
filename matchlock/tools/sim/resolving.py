"""Members of a simulated room of peers that ask the room with the member shell's own room
resolver, :class:`~matchlock.downloads.resolvers.room.RoomResolver` (what ``join()`` gives the
download engine as ``room:``): :class:`ResolverMember`.

A :class:`ResolverMember` is a :class:`~matchlock.tools.sim.peers.PeerMember` (the same client
core, connections and serving) whose requests are the resolver's: for each piece it lacks it
calls :meth:`RoomResolver.obtain` with the piece's archive form, staged in a :class:`MemoryPart`
(the simulation touches no file), verified against the pinned sha256 when the holder says
``end``, each holder's failure reported as a ``resolvable_failed`` naming it, and the piece
reported finished from ``room:<holder>`` once delivered. The resolver hears what the shell
tells it (``link_up`` on each welcome, ``link_down`` when the connection is lost,
``room_changed`` with each room event, every transfer message and data frame for the
requester) and records this member's ``transfer_received`` events in its log. When
``obtain`` gives up (a holder or the host went silent, nobody can serve the piece now), it is
called again after a pause with the part's bytes kept, as the engine's turns try the room
again.

What this module must never do: decide anything the resolver decides (whom to avoid, from
which offset to ask, when to give up a transfer), read the real clock, or touch a file.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.downloads.resolvers.base import ResolveFailed, Staging, Wanted
from matchlock.downloads.resolvers.room import ROOM_URL, Form, RoomRequest, RoomResolver
from matchlock.downloads.sink import PartFile
from matchlock.tools.sim.peers import PAUSE, STALL, PeerMember

__all__ = ["MemoryPart", "ResolverMember"]

_REQUESTER = (tm.Sending, tm.Unavailable, tm.End, tm.Cut, pr.DataChunk)


class MemoryPart(PartFile):
    """A piece's ``.part`` in memory: ``data`` outlives the process that writes it (as the
    file does), the rest is the part as one process opened it."""

    def __init__(self, data: bytearray) -> None:  # no file: nothing of PartFile's is opened
        self.data = data
        self.size = 0
        self.resumed_from = 0
        self.begun = False
        self.source: str | None = None

    async def begin(self, *, resume: bool, source: str) -> int:
        """Start a download from ``source``, keeping what the part holds with ``resume``."""
        self.source = source
        if not resume:
            self.data.clear()
        self.begun = True
        self.size = self.resumed_from = len(self.data)
        return self.size

    async def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Append ``chunks``."""
        for chunk in chunks:
            self.data += chunk
        self.size = len(self.data)

    async def drain(self) -> None:
        """Nothing is pending: every write is done when it returns."""

    async def restart(self) -> None:
        """Drop every byte."""
        self.data.clear()
        self.size = self.resumed_from = 0

    def hexdigest(self) -> str:
        """The sha256 of the bytes held."""
        return hashlib.sha256(self.data).hexdigest()


class ResolverMember(PeerMember):
    """A member whose requests are the room resolver's (see the module docs)."""

    def _begin(self) -> None:
        self.resolver = RoomResolver(
            self.room, self.user_id, self.client.room, self.client.holders,
            record=self.journal.append, clock=self.clock, read_timeout=STALL,
        )  # fmt: skip
        for key in self._lacking():  # tasks of this process: they die with it
            asyncio.get_running_loop().create_task(self._obtain(key))

    def _joined(self) -> None:
        self.resolver.link_up(self._send)

    def _room(self, events: list[ev.Event]) -> None:
        if events:
            self.resolver.room_changed()

    def _lost(self) -> None:
        self.resolver.link_down()

    def _transfer(self, message: object) -> None:
        serving = isinstance(message, tm.Cut) and message.transfer in self.serving
        if isinstance(message, _REQUESTER) and not serving:
            self.resolver.receive(message)
        else:
            super()._transfer(message)

    async def _obtain(self, key: str) -> None:
        pinned = self.room.content[key]
        assert pinned.sha256 is not None and pinned.size is not None  # archives only, here
        part = MemoryPart(self.parts.setdefault(key, bytearray()))
        staging = Staging(
            part, Wanted(key, pinned.sha256, pinned.size), lambda done: None, ROOM_URL
        )

        async def verify(form: Form) -> str | None:
            digest = part.hexdigest()
            if part.size == pinned.size and digest == pinned.sha256:
                return None
            return f"{part.size} bytes whose sha256 is {digest}, not the pinned {pinned.sha256}"

        def failed(failure: ResolveFailed) -> None:
            url = failure.source or ROOM_URL
            self._event(ev.ResolvableFailed(
                at=self.clock(), user_id=self.user_id, piece=key,
                failure=ev.ResolvableFailure(index=0, url=url, reason=ev.clip(failure.reason)),
            ))  # fmt: skip

        request = RoomRequest(key, (Form("archive", staging),), True, verify, failed)
        while True:
            try:
                delivered = await self.resolver.obtain(request)
            except ResolveFailed:  # silent, or nobody can now: the room is asked again later
                await asyncio.sleep(PAUSE)
                continue
            self.held[key] = bytes(part.data)
            source = f"{ROOM_URL}{delivered.holder}"
            self._event(
                ev.PieceFinished(at=self.clock(), user_id=self.user_id, piece=key, source=source)
            )
            return
