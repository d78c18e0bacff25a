"""Clipping text a peer chose (reasons, keys): what fits is kept whole; what does not is cut in
the middle to exactly the limit, keeping its beginning (what it is about) and its end (why)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from matchlock.core.events import clip


@given(st.text(max_size=200), st.integers(4, 100))
def test_clipped_text_keeps_its_beginning_and_end_within_the_limit(text: str, limit: int) -> None:
    clipped = clip(text, limit)
    if len(text) <= limit:
        assert clipped == text
        return
    head, tail = (limit - 2) // 2, (limit - 3) // 2  # the beginning gets the odd character
    assert len(clipped) == limit
    assert clipped[:head] == text[:head]
    assert clipped[head : head + 3] == " … "
    assert clipped[limit - tail :] == text[len(text) - tail :]


def test_text_of_exactly_the_limit_is_kept_whole() -> None:
    assert clip("x" * 64, 64) == "x" * 64
    assert clip("abcdefghij", 9) == "abc … hij"
