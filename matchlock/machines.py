"""The three state machines of a room: piece, member and room.

Each machine is data: its states, its initial state, and its transitions as
``(trigger, sources, destination)`` rows. The tables below are the single definition. From each
one a :class:`transitions.Machine` is built once (it is the checker and what the statecharts are
exported from), and from that machine a dict ``(state, trigger) -> state`` is compiled. Folding
events through the dict costs a lookup (~0.2 us) instead of a ``transitions`` trigger (~15 us),
and an instance of a machine is nothing but its current state (a string), so a room of thousands
of pieces costs no per-object machine setup. ``tests/test_machines.py`` proves, by property, that
the compiled table accepts and rejects exactly what ``transitions`` does.

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

Guards that need more than the state (a member is done only when every piece is finished,
progress never goes backwards) live in :mod:`matchlock.room`, which owns the data they read.
This module must stay pure: no IO, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from transitions import Machine

from matchlock.errors import IllegalEventError

__all__ = ["MACHINES", "MEMBER", "PIECE", "ROOM", "MachineSpec", "Transition"]


@dataclass(frozen=True)
class Transition:
    """One row of a machine: ``trigger`` moves any of ``sources`` to ``dest``."""

    trigger: str
    sources: tuple[str, ...]
    dest: str


@dataclass(frozen=True)
class MachineSpec:
    """A machine's definition, its ``transitions`` checker, and the table compiled from it."""

    name: str
    states: tuple[str, ...]
    initial: str
    rows: tuple[Transition, ...]
    table: Mapping[tuple[str, str], str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", _compile(self.checker()))

    def checker(self, model: Any = None) -> Machine:
        """A fresh :class:`transitions.Machine` for this definition (``model`` or the machine)."""
        return Machine(
            model=model if model is not None else Machine.self_literal,
            states=list(self.states),
            transitions=[
                {"trigger": row.trigger, "source": list(row.sources), "dest": row.dest}
                for row in self.rows
            ],
            initial=self.initial,
            auto_transitions=False,
            send_event=False,
        )

    def triggers(self) -> tuple[str, ...]:
        """Every trigger, in definition order, without repeats."""
        return tuple(dict.fromkeys(row.trigger for row in self.rows))

    def next_state(self, state: str, trigger: str, subject: str) -> str:
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
    return tuple(
        Transition(trigger, (sources,) if isinstance(sources, str) else sources, dest)
        for trigger, sources, dest in rows
    )


PIECE = MachineSpec(
    name="piece",
    states=("not_started", "in_progress", "finished", "error"),
    initial="not_started",
    rows=_rows(
        ("start", "not_started", "in_progress"),
        ("progress", "in_progress", "in_progress"),
        ("resolvable_failed", "in_progress", "in_progress"),
        ("reject_folder", "in_progress", "in_progress"),
        ("finish", ("not_started", "in_progress"), "finished"),
        ("fail", ("not_started", "in_progress"), "error"),
        ("retry", "error", "not_started"),
    ),
)
"""A member's piece: not started, in progress, finished, or error (which may be retried)."""

MEMBER = MachineSpec(
    name="member",
    states=("expected", "connected", "disconnected", "done", "goodbye"),
    initial="expected",
    rows=_rows(
        ("join", ("expected", "disconnected"), "connected"),
        ("complete", "connected", "done"),
        ("disconnect", ("connected", "done"), "disconnected"),
        ("goodbye", "done", "goodbye"),
    ),
)
"""A room member: expected until they prove who they are, then connected, done, goodbye."""

ROOM = MachineSpec(
    name="room",
    states=("open", "all_done", "goodbye", "closed", "aborted"),
    initial="open",
    rows=_rows(
        ("all_done", "open", "all_done"),
        ("goodbye", ("all_done", "goodbye"), "goodbye"),
        ("close", "goodbye", "closed"),
        ("abort", ("open", "all_done", "goodbye"), "aborted"),
        ("end", "open", "closed"),
    ),
)
"""A room (or a download job): open until everyone is done, then goodbye, then closed."""

MACHINES: tuple[MachineSpec, ...] = (PIECE, MEMBER, ROOM)
"""Every machine, in the order the docs present them."""
