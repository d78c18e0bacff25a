"""Every rule of the fold, refused one by one: the error names the machine, the subject, the state
it was in, the trigger and why, and the room is exactly as it was before."""

from __future__ import annotations

import pytest

from matchlock.core import events as ev
from matchlock.core.errors import IllegalEventError
from matchlock.core.room import Room
from matchlock.tools.testing import pinned, signed_room

CONFIG = signed_room("r1", ("alice", "bob"), pinned({"chars/kfm": 100, "stages/dojo": 50}))
OPENED = ev.RoomOpened(at=0, config=CONFIG)
DOWNLOAD = ev.DownloadOpened(at=0, sizes={"chars/kfm": 100})


def started(user: str, piece: str) -> ev.PieceStarted:
    return ev.PieceStarted(at=1, user_id=user, piece=piece)


def finished(user: str, piece: str) -> ev.PieceFinished:
    return ev.PieceFinished(at=1, user_id=user, piece=piece, source="cache")


def member_has_everything(user: str) -> list[ev.Event]:
    return [
        ev.MemberJoined(at=1, user_id=user),
        finished(user, "chars/kfm"),
        finished(user, "stages/dojo"),
        ev.MemberDone(at=1, user_id=user),
    ]


ALICE_IN: list[ev.Event] = [OPENED, ev.MemberJoined(at=1, user_id="alice")]
ALICE_DONE: list[ev.Event] = [OPENED, *member_has_everything("alice")]
BOTH_DONE: list[ev.Event] = [*ALICE_DONE, *member_has_everything("bob"), ev.RoomAllDone(at=2)]

# (what happened, the event refused, machine, subject, state, trigger, why)
CASES: list[tuple[str, list[ev.Event], ev.Event, tuple[str, str, str, str, str]]] = [
    (
        "nothing before the log opens",
        [],
        ev.MemberJoined(at=1, user_id="alice"),
        ("room", "(not opened)", "empty", "join", "the log must open first"),
    ),
    (
        "a room opens once",
        [OPENED],
        OPENED,
        ("room", "r1", "open", "open", "already opened"),
    ),
    (
        "a download job opens once",
        [DOWNLOAD],
        DOWNLOAD,
        ("room", "download", "open", "open", "already opened"),
    ),
    (
        "a download job ends once",
        [DOWNLOAD, ev.DownloadClosed(at=1)],
        ev.DownloadClosed(at=2),
        ("room", "download", "closed", "end", "the room has ended"),
    ),
    (
        "a room is not ended as a download",
        [OPENED],
        ev.DownloadClosed(at=1),
        ("room", "r1", "open", "end", "not a download log"),
    ),
    (
        "a download job has no all-done",
        [DOWNLOAD],
        ev.RoomAllDone(at=1),
        ("room", "download", "open", "all_done", "not a room log"),
    ),
    (
        "an ended room is not aborted again",
        [OPENED, ev.RoomAborted(at=1, reason="deadline")],
        ev.RoomAborted(at=2, reason="deadline"),
        ("room", "r1", "aborted", "abort", "the room has ended"),
    ),
    (
        "only expected users join",
        [OPENED],
        ev.MemberJoined(at=1, user_id="mallory"),
        ("member", "mallory", "unknown", "join", "not an expected user"),
    ),
    (
        "nobody joins an ended room",
        [OPENED, ev.RoomAborted(at=1, reason="deadline")],
        ev.MemberJoined(at=2, user_id="alice"),
        ("room", "r1", "aborted", "join", "the room has ended"),
    ),
    (
        "only the room's pieces",
        ALICE_IN,
        started("alice", "chars/ryu"),
        ("piece", "alice chars/ryu", "unknown", "start", "not a piece of this room"),
    ),
    (
        "only connected members report",
        [OPENED],
        started("alice", "chars/kfm"),
        ("member", "alice", "expected", "start", "not connected"),
    ),
    (
        "progress never goes backwards",
        [
            *ALICE_IN,
            started("alice", "chars/kfm"),
            ev.PieceProgress(at=1, user_id="alice", piece="chars/kfm", done=10),
        ],
        ev.PieceProgress(at=1, user_id="alice", piece="chars/kfm", done=5),
        ("piece", "alice chars/kfm", "in_progress", "progress", "progress 5 outside 10..100"),
    ),
    (
        "a member is done only with every piece finished",
        [*ALICE_IN, finished("alice", "chars/kfm")],
        ev.MemberDone(at=1, user_id="alice"),
        ("member", "alice", "connected", "complete", "pieces not finished: stages/dojo"),
    ),
    (
        "the room is all done only when every member is",
        ALICE_DONE,
        ev.RoomAllDone(at=2),
        ("room", "r1", "open", "all_done", "members not done: bob"),
    ),
    (
        "the room closes only after every goodbye",
        [*BOTH_DONE, ev.MemberGoodbye(at=3, user_id="alice")],
        ev.RoomClosed(at=3),
        ("room", "r1", "goodbye", "close", "members not goodbye: bob"),
    ),
]


@pytest.mark.parametrize(
    ("before", "event", "refused"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_rule_refuses_with_its_reason_and_changes_nothing(
    before: list[ev.Event], event: ev.Event, refused: tuple[str, str, str, str, str]
) -> None:
    room = Room()
    for earlier in before:
        room.apply(earlier)
    snapshot = room.snapshot()
    with pytest.raises(IllegalEventError) as caught:
        room.apply(event)
    error = caught.value
    assert (error.machine, error.subject, error.state, error.trigger, error.why) == refused
    assert room.snapshot() == snapshot


def test_a_download_job_is_one_connected_member_in_a_room_called_download() -> None:
    room = Room()
    room.apply(ev.DownloadOpened(at=0, user_id="local", sizes={"chars/kfm": 100}))
    state = room.snapshot()
    assert (state.kind, state.room_id, state.status) == ("download", "download", "open")
    assert list(state.members) == ["local"]
    assert state.members["local"].status == "connected"
    room.apply(ev.DownloadClosed(at=1))
    assert room.snapshot().status == "closed"


def test_a_snapshot_shows_each_piece_s_status_bytes_size_and_source() -> None:
    room = Room()
    for event in [
        *ALICE_IN,
        started("alice", "chars/kfm"),
        ev.PieceProgress(at=1, user_id="alice", piece="chars/kfm", done=40),
        finished("alice", "stages/dojo"),
    ]:
        room.apply(event)
    pieces = room.snapshot().members["alice"].pieces
    kfm, dojo = pieces["chars/kfm"], pieces["stages/dojo"]
    assert (kfm.status, kfm.done, kfm.size, kfm.source) == ("in_progress", 40, 100, "")
    assert (dojo.status, dojo.done, dojo.size, dojo.source) == ("finished", 50, 50, "cache")


def test_a_failed_piece_can_be_retried_and_starts_over() -> None:
    room = Room()
    failure = ev.ResolvableFailure(index=0, url="https://a.example/kfm.zip", reason="404")
    for event in [
        *ALICE_IN,
        started("alice", "chars/kfm"),
        ev.PieceProgress(at=1, user_id="alice", piece="chars/kfm", done=40),
        ev.PieceFailed(at=1, user_id="alice", piece="chars/kfm", failures=(failure,)),
    ]:
        room.apply(event)
    failed = room.snapshot().members["alice"].pieces["chars/kfm"]
    assert (failed.status, failed.failures) == ("error", (failure,))
    room.apply(ev.PieceRetried(at=2, user_id="alice", piece="chars/kfm"))
    again = room.snapshot().members["alice"].pieces["chars/kfm"]
    assert (again.status, again.done, again.source, again.failures) == ("not_started", 0, "", ())
