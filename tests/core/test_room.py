"""The fold: legal histories build the expected state, illegal events change nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matchlock.core import events as ev
from matchlock.core.errors import IllegalEventError, SignatureError
from matchlock.core.room import Room, replay
from tests.core.strategies import CONFIG, OPENED, PIECES, USERS, candidate_events, room_histories


def happy_path() -> list[ev.Event]:
    """Every user joins, gets every piece (kfm from a mirror after one failure), says goodbye."""
    events: list[ev.Event] = [OPENED]
    for user in USERS:
        events.append(ev.MemberJoined(at=1, user_id=user))
        for key in PIECES:
            events.append(ev.PieceStarted(at=2, user_id=user, piece=key))
            if key == "chars/kfm":
                failure = ev.ResolvableFailure(index=0, url="https://a.example/k.zip", reason="404")
                events.append(ev.PieceProgress(at=2, user_id=user, piece=key, done=40))
                events.append(ev.ResolvableFailed(at=3, user_id=user, piece=key, failure=failure))
                events.append(ev.PieceProgress(at=3, user_id=user, piece=key, done=100))
            events.append(
                ev.PieceFinished(at=4, user_id=user, piece=key, source="https://b.example")
            )
        events.append(ev.MemberDone(at=5, user_id=user))
    events.append(ev.RoomAllDone(at=6))
    events += [ev.MemberGoodbye(at=7, user_id=u) for u in USERS]
    events.append(ev.RoomClosed(at=8))
    return events


def test_happy_path_closes_the_room() -> None:
    state = replay(happy_path())
    assert state.status == "closed"
    assert state.events == len(happy_path())
    for member in state.members.values():
        assert member.status == "goodbye"
        kfm = member.pieces["chars/kfm"]
        assert (kfm.status, kfm.done, kfm.source) == ("finished", 100, "https://b.example")
        assert [f.reason for f in kfm.failures] == ["404"]


def test_room_opens_only_from_a_config_every_user_signed() -> None:
    unsigned = CONFIG.model_copy(update={"signatures": {"alice": CONFIG.signatures["alice"]}})
    with pytest.raises(SignatureError) as caught:
        replay([ev.RoomOpened(at=0, config=unsigned)])
    assert caught.value.missing == ["bob", "carol"]


@pytest.mark.parametrize(
    ("prefix", "event", "why"),
    [
        ([], ev.MemberJoined(at=1, user_id="alice"), "the log must open first"),
        ([OPENED], OPENED, "already opened"),
        ([OPENED], ev.MemberJoined(at=1, user_id="mallory"), "not an expected user"),
        ([OPENED], ev.PieceStarted(at=1, user_id="alice", piece="chars/kfm"), "not connected"),
        (
            [OPENED, ev.MemberJoined(at=1, user_id="alice")],
            ev.PieceStarted(at=1, user_id="alice", piece="chars/zzz"),
            "not a piece of this room",
        ),
        (
            [
                OPENED,
                ev.MemberJoined(at=1, user_id="alice"),
                ev.PieceStarted(at=1, user_id="alice", piece="chars/kfm"),
            ],
            ev.PieceProgress(at=1, user_id="alice", piece="chars/kfm", done=101),
            "progress 101 outside 0..100",
        ),
        (
            [
                OPENED,
                ev.MemberJoined(at=1, user_id="alice"),
                ev.PieceStarted(at=1, user_id="alice", piece="chars/kfm"),
                ev.PieceProgress(at=1, user_id="alice", piece="chars/kfm", done=50),
            ],
            ev.PieceProgress(at=1, user_id="alice", piece="chars/kfm", done=49),
            "progress 49 outside 50..100",
        ),
        (
            [OPENED, ev.MemberJoined(at=1, user_id="alice")],
            ev.MemberDone(at=1, user_id="alice"),
            "pieces not finished",
        ),
        (
            [OPENED, ev.MemberJoined(at=1, user_id="alice")],
            ev.FolderRejected(
                at=1, user_id="alice", piece="chars/kfm", folder="/g", where="engine", reason="x"
            ),
            "'reject_folder' is not legal in state 'not_started'",
        ),
        ([OPENED], ev.RoomAllDone(at=1), "members not done: alice, bob, carol"),
        ([OPENED], ev.RoomClosed(at=1), "'close' is not legal in state 'open'"),
        (
            [OPENED, ev.RoomAborted(at=1, reason="x")],
            ev.MemberJoined(at=1, user_id="alice"),
            "the room has ended",
        ),
        ([OPENED], ev.DownloadClosed(at=1), "not a download log"),
    ],
)
def test_illegal_event_is_named_and_changes_nothing(
    prefix: list[ev.Event], event: ev.Event, why: str
) -> None:
    room = Room()
    for earlier in prefix:
        room.apply(earlier)
    before = room.snapshot()
    with pytest.raises(IllegalEventError) as caught:
        room.apply(event)
    assert why in str(caught.value)
    assert room.snapshot() == before


def test_goodbye_needs_done_and_moves_the_room() -> None:
    events = happy_path()
    first_goodbye = next(i for i, e in enumerate(events) if e.type == "member_goodbye")
    state = replay(events[: first_goodbye + 1])
    assert state.status == "goodbye"
    assert state.members["alice"].status == "goodbye"
    assert state.members["bob"].status == "done"


def test_download_log_has_one_connected_member() -> None:
    events: list[ev.Event] = [
        ev.DownloadOpened(at=0, sizes={"chars/kfm": 10}),
        ev.PieceStarted(at=1, user_id="local", piece="chars/kfm"),
        ev.PieceFailed(at=2, user_id="local", piece="chars/kfm"),
        ev.DownloadClosed(at=3),
    ]
    state = replay(events)
    assert (state.kind, state.status) == ("download", "closed")
    assert state.members["local"].status == "connected"
    assert state.members["local"].pieces["chars/kfm"].status == "error"


def test_refusals_are_recorded_without_changing_members() -> None:
    room = Room()
    room.apply(OPENED)
    members = room.snapshot().members
    room.apply(
        ev.MemberRefused(at=1, user_id="mallory", code="unknown-user", reason="not expected")
    )
    after = room.snapshot()
    assert after.members == members
    assert [(r.user_id, r.code) for r in after.refusals] == [("mallory", "unknown-user")]


@given(room_histories())
def test_replay_is_deterministic_and_every_prefix_replays(
    history: tuple[list[ev.Event], list[ev.Event]],
) -> None:
    legal, _ = history
    assert replay(legal) == replay(legal)
    for end in range(1, len(legal) + 1):
        replay(legal[:end])


@given(room_histories(max_steps=40), st.data())
def test_illegal_events_never_change_state(
    history: tuple[list[ev.Event], list[ev.Event]], data: st.DataObject
) -> None:
    legal, _ = history
    room = Room()
    for event in legal:
        room.apply(event)
    for step in range(20):
        before = room.snapshot()
        event = data.draw(candidate_events(room, 1000.0 + step))
        try:
            room.apply(event)
        except IllegalEventError:
            assert room.snapshot() == before


def test_a_failed_resolvable_restarts_the_piece_from_zero() -> None:
    key = "chars/kfm"
    failure = ev.ResolvableFailure(index=0, url="https://a.example/k.zip", reason="cut")
    events: list[ev.Event] = [
        OPENED,
        ev.MemberJoined(at=1, user_id="alice"),
        ev.PieceStarted(at=2, user_id="alice", piece=key),
        ev.PieceProgress(at=3, user_id="alice", piece=key, done=40),
        ev.ResolvableFailed(at=4, user_id="alice", piece=key, failure=failure),
    ]
    piece = replay(events).members["alice"].pieces[key]
    assert (piece.status, piece.done) == ("in_progress", 0)
    again = ev.PieceProgress(at=5, user_id="alice", piece=key, done=10)  # the next mirror's
    assert replay([*events, again]).members["alice"].pieces[key].done == 10
