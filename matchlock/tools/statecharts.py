"""Export the machines of :mod:`matchlock.core.machines` as statecharts other tools can read.

For each machine, two texts are generated from the ``transitions`` machine itself (not from a
copy of its definition): a Mermaid ``stateDiagram-v2`` (``piece.mmd``) for people and a
language-neutral JSON definition (``piece.json``) for clients in other languages. The files in
``statecharts/`` are these texts; ``matchlock statecharts`` rewrites them and
``matchlock statecharts --check`` (and a test) fails when they drift from the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matchlock.core.machines import MACHINES, STATE_TRIGGERED, MachineSpec

__all__ = [
    "check_statecharts",
    "machine_json",
    "machine_mermaid",
    "statechart_files",
    "write_statecharts",
]


def _edges(spec: MachineSpec[Any]) -> list[tuple[str, str, str]]:
    """(source, trigger, dest) for every transition of the ``transitions`` machine."""
    machine = spec.checker()
    edges: list[tuple[str, str, str]] = []
    for trigger, event in machine.events.items():
        for source, moves in event.transitions.items():
            edges.extend((source, trigger, move.dest or source) for move in moves)
    return edges


def machine_json(spec: MachineSpec[Any]) -> str:
    """The JSON definition: name, states, initial state, every transition, and the
    state-triggered ones (``state_triggered``: the trigger fires by itself, recorded as
    ``event``, once every one of the machine's ``parts`` is in ``all_in``)."""
    machine = spec.checker()
    document = {
        "machine": spec.name,
        "initial": machine.initial,
        "states": list(machine.states),
        "final": [s for s in machine.states if not any(e[0] == s for e in _edges(spec))],
        "transitions": [
            {"source": source, "trigger": trigger, "dest": dest}
            for source, trigger, dest in _edges(spec)
        ],
        "state_triggered": [
            {
                "source": rule.state,
                "trigger": rule.trigger,
                "when_every": rule.parts,
                "is": rule.all_in,
                "event": rule.event,
            }
            for rule in STATE_TRIGGERED
            if rule.machine == spec.name
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def machine_mermaid(spec: MachineSpec[Any]) -> str:
    """The Mermaid ``stateDiagram-v2`` text of the machine."""
    machine = spec.checker()
    lines = ["stateDiagram-v2", f"    [*] --> {machine.initial}"]
    lines += [f"    {source} --> {dest}: {trigger}" for source, trigger, dest in _edges(spec)]
    finals = [s for s in machine.states if not any(e[0] == s for e in _edges(spec))]
    lines += [f"    {state} --> [*]" for state in finals]
    lines += [
        f"    note right of {rule.state}: {rule.trigger} by itself once every {rule.parts[:-1]}"
        f" is {rule.all_in}"
        for rule in STATE_TRIGGERED
        if rule.machine == spec.name
    ]
    return "\n".join(lines) + "\n"


def statechart_files() -> dict[str, str]:
    """Every statechart file's name and its text, as generated from the code now."""
    files = {}
    for spec in MACHINES:
        files[f"{spec.name}.mmd"] = machine_mermaid(spec)
        files[f"{spec.name}.json"] = machine_json(spec)
    return files


def write_statecharts(folder: Path) -> list[Path]:
    """Write every statechart into ``folder``; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in statechart_files().items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check_statecharts(folder: Path) -> list[str]:
    """The names of the files in ``folder`` that are missing or differ from the code."""
    return [
        name
        for name, text in statechart_files().items()
        if not (folder / name).is_file() or (folder / name).read_text(encoding="utf-8") != text
    ]
