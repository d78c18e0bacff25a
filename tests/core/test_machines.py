"""The compiled transition tables agree with ``transitions``, and the statecharts with the code."""

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from transitions import MachineError

from matchlock.core.errors import IllegalEventError
from matchlock.core.machines import MACHINES, MEMBER, PIECE, ROOM, MachineSpec
from matchlock.tools.statecharts import (
    check_statecharts,
    machine_json,
    statechart_files,
    write_statecharts,
)

STATECHARTS = Path(__file__).resolve().parents[2] / "statecharts"


class Model:
    state: str


@pytest.mark.parametrize("spec", MACHINES, ids=lambda s: s.name)
@given(data=st.data())
def test_compiled_table_matches_transitions(spec: MachineSpec[Any], data: st.DataObject) -> None:
    model = Model()
    spec.checker(model)
    ours = spec.initial
    for trigger in data.draw(st.lists(st.sampled_from(spec.triggers()), max_size=30)):
        try:
            getattr(model, trigger)()
        except MachineError:
            with pytest.raises(IllegalEventError):
                spec.next_state(ours, trigger, "x")
        else:
            ours = spec.next_state(ours, trigger, "x")
        assert ours == model.state


def test_every_state_and_trigger_is_reachable_in_the_table() -> None:
    for spec in MACHINES:
        assert {s for s, _ in spec.table} | set(spec.table.values()) == set(spec.states)
        assert {t for _, t in spec.table} == set(spec.triggers())


def test_illegal_trigger_names_machine_subject_state_and_trigger() -> None:
    with pytest.raises(IllegalEventError) as caught:
        PIECE.next_state("finished", "start", "alice chars/kfm")
    assert (caught.value.machine, caught.value.subject) == ("piece", "alice chars/kfm")
    assert (caught.value.state, caught.value.trigger) == ("finished", "start")
    assert "'start' is not legal in state 'finished'" in str(caught.value)


def test_design_paths() -> None:
    walk = [
        ("start", "in_progress"),
        ("fail", "error"),
        ("retry", "not_started"),
        ("finish", "finished"),
    ]
    state = PIECE.initial
    for trigger, expected in walk:
        state = PIECE.next_state(state, trigger, "p")
        assert state == expected
    member = MEMBER.initial
    for trigger in ("join", "disconnect", "join", "complete", "goodbye"):
        member = MEMBER.next_state(member, trigger, "m")
    assert member == "goodbye"
    assert ROOM.next_state("goodbye", "goodbye", "r") == "goodbye"


def test_statecharts_in_repo_match_the_code() -> None:
    assert check_statecharts(STATECHARTS) == [], "run `matchlock statecharts` to regenerate"


def test_statechart_drift_is_detected(tmp_path: Path) -> None:
    write_statecharts(tmp_path)
    assert check_statecharts(tmp_path) == []
    (tmp_path / "piece.json").write_text(machine_json(PIECE).replace("finished", "done"))
    assert check_statecharts(tmp_path) == ["piece.json"]


def test_statecharts_describe_every_transition() -> None:
    files = statechart_files()
    for spec in MACHINES:
        mermaid = files[f"{spec.name}.mmd"]
        for (source, trigger), dest in spec.table.items():
            assert f"    {source} --> {dest}: {trigger}\n" in mermaid
