"""The piece's turns decide from a failure's type alone: Transient (and a corrupt resume) goes
to the back of the line, a host found down and every other failure are not tried again."""

from __future__ import annotations

import pytest

from matchlock.downloads.resolvers import (
    Corrupt,
    CorruptAfterResume,
    FetchPolicy,
    HostUnreachable,
    NotFound,
    Refused,
    ResolveFailed,
    SourceError,
    TooLarge,
    Transient,
)
from matchlock.downloads.turns import Turns

POLICY = FetchPolicy(attempts=3, backoff=0.0, backoff_max=0.0)
SAME_REASON = "the same words for every type: only the type may decide"


@pytest.mark.parametrize(
    ("failure", "again"),
    [
        (Transient(SAME_REASON), "later"),
        (CorruptAfterResume(SAME_REASON), "later"),
        (HostUnreachable(SAME_REASON), "never"),
        (NotFound(SAME_REASON), "never"),
        (Corrupt(SAME_REASON), "never"),
        (TooLarge(SAME_REASON), "never"),
        (Refused(SAME_REASON), "never"),
        (SourceError(SAME_REASON), "never"),
    ],
)
async def test_a_failure_s_type_decides_when_it_is_tried_again(
    failure: ResolveFailed, again: str
) -> None:
    turns = Turns(2, POLICY)
    assert await turns.next() == 0
    assert turns.failed(0, failure) == again
    assert await turns.next() == 1
    assert turns.failed(1, NotFound("gone")) == "never"
    assert await turns.next() == (0 if again == "later" else None)


async def test_a_transient_failure_is_retried_at_once_when_nothing_else_is_left() -> None:
    turns = Turns(1, POLICY)
    for _ in range(POLICY.attempts - 1):
        assert await turns.next() == 0
        assert turns.failed(0, Transient("cut")) == "at_once"
    assert await turns.next() == 0
    assert turns.failed(0, Transient("cut")) == "never"  # attempts used up
    assert await turns.next() is None
