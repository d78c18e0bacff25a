"""The state-triggered transitions (``machines.STATE_TRIGGERED``): the host records exactly the
events that are due, and the fold accepts exactly those."""

from __future__ import annotations

from hypothesis import given

from matchlock.core import events as ev
from matchlock.core.errors import IllegalEventError
from matchlock.core.machines import STATE_TRIGGERED, MemberStatus, RoomStatus
from matchlock.core.room import Room, next_due, replay
from tests.core.strategies import CONFIG, USERS, room_histories


def legal(history: list[ev.Event], event: ev.Event) -> bool:
    room = Room()
    for past in history:
        room.apply(past)
    try:
        room.apply(event)
    except IllegalEventError:
        return False
    return True


@given(room_histories())
def test_what_is_due_is_legal_and_what_is_legal_is_due(
    history: tuple[list[ev.Event], list[ev.Event]],
) -> None:
    events, _ = history
    room = Room()
    for event in events:
        room.apply(event)
    for user in USERS:
        due = next_due(room, user, 99.0)
        if due is not None:
            assert legal(events, due), due
        done_is_legal = legal(events, ev.MemberDone(at=99.0, user_id=user))
        all_done_is_legal = legal(events, ev.RoomAllDone(at=99.0))
        closed_is_legal = legal(events, ev.RoomClosed(at=99.0))
        if done_is_legal or all_done_is_legal or closed_is_legal:
            assert due is not None, (user, replay(events))


def test_a_member_done_then_the_room_all_done_in_table_order() -> None:
    assert [rule.event for rule in STATE_TRIGGERED] == [
        "member_done",
        "room_all_done",
        "room_closed",
    ]


def test_nothing_is_due_in_a_download_log_or_an_ended_room() -> None:
    download = Room()
    download.apply(ev.DownloadOpened(at=0, user_id="me", sizes={}))
    assert download.members["me"].status == MemberStatus.CONNECTED
    assert next_due(download, "me", 1.0) is None  # a download job ends with download_closed
    room = Room()
    room.apply(ev.RoomOpened(at=0, config=CONFIG))
    room.apply(ev.RoomAborted(at=1, reason="deadline"))
    assert room.status == RoomStatus.ABORTED
    assert all(next_due(room, user, 2.0) is None for user in USERS)
