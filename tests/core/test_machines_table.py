"""A machine's compiled table is exactly its rows: every source of a row, with the row's trigger,
leads to the row's destination, and nothing else is legal. Checked on machines defined while the
test runs (the room's own are built once, when ``matchlock.core.machines`` is imported)."""

from __future__ import annotations

import dataclasses

from matchlock.core.machines import (
    MACHINES,
    Transition,
    _rows,  # the notation the machine tables are written in
)


def table_of_rows(rows: tuple[Transition, ...]) -> dict[tuple[str, str], str]:
    """What the rows say, read directly (the first row for a source and trigger wins)."""
    table: dict[tuple[str, str], str] = {}
    for row in rows:
        for source in row.sources:
            table.setdefault((source, row.trigger), row.dest)
    return table


def test_a_machine_defined_again_compiles_to_exactly_its_rows() -> None:
    for spec in MACHINES:
        again = dataclasses.replace(spec)  # built now, from the same definition
        assert again.table is not spec.table
        assert dict(again.table) == table_of_rows(spec.rows) == dict(spec.table), spec.name


def test_a_row_with_one_source_names_that_one_state() -> None:
    assert _rows(("start", "not_started", "in_progress"), ("fail", ("a", "b"), "error")) == (
        Transition("start", ("not_started",), "in_progress"),
        Transition("fail", ("a", "b"), "error"),
    )
