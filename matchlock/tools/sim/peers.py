"""A simulated room whose members get their pieces only from each other, under the faults of
:mod:`matchlock.tools.sim.transfers`: :func:`simulate_transfers`.

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
import random
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.client import ClientProtocol, ProtocolError
from matchlock.core.config import PinnedPiece, RoomConfig
from matchlock.core.room import replay
from matchlock.tools.sim.checks import Violation, check_machines, decode
from matchlock.tools.sim.loop import Process, VirtualLoop
from matchlock.tools.sim.network import Link, Network
from matchlock.tools.sim.processes import SimHost
from matchlock.tools.sim.run import START, STEP, TICK
from matchlock.tools.sim.transfers import TRANSFER_FAULTS, TransferWatch
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport import Connection, ConnectionClosed

__all__ = ["PLANTABLE", "PeerMember", "PeerResult", "simulate_transfers"]

CHUNK = 1024
"""Bytes per data frame a holder sends (pieces are a few KiB: several frames each)."""

STALL = 1.0
"""Virtual seconds without a byte after which a requester cancels a transfer."""

PAUSE = 0.05
"""Virtual seconds a member waits before it connects again or asks again."""

HOLDERS = ("u0", "u1")
"""The members that hold every piece from the start; the others hold none."""

PLANTABLE = frozenset({"trusting", "forgetful", "restarting"})
"""Bugs a member can be given: ``trusting`` installs whatever arrived, ``forgetful`` does not
avoid holders whose bytes did not verify, ``restarting`` asks from byte 0 after a cut."""


@dataclass(frozen=True)
class PeerResult:
    """A run that broke nothing: how many faults of each kind were dealt, how many pieces were
    installed from a peer with their pinned bytes, and the host's log."""

    seed: int
    dealt: dict[str, int]
    verified: int
    host_log: bytes


def room_of(seed: int, users: int, pieces: int) -> tuple[RoomConfig, dict[str, bytes]]:
    """The seed's room and its pieces' bytes (a few KiB each)."""
    rng = random.Random(f"{seed}/peer-room")
    content = {f"chars/p{i}": rng.randbytes(rng.randint(1, 8) * 700) for i in range(pieces)}
    pins = {
        key: PinnedPiece(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        for key, data in content.items()
    }
    return signed_room(f"peers{seed}", [f"u{i}" for i in range(users)], pins), content


@dataclass
class _Running:
    """A transfer this member receives: of which piece, from whom, when its last byte came."""

    piece: str
    holder: str
    last: float


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
    ) -> None:
        self.user_id, self.room, self.network, self.clock = user_id, room, network, clock
        self.held = dict(held)
        self.planted = planted
        self.parts: dict[str, bytearray] = {}
        self.avoid: dict[str, set[str]] = {}
        self.heard: list[ev.Event] = []  # its log of the room
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
        self.tasks: set[asyncio.Task[None]] = set()
        self._spawn(self._watch_stalls())
        try:
            conn.send_nowait(self.client.hello())
            while True:
                out = self.client.receive(await conn.recv())
                for frame in out.sends:
                    self._send(frame)
                self.heard.extend(out.events)
                if out.joined:
                    for key in self._lacking():
                        self._ask(key)
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
            await conn.close()

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
            case tm.Sending(transfer=number, piece=key, holder=holder):
                self.transfers[number] = _Running(key, holder, self.clock())
            case tm.End(transfer=number) if number in self.transfers:
                running = self.transfers.pop(number)
                self._verify(running.piece, running.holder)
            case tm.Cut(transfer=number) if number in self.transfers:
                key = self.transfers.pop(number).piece
                if "restarting" in self.planted:
                    self.parts[key].clear()
                self._ask(key)
            case tm.Unavailable(piece=key):
                self._spawn(self._ask_later(key))
            case tm.Serve() as serve:
                self._spawn(self._serve(serve))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _ask_later(self, key: str) -> None:
        await asyncio.sleep(PAUSE)
        if key not in self.held:
            self._ask(key)

    def _data(self, number: int, offset: int, payload: bytes) -> None:
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

    def _verify(self, key: str, holder: str) -> None:
        pinned, part = self.room.content[key], self.parts[key]
        digest = hashlib.sha256(bytes(part)).hexdigest()
        if (digest == pinned.sha256 and len(part) == _size(self.room, key)) or (
            "trusting" in self.planted
        ):
            self.held[key] = bytes(part)
            self._event(ev.PieceFinished(
                at=self.clock(), user_id=self.user_id, piece=key, source=f"room:{holder}"
            ))  # fmt: skip
            return
        reason = f"{holder} sent {len(part)} bytes whose sha256 is {digest}, not {pinned.sha256}"
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
                    self._send(self.client.cancel(number, f"no byte for {STALL} s"))
                    self._ask(running.piece)

    async def _serve(self, serve: tm.Serve) -> None:
        data = self.held.get(serve.piece)
        if data is None:
            self._send(self.client.unheld(serve.transfer, f"{self.user_id} holds no {serve.piece}"))
            return
        for offset in range(serve.offset, len(data), CHUNK):
            if self.conn is None:
                return
            self._send(self.client.data(serve.transfer, offset, data[offset : offset + CHUNK]))
            await asyncio.sleep(0.002)
        self._send(self.client.end(serve.transfer))


class _World:
    """The host, the members, the network and the watch of one seeded run."""

    def __init__(
        self, seed: int, *, users: int, pieces: int, faults: frozenset[str],
        planted: frozenset[str], budget: float,
    ) -> None:  # fmt: skip
        self.seed, self.budget = seed, budget
        self.room, content = room_of(seed, users, pieces)
        self.dealt: dict[str, int] = {}
        self.network = Network(random.Random(f"{seed}/peer-network"), delay=True)
        nonces = random.Random(f"{seed}/peer-nonces")
        self.host = SimHost(
            self.network, self.clock, lambda: nonces.randbytes(16),
            durability="every", planted=frozenset(), on_io=lambda step: None,
        )  # fmt: skip
        self.members = {
            user: PeerMember(
                user, self.room, network=self.network,
                held=content if user in HOLDERS else {}, clock=self.clock,
                planted=planted if user not in HOLDERS else frozenset(),
            )
            for user in self.room.users
        }  # fmt: skip
        self.chaos = random.Random(f"{seed}/peer-chaos")
        self.watch = TransferWatch(
            self.room, random.Random(f"{seed}/transfers"), faults,
            user_of=self._user_of, kill=self._kill, deal=self._deal,
            dealing=lambda: asyncio.get_running_loop().time() < budget / 2,
        )  # fmt: skip
        self.network.on_member_frame = self.watch.member_frame
        self.network.on_member_read = self.watch.member_read

    @staticmethod
    def clock() -> float:
        return START + asyncio.get_running_loop().time()

    def _deal(self, fault: str) -> None:
        self.dealt[fault] = self.dealt.get(fault, 0) + 1

    def _user_of(self, link: Link) -> str | None:
        for user, member in self.members.items():
            if member.process is not None and member.process is link.member_end.process:
                return user
        return None

    def _kill(self, who: str) -> None:
        loop = asyncio.get_running_loop()
        pause = self.chaos.uniform(0.05, 0.3)
        if who == "host":
            if self.host.up:
                self.host.kill(None)
                loop.call_later(pause, lambda: loop.create_task(self._restart_host()))
        elif who.startswith("link:"):
            for link in list(self.network.links):
                if self._user_of(link) == who.removeprefix("link:"):
                    loop.call_soon(link.sever)
        else:
            member = self.members[who]
            loop.call_soon(member.kill)
            loop.call_later(pause, member.start)

    async def _restart_host(self) -> None:
        self.watch.host_restarted()
        await self.host.start()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await self.host.start()
        for member in self.members.values():
            member.start()
        while loop.time() < self.budget and not all(m.closed for m in self.members.values()):
            await asyncio.sleep(TICK)
            self.watch.check()
            if self.host.up and self.host.host is not None:
                hosted = self.host.host.core.rooms.get(self.room.room_id)
                if hosted is not None:
                    check_machines(hosted.room)
        self.watch.check()
        history = decode("host.log", self.host.lines(self.room.room_id))
        state = replay(history)
        if state.status != "closed":
            raise Violation(
                "room-completes",
                f"the room is {state.status} after {self.budget:.1f} virtual seconds: "
                + ", ".join(f"{u} lacks {m._lacking()}" for u, m in self.members.items()),
            )


def simulate_transfers(
    seed: int,
    *,
    users: int = 4,
    pieces: int = 2,
    steps: int = 2000,
    faults: Collection[str] = TRANSFER_FAULTS,
    planted: Collection[str] = (),
) -> PeerResult:
    """Run one seeded room of peers; raise :class:`~matchlock.tools.sim.checks.Violation` at
    the first broken invariant (of :mod:`matchlock.tools.sim.transfers`, the machines', and
    ``room-completes``: the room closes within ``steps`` x 10 virtual ms)."""
    unknown = set(faults) - set(TRANSFER_FAULTS) or set(planted) - PLANTABLE
    if unknown:
        raise ValueError(f"unknown transfer faults or bugs: {sorted(unknown)}")
    world = _World(
        seed, users=users, pieces=pieces, faults=frozenset(faults), planted=frozenset(planted),
        budget=steps * STEP,
    )  # fmt: skip
    loop = VirtualLoop()
    try:
        loop.run_until_complete(world.run())
        log = b"".join(world.host.lines(world.room.room_id))
        return PeerResult(seed, dict(world.dealt), world.watch.verified, log)
    finally:
        for process in [world.host.process, *(m.process for m in world.members.values())]:
            if process is not None and process.alive:
                process.kill()
        while pending := asyncio.all_tasks(loop):  # a cancelled task may leave one more
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
