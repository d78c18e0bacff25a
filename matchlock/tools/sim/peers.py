"""The members of a simulated room whose members get their pieces only from each other
(:func:`matchlock.tools.sim.peer_run.simulate_transfers` runs it, under the faults of
:mod:`matchlock.tools.sim.transfers`).

The host is the real :class:`~matchlock.app.hosting.RoomHost` (its core's transfers: holder
choice, every data frame checked, relayed as the same bytes, cut when a side leaves), killed and
restarted on its logs (:class:`~matchlock.tools.sim.processes.SimHost`); the network is the
simulation's. Each member (:class:`PeerMember`) is a process driving the real client core,
:class:`~matchlock.core.client.ClientProtocol` (protocol 2, serving): it says hello, catches up,
reports its piece events through the core, and uses the core's transfer frames (``want``,
``ack``, ``end``, ``cancel``, data frames) the way a member's shell does: it asks for each
piece it lacks from the bytes it holds, avoiding every holder whose bytes did not verify,
acknowledges what arrives, checks the whole against the pinned sha256 at ``end`` (a mismatch is
a ``resolvable_failed`` naming the holder, and the part is emptied), asks again from its offset
after a cut or a lost connection, cancels a transfer silent for :data:`STALL` seconds, and
serves what it holds. The room's pieces are real bytes (seeded), held by ``u0`` and ``u1``.

This member stands in for the member shell's room resolver and piece server
(``matchlock.downloads.resolvers.room``, ``matchlock.app.serving``), which read and write files
the simulation does not have; what it exercises for real is the host, both cores and the wire.
``planted`` gives it a bug (:data:`PLANTABLE`) so that tests can prove the checks catch it.

It must never read the real clock or touch a file.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.client import ClientProtocol, ProtocolError
from matchlock.core.config import RoomConfig
from matchlock.tools.sim.loop import Process
from matchlock.tools.sim.network import Network
from matchlock.tools.testing import insecure_key
from matchlock.transport import Connection, ConnectionClosed

__all__ = ["CHUNK", "HOLDERS", "PAUSE", "PLANTABLE", "STALL", "PeerMember"]

CHUNK = 1024
"""Bytes per data frame a holder sends by default (pieces are a few KiB: several frames each)."""

WINDOW = tm.TRANSFER_WINDOW_BYTES
"""What a holder sends beyond the requester's last ``ack`` at most (the host cuts beyond)."""

STALL = 1.0
"""Virtual seconds without a byte after which a requester cancels a transfer."""

PAUSE = 0.05
"""Virtual seconds a member waits before it connects again or asks again."""

HOLDERS = ("u0", "u1")
"""The members that hold every piece from the start; the others hold none."""

PLANTABLE = frozenset({"trusting", "forgetful", "restarting"})
"""Bugs a member can be given: ``trusting`` installs whatever arrived, ``forgetful`` does not
avoid holders whose bytes did not verify, ``restarting`` asks from byte 0 after a cut."""


@dataclass
class _Running:
    """A transfer this member receives: of which piece, from whom, when its last byte came."""

    piece: str
    holder: str
    last: float
    offset: int = 0  # where it began


def _size(room: RoomConfig, key: str) -> int:
    return room.content[key].size or 0


class PeerMember:
    """One member's machine: what it holds (it survives the process, as a cache does), the
    parts it is receiving, and its process."""

    def __init__(
        self,
        user_id: str,
        room: RoomConfig,
        *,
        network: Network,
        held: dict[str, bytes],
        clock: Callable[[], float],
        planted: frozenset[str],
        chunk: int = CHUNK,
    ) -> None:
        self.user_id, self.room, self.network, self.clock = user_id, room, network, clock
        self.chunk = chunk
        self.held = dict(held)
        self.planted = planted
        self.parts: dict[str, bytearray] = {}
        self.avoid: dict[str, set[str]] = {}
        self.heard: list[ev.Event] = []  # the room's events it heard
        self.journal: list[ev.Event] = []  # its own log: those, and its transfer events
        self.process: Process | None = None
        self.closed = False
        self.conn: Connection | None = None

    def start(self) -> None:
        """Start the member's process (again; nothing if it runs)."""
        if self.process is not None and self.process.alive:
            return
        self.process = Process(f"{self.user_id}-peer")
        self.process.spawn(self._run(self.process))

    def kill(self) -> None:
        """SIGKILL: the parts and what it holds stay (they are on its disk)."""
        if self.process is None or not self.process.alive:
            return
        self.process.kill()
        self.network.sever_all(self.process, power=False)

    async def _run(self, process: Process) -> None:
        key = insecure_key(self.user_id)
        client = ClientProtocol(self.room, self.user_id, key, list(self.heard), serve=True)
        self.client = client
        self._begin()
        for piece in self.room.piece_keys():
            user = self.user_id
            client.piece_event(ev.PieceStarted(at=self.clock(), user_id=user, piece=piece))
            if piece in self.held:
                self._event(
                    ev.PieceFinished(at=self.clock(), user_id=user, piece=piece, source="cache")
                )
        while not self.closed:
            try:
                conn = await self.network.connector(process)("sim://host")
                await self._session(conn)
            except (OSError, EOFError, ConnectionClosed, ProtocolError):  # as join() retries
                pass
            if not self.closed:
                await asyncio.sleep(PAUSE)

    async def _session(self, conn: Connection) -> None:
        self.conn, self.transfers = conn, dict[int, _Running]()
        self.serving: dict[int, asyncio.Task[None]] = {}
        self.acked: dict[int, int] = {}  # what the requesters of what it serves acknowledged
        self.tasks: set[asyncio.Task[None]] = set()
        self._spawn(self._watch_stalls())
        try:
            conn.send_nowait(self.client.hello())
            while True:
                out = self.client.receive(await conn.recv())
                for frame in out.sends:
                    self._send(frame)
                self.heard.extend(out.events)
                self.journal.extend(out.events)
                self._room(out.events)
                if out.joined:
                    self._joined()
                for message in out.transfers:
                    self._transfer(message)
                if out.closed:
                    self.closed = True
                    return
                if out.refused is not None and out.refused.fatal:
                    return
        finally:
            for task in self.tasks:  # what served or waited on this connection ends with it
                task.cancel()
            self.conn = None
            self._lost()
            await conn.close()

    def _begin(self) -> None:
        """A new process has its client core (:attr:`client`), not yet a connection."""

    def _joined(self) -> None:
        """Welcomed: ask for every piece this member lacks."""
        for key in self._lacking():
            self._ask(key)

    def _room(self, events: list[ev.Event]) -> None:
        """The room's events just heard (what a requester of the room may wait on)."""

    def _lost(self) -> None:
        """The connection is gone (its transfers with it)."""

    def _lacking(self) -> list[str]:
        return [key for key in self.room.piece_keys() if key not in self.held]

    def _send(self, frame: bytes) -> None:
        if self.conn is not None:
            try:
                self.conn.send_nowait(frame)
            except ConnectionClosed:
                self.conn = None

    def _event(self, event: ev.Event) -> None:
        for frame in self.client.piece_event(event):
            self._send(frame)

    def _ask(self, key: str) -> None:
        offset = len(self.parts.setdefault(key, bytearray()))
        avoid = () if "forgetful" in self.planted else sorted(self.avoid.get(key, ()))
        self._send(self.client.want(key, "archive", offset, avoid))

    def _transfer(self, message: object) -> None:
        match message:
            case pr.DataChunk(transfer=number, offset=offset, payload=payload):
                self._data(number, offset, payload)
            case tm.Sending(transfer=number, piece=key, holder=holder, offset=offset):
                self.transfers[number] = _Running(key, holder, self.clock(), offset)
            case tm.End(transfer=number) if number in self.transfers:
                self._verify(self.transfers.pop(number))
            case tm.Cut(transfer=number, reason=reason) if number in self.transfers:
                running = self.transfers.pop(number)
                self._received(running, "cut", reason)
                if "restarting" in self.planted:
                    self.parts[running.piece].clear()
                self._ask(running.piece)
            case tm.Cut(transfer=number) if number in self.serving:
                self.serving.pop(number).cancel()
            case tm.Unavailable(piece=key, reason=reason):
                self._received(_Running(key, "", self.clock()), "unavailable", reason)
                self._spawn(self._ask_later(key))
            case tm.Ack(transfer=number, offset=offset) if number in self.serving:
                self.acked[number] = max(self.acked.get(number, 0), offset)
            case tm.Serve() as serve:
                task = asyncio.get_running_loop().create_task(self._serve(serve))
                self.tasks.add(task)
                self.serving[serve.transfer] = task

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _ask_later(self, key: str) -> None:
        await asyncio.sleep(PAUSE)
        if key not in self.held:
            self._ask(key)

    def _data(self, number: int, offset: int, payload: bytes | memoryview) -> None:
        running = self.transfers.get(number)
        if running is None:
            return
        part = self.parts[running.piece]
        if offset != len(part) or len(part) + len(payload) > _size(self.room, running.piece):
            self._send(self.client.cancel(number, "bytes out of order or beyond the pinned size"))
            return
        part.extend(payload)
        running.last = self.clock()
        self._send(self.client.ack(number, len(part)))

    def _received(self, running: _Running, outcome: str, reason: str = "") -> None:
        """This member's own record of a transfer it received (``transfer_received``)."""
        got = max(0, len(self.parts.get(running.piece, b"")) - running.offset)
        self.journal.append(ev.TransferReceived.model_validate({
            "at": self.clock(), "user_id": self.user_id, "piece": running.piece,
            "holder": running.holder, "form": "archive", "offset": running.offset,
            "bytes": got, "outcome": outcome, "reason": ev.clip(reason),
        }))  # fmt: skip

    def _verify(self, running: _Running) -> None:
        key, holder = running.piece, running.holder
        pinned, part = self.room.content[key], self.parts[key]
        digest = hashlib.sha256(bytes(part)).hexdigest()
        if (digest == pinned.sha256 and len(part) == _size(self.room, key)) or (
            "trusting" in self.planted
        ):
            self._received(running, "verified")
            self.held[key] = bytes(part)
            self._event(ev.PieceFinished(
                at=self.clock(), user_id=self.user_id, piece=key, source=f"room:{holder}"
            ))  # fmt: skip
            return
        reason = f"{holder} sent {len(part)} bytes whose sha256 is {digest}, not {pinned.sha256}"
        self._received(running, "corrupt", reason)
        failure = ev.ResolvableFailure(index=0, url=f"room:{holder}", reason=reason)
        self._event(ev.ResolvableFailed(
            at=self.clock(), user_id=self.user_id, piece=key, failure=failure
        ))  # fmt: skip
        self.avoid.setdefault(key, set()).add(holder)
        part.clear()
        self._ask(key)

    async def _watch_stalls(self) -> None:
        while True:
            await asyncio.sleep(STALL / 4)
            for number, running in list(self.transfers.items()):
                if self.clock() - running.last > STALL:
                    del self.transfers[number]
                    self._received(running, "stalled", f"no byte for {STALL} s")
                    self._send(self.client.cancel(number, f"no byte for {STALL} s"))
                    self._ask(running.piece)

    async def _serve(self, serve: tm.Serve) -> None:
        data = self.held.get(serve.piece)
        if data is None:
            self._send(self.client.unheld(serve.transfer, f"{self.user_id} holds no {serve.piece}"))
            return
        sent, outcome = serve.offset, "cut"
        try:
            for sent in range(serve.offset, len(data), self.chunk):
                payload = data[sent : sent + self.chunk]
                while sent + len(payload) - self.acked.get(serve.transfer, serve.offset) > WINDOW:
                    await asyncio.sleep(0.005)  # the window is full: wait for the next ack
                if self.conn is None:
                    return
                self._send(self.client.data(serve.transfer, sent, payload))
                await asyncio.sleep(0.002)
            self._send(self.client.end(serve.transfer))
            sent, outcome = len(data), "sent"
        finally:
            self.serving.pop(serve.transfer, None)
            self.acked.pop(serve.transfer, None)
            self.journal.append(ev.TransferServed.model_validate({
                "at": self.clock(), "user_id": self.user_id, "piece": serve.piece,
                "requester": serve.requester, "form": "archive", "offset": serve.offset,
                "bytes": sent - serve.offset, "outcome": outcome,
            }))  # fmt: skip
