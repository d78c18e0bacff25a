"""The join's frames written without a model (``challenge_frame``, ``answer_frame``,
``welcome_head``, the ``peer`` frame of :mod:`matchlock.core.transfers`) are the bytes
``protocol.encode`` makes of the same values, and a value the model refuses is refused as ever."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.transfers import _peer_frame

NAMES = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}\Z")
ANY_TEXT = st.text(max_size=300)


def encoded_as_its_model(model: Callable[[], BaseModel], frame: Callable[[], bytes]) -> None:
    """``frame()`` is the bytes ``encode`` makes of ``model()``, or both refuse the values."""
    try:
        expected = pr.encode(model())
    except ValidationError:
        with pytest.raises(ValidationError):
            frame()
        return
    assert frame() == expected


@settings(max_examples=300, deadline=None)
@given(nonce=st.one_of(st.from_regex(r"\A[0-9a-f]{32,256}\Z"), ANY_TEXT))
def test_a_challenge_is_encoded_as_its_model(nonce: str) -> None:
    encoded_as_its_model(lambda: pr.Challenge(nonce=nonce), lambda: pr.challenge_frame(nonce))


@settings(max_examples=300, deadline=None)
@given(signature=st.one_of(st.from_regex(r"\A[A-Za-z0-9+/=]{0,130}\Z"), ANY_TEXT))
def test_an_answer_is_encoded_as_its_model(signature: str) -> None:
    encoded_as_its_model(
        lambda: pr.Answer(signature=signature), lambda: pr.answer_frame(signature)
    )


@settings(max_examples=300, deadline=None)
@given(
    since=st.one_of(st.integers(0, 10**6), st.integers(), st.booleans()),
    protocol=st.one_of(st.integers(1, 3), st.integers(-2, 5)),
    serving=st.lists(st.one_of(NAMES, NAMES.map(lambda n: n + ".."), ANY_TEXT), max_size=4),
)
def test_a_welcome_head_is_encoded_as_its_model(
    since: int, protocol: int, serving: list[str]
) -> None:
    encoded_as_its_model(
        lambda: pr.Welcome(since=since, events=[], protocol=protocol, serving=tuple(serving)),
        lambda: pr.welcome_head(since, protocol, serving),
    )


@settings(max_examples=300, deadline=None)
@given(user=st.one_of(NAMES, NAMES.map(lambda n: n + "."), ANY_TEXT), serve=st.booleans())
def test_a_peer_frame_is_encoded_as_its_model(user: str, serve: bool) -> None:
    encoded_as_its_model(
        lambda: tm.Peer(user_id=user, serve=serve), lambda: _peer_frame(user, serve)
    )
