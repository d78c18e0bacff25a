"""What a join builds by hand is what pydantic builds: a piece's frozen state
(``room._Piece.state``) is the ``PieceState.model_construct`` of its fields, and a name is refused
as a device name exactly when the device pattern matches (``config._no_double_dot`` asks the
pattern only of names whose first letters could start one)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from matchlock.core import config
from matchlock.core import events as ev
from matchlock.core.room import PieceState, _Piece

FAILURES = st.builds(
    ev.ResolvableFailure,
    index=st.integers(0, 9),
    url=st.text(max_size=20),
    reason=st.text(max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(
    status=st.sampled_from(["not_started", "in_progress", "finished", "error"]),
    done=st.integers(0, 1 << 40),
    size=st.integers(0, 1 << 40),
    source=st.text(max_size=10),
    failures=st.lists(FAILURES, max_size=3),
)
def test_a_piece_state_is_its_model_construct(
    status: str, done: int, size: int, source: str, failures: list[ev.ResolvableFailure]
) -> None:
    piece = _Piece(size)
    piece.status, piece.done, piece.source, piece.failures = status, done, source, failures  # type: ignore[assignment]
    state = piece.state()
    built = PieceState.model_construct(
        status=status, done=done, size=size, source=source, failures=tuple(failures)
    )
    assert state == built
    assert list(state.__dict__.items()) == list(built.__dict__.items())
    assert state.__pydantic_fields_set__ == built.__pydantic_fields_set__
    assert state.__pydantic_extra__ == built.__pydantic_extra__
    assert state.__pydantic_private__ == built.__pydantic_private__
    assert state.model_dump_json() == built.model_dump_json()
    assert piece.state().__pydantic_fields_set__ is not state.__pydantic_fields_set__
    with pytest.raises(ValidationError):
        state.done = 1  # type: ignore[misc]  # frozen, as ever


DEVICE_LIKE = st.from_regex(
    r"\A(?i:con|prn|aux|nul|com[0-9a]|lpt[0-9a]|co|cox)(\.[A-Za-z0-9.]{0,4})?\Z"
)


@settings(max_examples=500, deadline=None)
@given(name=st.one_of(DEVICE_LIKE, st.text(min_size=1, max_size=8)))
def test_a_device_name_is_refused_as_the_pattern_says(name: str) -> None:
    device = config._WINDOWS_DEVICES.match(name) is not None
    dots = ".." in name or name.endswith(".")
    try:
        config._no_double_dot(name)
    except ValueError as error:
        assert dots or (device and "device name" in str(error))
    else:
        assert not dots and not device
