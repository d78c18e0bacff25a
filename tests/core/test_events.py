"""Every event round-trips through JSON; unknown or malformed events are typed errors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from matchlock.core import events as ev
from matchlock.core.room import Room
from tests.core.strategies import OPENED, candidate_events, room_histories


@given(room_histories(max_steps=30), st.data())
def test_every_event_round_trips(
    history: tuple[list[ev.Event], list[ev.Event]], data: st.DataObject
) -> None:
    legal, illegal = history
    room = Room()
    extra = [data.draw(candidate_events(room, 0.5)) for _ in range(5)]
    for event in legal + illegal + extra:
        text = ev.EventAdapter.dump_json(event)
        assert ev.EventAdapter.validate_json(text) == event


def test_room_opened_round_trips_with_its_signed_config() -> None:
    assert ev.EventAdapter.validate_json(ev.EventAdapter.dump_json(OPENED)) == OPENED


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "piece_exploded", "at": 1}',
        b'{"type": "piece_progress", "at": 1, "user_id": "a", "piece": "chars/k", "done": -1}',
        b'{"type": "piece_progress", "at": 1, "user_id": "a", "piece": "../etc", "done": 1}',
        b'{"type": "member_joined", "at": 1, "user_id": "a", "extra": 1}',
        b'{"type": "member_joined"}',
        b'{"type": "member_joined", "at": NaN, "user_id": "a"}',
        b'{"type": "member_joined", "at": Infinity, "user_id": "a"}',
        b'{"type": "room_aborted", "at": 1, "reason": "%s"}' % (b"r" * (ev.MAX_REASON_LENGTH + 1)),
        b'{"type": "piece_failed", "at": 1, "user_id": "a", "piece": "c/p", "failures": [%s]}'
        % b",".join([b'{"index": 0, "url": "u", "reason": "r"}'] * (ev.MAX_FAILURES + 1)),
    ],
)
def test_malformed_events_are_validation_errors(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        ev.EventAdapter.validate_json(raw)


def test_every_event_type_is_in_the_union() -> None:
    types = {cls.model_fields["type"].default for cls in ev._Event.__subclasses__()}
    union = set(ev.EventAdapter.json_schema()["discriminator"]["mapping"])
    assert types == union


@given(st.text(), st.integers(3, 50))
def test_clip_keeps_short_text_and_both_ends_of_long_text(text: str, limit: int) -> None:
    clipped = ev.clip(text, limit)
    assert len(clipped) <= limit
    if len(text) <= limit:
        assert clipped == text
    else:
        tail = (limit - 3) // 2
        head = limit - 3 - tail
        assert clipped[:head] == text[:head] and clipped[head : head + 3] == " … "
        assert clipped[head + 3 :] == text[len(text) - tail :]
