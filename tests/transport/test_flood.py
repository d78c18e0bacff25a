"""The count behind both flood checks (websocket pings, TCP keepalives), on given times."""

from __future__ import annotations

from matchlock.transport.limits import Flood


def test_more_than_most_within_the_window_is_a_flood() -> None:
    flood = Flood("pings", 3, 10.0)
    assert [flood.heard(t) for t in (0.0, 1.0, 2.0, 9.9)] == [False, False, False, True]
    assert str(flood) == "over 3 pings in 10 s"


def test_the_count_starts_again_once_the_window_has_passed() -> None:
    flood = Flood("keepalives", 2, 10.0)
    assert not any(flood.heard(t) for t in (0.0, 5.0, 10.0, 15.0, 20.0, 25.0))
    assert flood.heard(26.0)  # the third in the window opened at 20
