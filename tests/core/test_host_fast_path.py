"""The host core's shortcuts for the frame it handles most, a member's progress report, and
for what it asks after each event: each gives exactly what the long way gives.

- ``reports.stamped_progress`` reads a report only when the strict decode would read the same
  values from it, and builds the event ``restamped`` makes of the decoded one (same fields, same
  fields set, same JSON);
- a host fed a room's reports in the encoding members send hands back the same bytes (frames,
  log lines, refusals) as one fed the same reports in an encoding only the strict decode reads;
- nothing is due after a legal ``piece_progress`` (the host no longer asks), and ``next_due``,
  asked after every event of a room (its hint of the part last found behind kept between
  asks), says what a fresh fold of the same events says.
"""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol
from matchlock.core.host import HostProtocol
from matchlock.core.hosted import HostOutput, event_json, restamped
from matchlock.core.reports import stamped_progress
from matchlock.core.room import Room, next_due
from matchlock.store.eventlog import EventLog
from matchlock.tools.testing import insecure_key, pinned, signed_room
from tests.core.strategies import CONFIG as STRATEGY_CONFIG
from tests.core.strategies import PIECES, USERS, room_histories

NAME = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.\-]{0,70}\Z")
NUMBER = st.one_of(
    st.integers(-(10**17), 10**17),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e300, 1.5e-7]),
)


def frame(event: dict[str, object], first: str = "v", outer_first: bool = True) -> bytes:
    """A report of ``event`` as compact JSON, the event's keys starting at ``first``."""
    keys = list(event)
    keys = keys[keys.index(first) :] + keys[: keys.index(first)] if first in keys else keys
    body = {key: event[key] for key in keys}
    report = {"type": "report", "event": body} if outer_first else {"event": body, "type": "report"}
    return json.dumps(report, separators=(",", ":")).encode()


@given(
    user=NAME,
    piece=st.tuples(NAME, NAME).map("/".join),
    done=NUMBER,
    at=NUMBER,
    version=st.sampled_from([1, 1, 2]),
    first=st.sampled_from(["v", "type", "at"]),
    extra=st.sampled_from([b"", b" ", b"\n"]),
)
@example(user="u0", piece="chars/p", done=12, at=0.0, version=1, first="type", extra=b"")
@example(user="a" * 64, piece="b" * 64 + "/" + "c" * 64, done=10**15 - 1, at=-12.5, version=1,
         first="v", extra=b"")  # fmt: skip
@example(user="a" * 65, piece="chars/p", done=5, at=0.0, version=1, first="v", extra=b"")
@example(user="u", piece="b" * 65 + "/" + "c" * 64, done=5, at=0.0, version=1, first="v",
         extra=b"")  # fmt: skip
def test_a_report_read_by_the_shortcut_is_what_the_strict_decode_reads(
    *, user: str, piece: str, done: object, at: object, version: int, first: str, extra: bytes
) -> None:
    event = {"v": version, "at": at, "type": "piece_progress", "user_id": user, "piece": piece}
    data = frame({**event, "done": done}, first) + extra
    if stamped_progress(data, 1.0) is None:
        return
    decoded = pr.decode_client_message(data)
    assert isinstance(decoded, pr.Report) and isinstance(decoded.event, ev.PieceProgress)
    for stamp in (7.25, 3, 1764628800.123456):
        made, wanted = stamped_progress(data, stamp), restamped(decoded.event, stamp)
        assert made is not None and made == wanted
        assert list(made.__dict__.items()) == list(wanted.__dict__.items())
        assert made.model_fields_set == wanted.model_fields_set
        assert event_json(made) == event_json(wanted) == ev.EventAdapter.dump_json(wanted)


def test_the_shortcut_reads_what_members_send_and_nothing_else() -> None:
    sent = ev.PieceProgress(at=1.5, user_id="alice", piece="chars/kfm", done=24000)
    member = pr.encode(pr.Report(event=sent))
    assert stamped_progress(member, 1.5) == sent
    started = pr.encode(pr.Report(event=ev.PieceStarted(at=1.5, user_id="a", piece="c/p")))
    twice = member.replace(b'"done":24000', b'"done":1,"done":24000')
    escaped = member.replace(b'"alice"', b'"\\u0061lice"')
    for other in (started, twice, escaped, member.replace(b'"v":1', b'"v":2'), member + b" "):
        assert stamped_progress(other, 1.5) is None


USERS_HERE = ("ann", "ben")
CONFIG = signed_room("fast", USERS_HERE, pinned({"chars/a": 100, "chars/b": 50}))


def joined_host() -> tuple[HostProtocol, EventLog, dict[str, int], list[bytes]]:
    """A host whose room's two members joined, the room's log, their connections, and every
    frame the host sent so far."""
    host, log = HostProtocol(), EventLog.in_memory("room/fast")
    sent: list[bytes] = []
    conns = {}
    for conn, user in enumerate(USERS_HERE, start=1):
        client = ClientProtocol(CONFIG, user, insecure_key(user))
        host.connect(conn, conn.to_bytes(16, "big"))
        challenge = keep(host.receive(conn, client.hello(), 1.0), log, sent)
        answer = client.receive(challenge.sends[0][1]).sends[0]
        keep(host.receive(conn, answer, 1.0), log, sent)
        conns[user] = conn
    return host, log, conns, sent


def keep(out: HostOutput, log: EventLog, sent: list[bytes]) -> HostOutput:
    for _, event, body in out.events:
        log.buffer_json(event, body)
    sent += [b"%d %s" % (conn, data) for conn, data in out.sends]
    sent.append(repr((out.closes, out.diagnostics)).encode())
    return out


def test_a_room_fed_reports_the_short_way_hands_back_what_the_long_way_does() -> None:
    reports: list[tuple[str, str, str, dict[str, object]]] = [
        ("ann", "piece_started", "chars/a", {}),
        ("ann", "piece_progress", "chars/a", {"done": 10}),
        ("ann", "piece_progress", "chars/a", {"done": 60}),
        ("ann", "piece_progress", "chars/a", {"done": 40}),  # backwards: illegal
        ("ann", "piece_progress", "chars/a", {"done": 101}),  # past the piece's size
        ("ben", "piece_progress", "chars/a", {"done": 5}),  # not started: illegal
        ("ann", "piece_progress", "chars/z", {"done": 5}),  # not a piece of the room
        ("ben", "piece_progress", "chars/b", {"done": 5, "user_id": "ann"}),  # not ben's
        ("ann", "piece_progress", "chars/a", {"done": 100}),
        ("ann", "piece_finished", "chars/a", {"source": "cache"}),
        ("ann", "piece_progress", "chars/a", {"done": 100}),  # finished: illegal
    ]
    short, long_ = joined_host(), joined_host()
    taken = 0
    for at, (user, kind, piece, more) in enumerate(reports, start=2):
        event = {"v": 1, "at": 0.0, "type": kind, "user_id": user, "piece": piece, **more}
        fast, slow = frame(event), frame(event, outer_first=False)
        assert stamped_progress(slow, 1.0) is None
        taken += stamped_progress(fast, 1.0) is not None
        for (host, log, conns, sent), data in ((short, fast), (long_, slow)):
            keep(host.receive(conns[user], data, float(at)), log, sent)
    assert taken == 9
    assert short[3] == long_[3]
    lines = short[1].take()
    assert lines == long_[1].take()
    recorded = [json.loads(line).get("event", {}).get("type") for line in lines]
    assert recorded.count("piece_progress") == 3
    assert recorded.count("member_refused") == 6


@given(room_histories(max_steps=120))
def test_nothing_is_due_after_progress_and_next_due_asked_all_along_is_a_fresh_folds(
    history: tuple[list[ev.Event], list[ev.Event]],
) -> None:
    events, _ = history
    room = Room()
    for count, event in enumerate(events, start=1):
        room.apply(event)
        if isinstance(event, ev.PieceProgress):
            assert next_due(room, event.user_id, 9.0) is None
        fresh = Room()
        for past in events[:count]:
            fresh.apply(past)
        for user in USERS:
            assert next_due(room, user, 9.0) == next_due(fresh, user, 9.0)


def test_next_due_sees_the_part_it_found_behind_catch_up() -> None:
    room = Room()
    room.apply(ev.RoomOpened(at=0.0, config=STRATEGY_CONFIG))
    asked = []
    for user in USERS:
        room.apply(ev.MemberJoined(at=1.0, user_id=user))
    for user in USERS:
        for piece in PIECES:
            asked.append(next_due(room, user, 2.0))  # found behind: this piece, this member
            room.apply(ev.PieceFinished(at=2.0, user_id=user, piece=piece, source="cache"))
        due = next_due(room, user, 2.0)
        assert due == ev.MemberDone(at=2.0, user_id=user)
        room.apply(due)
    assert next_due(room, USERS[0], 3.0) == ev.RoomAllDone(at=3.0)
    assert asked == [None] * len(USERS) * len(PIECES)


def test_stamped_events_share_a_fields_set_that_copying_one_leaves_alone() -> None:
    data = pr.encode(pr.Report(event=ev.PieceProgress(at=0, user_id="a", piece="c/p", done=1)))
    first, second = stamped_progress(data, 1.0), stamped_progress(data, 2.0)
    assert first is not None and second is not None
    fields = set(second.model_fields_set)
    copied = first.model_copy(update={"done": 2})
    stamped = restamped(first, 3.0)
    assert (copied.done, stamped.at, first.done, first.at) == (2, 3.0, 1, 1.0)
    assert second.model_fields_set == fields == set(ev.PieceProgress.model_fields)
    assert copied.model_fields_set == stamped.model_fields_set == fields
