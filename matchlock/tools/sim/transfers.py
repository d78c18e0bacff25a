"""Peer transfers in the simulation: the faults a holder, a requester and the host can bring to
a transfer, and what must hold whatever they do, both read off the simulated wire.

:class:`TransferWatch` sees every frame a member sends (``on_member_frame``, before the network
carries it: there a fault may change or withhold it) and every frame from the host a member
reads (``on_member_read``). It follows each transfer from the host's ``serve`` (to the holder) and
``sending`` (to the requester) through its data frames, ``ack``, ``end`` and ``cut``, and
assembles, per requester and piece, exactly the bytes that reached the requester at their
offsets. When a transfer starts it may deal one of the enabled :data:`TRANSFER_FAULTS` to it:

- ``peer-lie``: the holder's data frames of this transfer arrive with their bytes changed (a
  holder that serves bytes that do not verify: a damaged disk, a hostile peer); never when the
  requester would then have caught every member that held the piece from the start lying
  about it, so the room can complete;
- ``peer-drop``: the holder's connection is cut at one of this transfer's data frames;
- ``peer-stall``: the holder sends nothing more of this transfer (its data frames and its
  ``end`` never leave), while its connection stays up;
- ``peer-gone``: the holder's process is killed mid-transfer (and restarted later);
- ``requester-gone``: the requester's connection is cut mid-transfer;
- ``host-mid-transfer``: the host's process is killed while the transfer runs.

What must hold (:class:`~matchlock.tools.sim.checks.Violation` otherwise):

- ``pinned-content-only``: a requester that reports a piece finished from ``room:<holder>``
  received exactly the pinned bytes (size and sha256);
- ``liar-recorded``: a requester that received bytes that do not verify reports a
  ``resolvable_failed`` naming that holder (``room:<holder>``) before it asks for the piece again;
- ``liar-avoided``: every later ``want`` of that piece by that requester (in the same process:
  a member started again knows only what its log says) avoids that holder;
- ``cut-is-resumed``: after a transfer is cut, the requester's next ``want`` of the piece (in
  the same process) starts at or beyond the bytes it had acknowledged.

It never reads the clock and never decides what a member or the host does: it watches, and the
faults it deals change only what the network carries or which process lives.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from matchlock.core.config import RoomConfig
from matchlock.tools.sim.checks import DATA_FRAME_TAG, Violation
from matchlock.tools.sim.network import Link

__all__ = ["MAX_TRANSFER_FAULTS", "TRANSFER_FAULTS", "TransferWatch"]

TRANSFER_FAULTS = (
    "peer-lie",
    "peer-drop",
    "peer-stall",
    "peer-gone",
    "requester-gone",
    "host-mid-transfer",
)
"""The faults of a transfer, each dealt to a transfer as it starts (see the module docs)."""

MAX_TRANSFER_FAULTS = 6
"""Transfers given a fault in one run at most."""

FAULT_CHANCE = 0.5
"""The chance that a transfer starting while faults are dealt gets one."""

_HEADER = struct.Struct(">BIQ")
ROOM = "room:"


@dataclass
class _Transfer:
    """One transfer as the wire showed it."""

    number: int
    piece: str
    holder: str
    requester: str
    offset: int
    fault: str | None = None
    acked: int = 0
    frames: int = 0  # data frames the holder sent
    drop_at: int = 0  # peer-drop: the holder's link is cut at this data frame
    ended: bool = False
    link: int = 0  # the requester's link its ``sending`` came on
    cancelled: bool = False  # the requester gave it up


@dataclass
class _Received:
    """What reached one requester of one piece: the bytes at their offsets, and what it owes
    the checks (a holder to name as failed, holders to avoid, an offset to resume from)."""

    data: bytearray = field(default_factory=bytearray)
    unreported: str | None = None  # a holder whose bytes did not verify, not yet reported
    avoid: set[str] = field(default_factory=set)
    resume_from: int | None = None
    process: object = None  # the process whose want the resume is owed by
    caught_by: object = None  # the process that read the bytes that did not verify


class TransferWatch:
    """Watches the transfers of ``room`` and deals ``faults`` (a subset of
    :data:`TRANSFER_FAULTS`) to them with ``rng`` while ``dealing()`` says so. ``user_of``
    names the member at a link's member end; ``kill`` kills a machine's process (a user id, or
    ``"host"``); ``deal`` counts a fault dealt; ``sources`` are the members that hold every
    piece from the start."""

    def __init__(
        self,
        room: RoomConfig,
        rng: random.Random,
        faults: frozenset[str],
        *,
        user_of: Callable[[Link], str | None],
        kill: Callable[[str], None],
        deal: Callable[[str], None],
        dealing: Callable[[], bool],
        sources: Collection[str],
    ) -> None:
        self.room = room
        self.sources = tuple(sources)
        self.rng = rng
        self.faults = sorted(faults & set(TRANSFER_FAULTS))
        self.user_of, self.kill, self.deal, self.dealing = user_of, kill, deal, dealing
        self.transfers: dict[tuple[int, int], _Transfer] = {}  # (host generation, id) -> it
        self.generation = 0
        self.received: dict[tuple[str, str], _Received] = {}
        self.dealt = 0
        self.broken: list[Violation] = []
        self.verified = 0  # pieces finished from a peer with the pinned bytes

    def host_restarted(self) -> None:
        """A new host process: transfer ids start again."""
        self.generation += 1

    # -- what members send --------------------------------------------------------------------

    def member_frame(self, link: Link, frame: bytes) -> bytes | None:
        """A frame ``link``'s member sends: what the network carries instead (None: nothing)."""
        user = self.user_of(link)
        if user is None:
            return frame
        if frame[:1] == DATA_FRAME_TAG:
            return self._holder_data(link, frame)
        message = _json(frame)
        kind = message.get("type")
        if kind in ("end", "unheld"):
            transfer = self.transfers.get((self.generation, message.get("transfer", 0)))
            if transfer is not None and transfer.fault == "peer-stall":
                return None
        elif kind in ("ack", "cancel"):
            transfer = self.transfers.get((self.generation, message.get("transfer", 0)))
            if transfer is not None and kind == "ack":
                transfer.acked = max(transfer.acked, int(message.get("offset", 0)))
            elif transfer is not None and transfer.requester == user:
                transfer.cancelled = True
        elif kind == "want":
            self._want(link, user, message)
        elif kind == "report":
            self._report(user, message.get("event", {}))
        return frame

    def _holder_data(self, link: Link, frame: bytes) -> bytes | None:
        _, number, _ = _HEADER.unpack_from(frame)
        transfer = self.transfers.get((self.generation, number))
        if transfer is None or transfer.fault is None:
            return frame
        transfer.frames += 1
        if transfer.fault == "peer-stall":
            return None
        if transfer.fault == "peer-drop" and transfer.frames >= transfer.drop_at:
            link.sever()
            return None
        if transfer.fault == "peer-lie":
            payload = bytearray(frame[_HEADER.size :])
            payload[self.rng.randrange(len(payload))] ^= 1 + self.rng.randrange(255)
            return frame[: _HEADER.size] + bytes(payload)
        return frame

    def _want(self, link: Link, user: str, message: dict[str, Any]) -> None:
        piece, offset = str(message.get("piece", "")), int(message.get("offset", 0))
        got = self.received.setdefault((user, piece), _Received())
        avoid = set(message.get("avoid", ()))
        process = link.member_end.process
        if got.caught_by is not None and got.caught_by is not process:  # a process started
            got.unreported, got.avoid, got.caught_by = None, set(), None  # since: it never knew
        if got.unreported is not None:
            self._break(
                "liar-recorded",
                f"{user} asked for {piece} again without reporting that {got.unreported} sent "
                "bytes that do not verify",
            )
        if not got.avoid <= avoid:
            self._break(
                "liar-avoided",
                f"{user} asked for {piece} again without avoiding {sorted(got.avoid - avoid)}, "
                "whose bytes did not verify",
            )
        if got.resume_from is not None and got.process is process and offset < got.resume_from:
            self._break(
                "cut-is-resumed",
                f"{user} asked for {piece} from byte {offset} after a cut, though it had "
                f"acknowledged {got.resume_from} bytes",
            )
        got.resume_from, got.process = None, process

    def _report(self, user: str, event: dict[str, Any]) -> None:
        piece = str(event.get("piece", ""))
        got = self.received.get((user, piece))
        if got is None:
            return
        if event.get("type") == "resolvable_failed":
            url = str(event.get("failure", {}).get("url", ""))
            if url == f"{ROOM}{got.unreported}":
                got.unreported = None
        elif event.get("type") == "piece_finished" and str(event.get("source", "")) != "":
            source = str(event.get("source"))
            if not source.startswith(ROOM):
                return
            pinned = self.room.content[piece]
            digest = hashlib.sha256(bytes(got.data[: pinned.size])).hexdigest()
            if len(got.data) != pinned.size or digest != pinned.sha256:
                self._break(
                    "pinned-content-only",
                    f"{user} installed {piece} from {source}, but the {len(got.data)} bytes it "
                    f"received have sha256 {digest}, not the pinned {pinned.sha256}",
                )
            self.verified += 1

    # -- what the host delivers -----------------------------------------------------------------

    def member_read(self, link: Link, frame: bytes) -> None:
        """A frame from the host that ``link``'s member read (one in flight when a connection
        is cut is never read: it tells the member nothing)."""
        user = self.user_of(link)
        if user is None:
            return
        if frame[:1] == DATA_FRAME_TAG:
            _, number, offset = _HEADER.unpack_from(frame)
            transfer = self.transfers.get((self.generation, number))
            if transfer is not None and transfer.requester == user:
                data = self.received.setdefault((user, transfer.piece), _Received()).data
                payload = frame[_HEADER.size :]
                if len(data) < offset:
                    data.extend(bytes(offset - len(data)))
                data[offset : offset + len(payload)] = payload
            return
        message = _json(frame)
        kind, number = message.get("type"), message.get("transfer", 0)
        if kind == "serve":
            self._started(message, holder=user)
        elif kind == "sending":  # it may be read before the holder reads its serve
            transfer = self._transfer(number, str(message.get("piece", "")))
            transfer.holder = str(message.get("holder", ""))
            transfer.requester, transfer.link = user, link.number
        elif kind == "end":
            self._ended(link, user, self.transfers.get((self.generation, number)))
        elif kind == "cut":
            transfer = self.transfers.get((self.generation, number))
            if transfer is not None and transfer.requester == user and not transfer.ended:
                got = self.received.setdefault((user, transfer.piece), _Received())
                got.resume_from = transfer.acked

    def _transfer(self, number: int, piece: str) -> _Transfer:
        """The record of transfer ``number`` (of ``piece``), made by what is read of it first."""
        key = (self.generation, number)
        if key not in self.transfers:
            self.transfers[key] = _Transfer(number, piece, holder="", requester="", offset=0)
        return self.transfers[key]

    def _started(self, message: dict[str, Any], holder: str) -> None:
        transfer = self._transfer(int(message.get("transfer", 0)), str(message.get("piece", "")))
        transfer.holder, transfer.requester = holder, str(message.get("requester", ""))
        transfer.offset = int(message.get("offset", 0))
        dealing = self.faults and self.dealing() and self.dealt < MAX_TRANSFER_FAULTS
        if dealing and self.rng.random() < FAULT_CHANCE:
            fault = self.rng.choice(self.faults)
            if fault == "peer-lie" and not self._honest_left(transfer):
                return
            self.dealt += 1
            self._deal(transfer, fault)

    def _honest_left(self, transfer: _Transfer) -> bool:
        """Whether one of the members that held the piece from the start (``sources``) would
        still be left to serve the requester if this transfer's holder lied (else a lie could
        make the room impossible to complete, not test it: requesters that each caught every
        source lying would wait for each other)."""
        got = self.received.get((transfer.requester, transfer.piece))
        liars = (got.avoid if got is not None else set()) | {transfer.holder}
        return not set(self.sources) <= liars

    def _deal(self, transfer: _Transfer, fault: str) -> None:
        self.deal(fault)
        if fault in ("peer-lie", "peer-drop", "peer-stall"):
            transfer.fault = fault
            transfer.drop_at = 1 + self.rng.randrange(3)
        elif fault == "peer-gone":
            self.kill(transfer.holder)
        elif fault == "requester-gone":
            self.kill(f"link:{transfer.requester}")
        elif fault == "host-mid-transfer":
            self.kill("host")

    def _ended(self, link: Link, user: str, transfer: _Transfer | None) -> None:
        """The requester heard that every byte was sent: what it got is the holder's whole
        answer, unless it had given the transfer up or heard of it on an earlier connection."""
        if transfer is None or transfer.requester != user:
            return
        if transfer.cancelled or transfer.link != link.number:
            return
        transfer.ended = True
        got = self.received.setdefault((user, transfer.piece), _Received())
        pinned = self.room.content[transfer.piece]
        if hashlib.sha256(bytes(got.data)).hexdigest() != pinned.sha256:
            got.unreported = transfer.holder
            got.avoid.add(transfer.holder)
            got.caught_by = link.member_end.process

    def _break(self, invariant: str, detail: str) -> None:
        self.broken.append(Violation(invariant, detail))

    def check(self) -> None:
        """Raise the first violation seen."""
        if self.broken:
            raise self.broken[0]


def _json(frame: bytes) -> dict[str, Any]:
    """A JSON frame as a dict (the host and the members check frames; this only reads them)."""
    try:
        message = json.loads(frame)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}
