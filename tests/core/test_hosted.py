"""What a host holds of a room: only the last events when it is bounded (``held_events``), and a
welcome from further back deferred to a backfill the shell reads from the log, which welcomes
the member exactly as a host holding everything does."""

from __future__ import annotations

from pathlib import Path

import pytest

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol
from matchlock.core.host import HostOutput, HostProtocol
from matchlock.core.hosted import Backfill, History, event_json, restamped
from matchlock.store.eventlog import read_events
from matchlock.tools.testing import insecure_key, pinned, signed_room

CONFIG = signed_room("r1", ["ann", "ben"], pinned({"chars/kfm": 1 << 30}))


def progress(user: str, done: int) -> ev.PieceProgress:
    return ev.PieceProgress(at=1.0, user_id=user, piece="chars/kfm", done=done)


def test_history_holds_only_its_last_events_and_refuses_the_others() -> None:
    history = History(held=3)
    events = [progress("ann", n) for n in range(10)]
    for event in events:
        history.append(event, event_json(event))
    assert len(history) == 10
    assert history.start >= 5  # let go in blocks of at least ``held``
    assert history[-1] == events[-1]
    assert history[history.start :] == events[history.start :]
    assert history[8:] == events[8:]
    assert history.bodies(8) == [event_json(event) for event in events[8:]]
    with pytest.raises(LookupError):
        history.bodies(0)
    with pytest.raises(LookupError, match="read it from the room's log"):
        history[0:]
    with pytest.raises(LookupError):
        history[0]
    with pytest.raises(LookupError):
        list(history)
    with pytest.raises(IndexError):
        history[10]


def test_an_unbounded_history_is_every_event() -> None:
    history = History()
    events = [progress("ann", n) for n in range(300)]
    for event in events:
        history.append(event, event_json(event))
    assert history.start == 0
    assert history == events
    assert list(history) == events
    assert history[:] == events


class Host:
    """A host core, the log it would write (every event, in order) and what it sent."""

    def __init__(self, held: int | None) -> None:
        self.core = HostProtocol(held_events=held)
        self.log: list[ev.Event] = []
        self.sent: dict[int, list[bytes]] = {}
        self.backfills: list[Backfill] = []
        self.conns = 0

    def take(self, out: HostOutput) -> None:
        self.log += [recorded.event for recorded in out.events]
        for conn, frame in out.sends:
            self.sent.setdefault(conn, []).append(frame)
        self.backfills += out.backfills

    def hello(
        self, user: str, client: ClientProtocol | None = None, protocol: int = pr.PROTOCOL_VERSION
    ) -> tuple[int, ClientProtocol]:
        """Connect ``user`` (a new member, or ``client``), and answer its challenge."""
        self.conns += 1
        conn = self.conns
        self.core.connect(conn, conn.to_bytes(16, "big"))
        client = client or ClientProtocol(CONFIG, user, insecure_key(user), serve=True)
        client.protocol = protocol
        self.take(self.core.receive(conn, client.hello(), 1.0))
        answer = client.receive(self.sent[conn][-1]).sends[0]
        self.take(self.core.receive(conn, answer, 2.0))
        return conn, client

    def report(self, conn: int, user: str, done: int) -> None:
        frame = pr.encode(pr.Report(event=progress(user, done)))
        self.take(self.core.receive(conn, frame, 3.0))

    def serve_backfills(self) -> None:
        """What the shell does: read each backfill's events from the log, hand them over."""
        wanted, self.backfills = self.backfills, []
        for one in wanted:
            events = self.log[one.since : one.upto]
            self.take(self.core.backfilled(one.conn, events, 4.0))


def busy_room(held: int | None) -> Host:
    """Room r1 with ann joined and 40 reports of hers (43 events)."""
    host = Host(held)
    ann, _ = host.hello("ann")
    host.take(host.core.receive(ann, pr.encode(pr.Report(event=started("ann"))), 2.5))
    for done in range(1, 41):
        host.report(ann, "ann", done)
    return host


def started(user: str) -> ev.PieceStarted:
    return ev.PieceStarted(at=1.0, user_id=user, piece="chars/kfm")


def test_a_welcome_from_before_the_held_events_waits_for_the_log_then_is_the_same() -> None:
    bounded, unbounded = busy_room(held=4), busy_room(held=None)
    assert len(bounded.core.rooms["r1"].history) == len(bounded.log) == 43
    assert bounded.core.rooms["r1"].history.start > 30  # memory: the tail only
    ben, client = bounded.hello("ben")
    assert bounded.backfills == [Backfill(ben, "r1", 0, 43)]
    assert len(bounded.sent[ben]) == 1  # the challenge; no welcome yet
    logged = len(bounded.log)  # nor is ben's member_joined recorded
    bounded.report(1, "ann", 41)  # the room goes on meanwhile: ben is not relayed it yet
    assert len(bounded.sent[ben]) == 1
    bounded.serve_backfills()
    unbounded.report(1, "ann", 41)
    ben_too, _ = unbounded.hello("ben")
    assert bounded.sent[ben][1] == unbounded.sent[ben_too][1]  # the very same welcome
    assert client.receive(bounded.sent[ben][1]).joined
    assert client.room.events == 44
    assert bounded.log[logged + 1 :] == [ev.MemberJoined(at=4.0, user_id="ben")]


def test_a_welcome_within_the_held_events_is_sent_at_once() -> None:
    host = Host(held=4)
    ann, client = host.hello("ann")
    host.take(host.core.receive(ann, pr.encode(pr.Report(event=started("ann"))), 2.5))
    for done in range(1, 41):
        host.report(ann, "ann", done)
    for frame in host.sent[ann][1:]:  # the welcome and every relay: ann holds all 43 events
        client.receive(frame)
    host.take(host.core.disconnect(ann, 2.9))
    again, _ = host.hello("ann", client)
    assert host.backfills == []
    welcome = pr.decode_host_message(host.sent[again][1])
    assert isinstance(welcome, pr.Welcome)
    assert (welcome.since, len(welcome.events)) == (43, 1)  # its member_disconnected
    assert client.receive(host.sent[again][1]).joined


def test_a_second_connection_while_the_first_is_welcomed_is_refused() -> None:
    host = busy_room(held=4)
    host.hello("ben")
    second = 99
    host.core.connect(second, bytes(16))
    hello = ClientProtocol(CONFIG, "ben", insecure_key("ben")).hello()
    host.take(host.core.receive(second, hello, 3.0))
    refused = pr.decode_host_message(host.sent[second][-1])
    assert isinstance(refused, pr.Refused)
    assert refused.code == "already-connected"


def test_a_connection_gone_before_its_backfill_is_read_is_forgotten() -> None:
    host = busy_room(held=4)
    ben, _ = host.hello("ben")
    host.take(host.core.disconnect(ben, 3.5))
    logged = len(host.log)
    host.serve_backfills()
    assert len(host.sent[ben]) == 1  # never welcomed
    assert len(host.log) == logged  # nothing recorded about ben
    again, client = host.hello("ben")  # and ben may come back
    host.serve_backfills()
    assert client.receive(host.sent[again][1]).joined


def test_a_backfill_overtaken_by_more_events_than_are_held_is_read_again() -> None:
    host = busy_room(held=4)
    ben, client = host.hello("ben")
    for done in range(41, 61):  # more than the tail holds, before the read comes back
        host.report(1, "ann", done)
    first = host.backfills[0]
    host.serve_backfills()
    assert host.backfills == [Backfill(ben, "r1", 0, len(host.log))]
    assert first.upto < len(host.log)
    host.serve_backfills()
    assert client.receive(host.sent[ben][1]).joined
    assert client.room.events == len(host.log) - 1  # all but its member_joined, relayed next


REPLAY_LOGS = sorted((Path(__file__).parents[2] / "replay-logs").glob("*.log"))


def test_event_json_is_the_adapters_encoding_for_every_recorded_event() -> None:
    events = [event for path in REPLAY_LOGS for event in read_events(path).events]
    assert len({event.type for event in events}) >= 10
    for event in events:
        assert event_json(event) == ev.EventAdapter.dump_json(event)


def test_a_restamped_report_equals_its_model_copy_and_leaves_the_original() -> None:
    for sent in (started("ann"), progress("ann", 3)):
        report = pr.decode_client_message(pr.encode(pr.Report(event=sent)))
        assert isinstance(report, pr.Report)
        event = report.event
        stamped = restamped(event, 7.5)
        assert stamped == event.model_copy(update={"at": 7.5})
        assert stamped.model_fields_set == event.model_fields_set | {"at"}
        assert (stamped.at, event.at) == (7.5, 1.0)


@pytest.mark.parametrize("protocol", [1, pr.PROTOCOL_VERSION])
def test_a_welcome_made_from_held_or_read_events_is_what_encoding_it_makes(protocol: int) -> None:
    for held in (None, 4):
        host = busy_room(held)
        conn, client = host.hello("ben", protocol=protocol)
        host.serve_backfills()
        frame = host.sent[conn][1]
        welcome = pr.decode_host_message(frame)
        assert isinstance(welcome, pr.Welcome)
        assert (welcome.protocol, len(welcome.events)) == (protocol, 43)
        assert welcome.serving == (("ann",) if protocol >= 2 else ())
        assert frame == pr.encode(welcome)
        assert client.receive(frame).joined
