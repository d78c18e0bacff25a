"""The three state machines of a room: piece, member and room.

Each machine is data: its states, its initial state, and its transitions as
``(trigger, sources, destination)`` rows. The tables below are the single definition. From each
one a :class:`transitions.Machine` is built once (it is the checker and what the statecharts are
exported from), and from that machine a dict ``(state, trigger) -> state`` is compiled. Folding
events through the dict costs a lookup (~0.2 us) instead of a ``transitions`` trigger (~15 us),
and an instance of a machine is nothing but its current state (a string), so a room of thousands
of pieces costs no per-object machine setup. ``tests/core/test_machines.py`` proves, by property,
that the compiled table accepts and rejects exactly what ``transitions`` does.

**piece** (one per member and expected piece)::

    not_started --start--> in_progress --progress / resolvable_failed / reject_folder--> in_progress
    not_started | in_progress --finish--> finished      (found in cache or engine: no download)
    not_started | in_progress --fail--> error --retry--> not_started

**member** (one per expected user)::

    expected | disconnected --join--> connected --complete--> done --goodbye--> goodbye
    connected | done --disconnect--> disconnected         (a rejoin completes again)

**room**::

    open --all_done--> all_done --goodbye--> goodbye --close--> closed
    open | all_done | goodbye --abort--> aborted
    open --end--> closed                                   (a download job ends)

**State-triggered transitions** (:data:`STATE_TRIGGERED`, as h11 keeps them beside the event
table): some transitions are not caused by an event from outside but become due when other
machines reach a state. A member in ``connected`` whose every piece is ``finished`` becomes
``done``; an ``open`` room whose every member is ``done`` becomes ``all_done``; a room in
``goodbye`` whose every member said ``goodbye`` becomes ``closed``. The host records the event of
each as soon as it is due (:func:`matchlock.core.room.next_due`), and the fold refuses each one that
is not (the same rows are its guards), so no log can hold a member done with a piece unfinished.

States are enums (:class:`PieceStatus`, :class:`MemberStatus`, :class:`RoomStatus`; each is a
``str``, so the logs and the statecharts hold the plain names) and a typo is a type error.

Guards that need more than the state (progress never goes backwards) live in
:mod:`matchlock.core.room`, which owns the data they read. This module must stay pure: no IO, no
clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from transitions import Machine

from matchlock.core.errors import IllegalEventError

__all__ = [
    "MACHINES",
    "MEMBER",
    "PIECE",
    "ROOM",
    "STATE_TRIGGERED",
    "MachineSpec",
    "MemberStatus",
    "PieceStatus",
    "RoomStatus",
    "StateTriggered",
    "Transition",
]


class PieceStatus(StrEnum):
    """The states of a member's piece."""

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    FINISHED = "finished"
    ERROR = "error"


class MemberStatus(StrEnum):
    """The states of a room member."""

    EXPECTED = "expected"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    DONE = "done"
    GOODBYE = "goodbye"


class RoomStatus(StrEnum):
    """The states of a room (or a download job)."""

    OPEN = "open"
    ALL_DONE = "all_done"
    GOODBYE = "goodbye"
    CLOSED = "closed"
    ABORTED = "aborted"


S = TypeVar("S", PieceStatus, MemberStatus, RoomStatus)


@dataclass(frozen=True)
class Transition:
    """One row of a machine: ``trigger`` moves any of ``sources`` to ``dest``."""

    trigger: str
    sources: tuple[str, ...]
    dest: str


@dataclass(frozen=True)
class MachineSpec(Generic[S]):
    """A machine's definition, its ``transitions`` checker, and the table compiled from it."""

    name: str
    status: type[S]
    initial: S
    rows: tuple[Transition, ...]
    table: Mapping[tuple[str, str], S] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        table = {key: self.status(dest) for key, dest in _compile(self.checker()).items()}
        object.__setattr__(self, "table", table)

    @property
    def states(self) -> tuple[str, ...]:
        """Every state's name, in definition order."""
        return tuple(str(state) for state in self.status)

    def checker(self, model: Any = None) -> Machine:
        """A fresh :class:`transitions.Machine` for this definition (``model`` or the machine)."""
        return Machine(
            model=model if model is not None else Machine.self_literal,
            states=list(self.states),
            transitions=[
                {"trigger": row.trigger, "source": list(row.sources), "dest": row.dest}
                for row in self.rows
            ],
            initial=str(self.initial),
            auto_transitions=False,
            send_event=False,
        )

    def triggers(self) -> tuple[str, ...]:
        """Every trigger, in definition order, without repeats."""
        return tuple(dict.fromkeys(row.trigger for row in self.rows))

    def next_state(self, state: str, trigger: str, subject: str) -> S:
        """The state after ``trigger`` fires in ``state``; raises :class:`IllegalEventError`
        naming ``subject`` when the trigger is not legal there."""
        try:
            return self.table[state, trigger]
        except KeyError:
            raise IllegalEventError(self.name, subject, state, trigger) from None


def _compile(machine: Machine) -> dict[tuple[str, str], str]:
    table: dict[tuple[str, str], str] = {}
    for trigger, event in machine.events.items():
        for source, moves in event.transitions.items():
            # Unconditional transitions only: the first one that matches is the one taken.
            table[source, trigger] = moves[0].dest if moves[0].dest is not None else source
    return table


def _rows(*rows: tuple[str, str | tuple[str, ...], str]) -> tuple[Transition, ...]:
    # Plain strings: ``transitions`` names an enum state by its Python name, not its value.
    return tuple(
        Transition(
            trigger,
            (str(sources),) if isinstance(sources, str) else tuple(map(str, sources)),
            str(dest),
        )
        for trigger, sources, dest in rows
    )


P, M, R = PieceStatus, MemberStatus, RoomStatus

PIECE = MachineSpec(
    name="piece",
    status=PieceStatus,
    initial=P.NOT_STARTED,
    rows=_rows(
        ("start", P.NOT_STARTED, P.IN_PROGRESS),
        ("progress", P.IN_PROGRESS, P.IN_PROGRESS),
        ("resolvable_failed", P.IN_PROGRESS, P.IN_PROGRESS),
        ("reject_folder", P.IN_PROGRESS, P.IN_PROGRESS),
        ("finish", (P.NOT_STARTED, P.IN_PROGRESS), P.FINISHED),
        ("fail", (P.NOT_STARTED, P.IN_PROGRESS), P.ERROR),
        ("retry", P.ERROR, P.NOT_STARTED),
    ),
)
"""A member's piece: not started, in progress, finished, or error (which may be retried)."""

MEMBER = MachineSpec(
    name="member",
    status=MemberStatus,
    initial=M.EXPECTED,
    rows=_rows(
        ("join", (M.EXPECTED, M.DISCONNECTED), M.CONNECTED),
        ("complete", M.CONNECTED, M.DONE),
        ("disconnect", (M.CONNECTED, M.DONE), M.DISCONNECTED),
        ("goodbye", M.DONE, M.GOODBYE),
    ),
)
"""A room member: expected until they prove who they are, then connected, done, goodbye."""

ROOM = MachineSpec(
    name="room",
    status=RoomStatus,
    initial=R.OPEN,
    rows=_rows(
        ("all_done", R.OPEN, R.ALL_DONE),
        ("goodbye", (R.ALL_DONE, R.GOODBYE), R.GOODBYE),
        ("close", R.GOODBYE, R.CLOSED),
        ("abort", (R.OPEN, R.ALL_DONE, R.GOODBYE), R.ABORTED),
        ("end", R.OPEN, R.CLOSED),
    ),
)
"""A room (or a download job): open until everyone is done, then goodbye, then closed."""

MACHINES: tuple[MachineSpec[Any], ...] = (PIECE, MEMBER, ROOM)
"""Every machine, in the order the docs present them."""


@dataclass(frozen=True)
class StateTriggered:
    """A transition that becomes due by itself: when the ``machine`` (``member`` or ``room``)
    is in ``state`` and every one of its ``parts`` (its pieces, or the room's members) is in
    ``all_in``, its ``trigger`` fires, recorded as an ``event`` of that type."""

    machine: Literal["member", "room"]
    state: str
    parts: Literal["pieces", "members"]
    all_in: str
    trigger: str
    event: str


STATE_TRIGGERED: tuple[StateTriggered, ...] = (
    StateTriggered("member", M.CONNECTED, "pieces", P.FINISHED, "complete", "member_done"),
    StateTriggered("room", R.OPEN, "members", M.DONE, "all_done", "room_all_done"),
    StateTriggered("room", R.GOODBYE, "members", M.GOODBYE, "close", "room_closed"),
)
"""Every state-triggered transition, in the order the host records them when several are due
at once (a member done, then the room all done)."""
