"""The host core's promises to its shell and its members, each on its own: when a connection
counts as joined, what an oversized frame does, what a restart records, what a closed room leaves
behind, why a report or a goodbye is refused, and how a member's share of the history is cut."""

from __future__ import annotations

import pytest

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.errors import InputError
from matchlock.core.host import HostOutput, HostProtocol
from tests.core.host_peers import SOLO, Net, finish, history_limits

# -- joined(): the shell's handshake deadline and idle timeout ------------------------------------


def test_a_connection_counts_as_joined_only_once_its_member_proved_who_it_is() -> None:
    net = Net()
    assert not net.host.joined(999)  # no such connection
    alice = net.peer("alice")
    assert not net.host.joined(alice.conn)  # connected
    alice.hello()
    assert not net.host.joined(alice.conn)  # challenged
    alice.answer()
    assert net.host.joined(alice.conn)


def test_a_member_welcomed_read_only_after_its_goodbye_counts_as_joined() -> None:
    net = Net()
    alice, bob = net.member("alice"), net.member("bob")
    finish(alice)
    finish(bob)
    alice.goodbye()
    net.take(net.host.disconnect(alice.conn, at=2))
    again = net.member("alice")
    assert net.host.joined(again.conn)
    assert not again.closed and not bob.closed  # the room goes on until bob's goodbye


# -- frame_too_large(): the transport cut a frame ------------------------------------------------


def test_an_oversized_frame_is_refused_too_large_naming_the_limit_and_closes() -> None:
    net = Net()
    alice = net.member("alice")
    net.take(net.host.frame_too_large(alice.conn, 4096, at=2))
    refusal = alice.refused()
    assert (refusal.code, refusal.fatal) == ("too-large", True)
    assert "4096-byte limit" in refusal.reason
    assert alice.closed and not net.host.joined(alice.conn)
    assert net.recorded[-1] == ev.MemberDisconnected(
        at=2, user_id="alice", reason="connection closed"
    )


def test_an_oversized_frame_from_an_unknown_connection_does_nothing() -> None:
    assert HostProtocol().frame_too_large(12345, 4096, at=2) == HostOutput()


# -- restore(): a restart from the room's log ----------------------------------------------------


def test_a_restart_disconnects_every_member_the_log_shows_connected() -> None:
    net = Net()
    net.member("alice")
    restarted = HostProtocol()
    room_id, out = restarted.restore(net.recorded, at=9)
    assert room_id == "r1"
    assert [event for _, event, _ in out.events] == [
        ev.MemberDisconnected(at=9, user_id="alice", reason="host restarted")
    ]


def test_a_download_log_is_no_room_to_restore() -> None:
    download = ev.DownloadOpened(at=0, sizes={"chars/kfm": 1})
    with pytest.raises(InputError, match=r"^the log does not hold a room$"):
        HostProtocol().restore([download], at=1)


# -- the end of a room ---------------------------------------------------------------------------


def test_when_a_room_closes_its_connections_are_closed_and_forgotten() -> None:
    net = Net()
    alice, bob = net.member("alice"), net.member("bob")
    finish(alice)
    finish(bob)
    alice.goodbye()
    bob.goodbye()
    assert net.recorded[-1].type == "room_closed"
    assert alice.closed and bob.closed
    assert not net.host.joined(alice.conn) and not net.host.joined(bob.conn)
    assert net.host.receive(bob.conn, pr.encode(pr.Goodbye()), at=3) == HostOutput()


# -- refusals of a joined member carry the rule that was broken ----------------------------------


def test_an_illegal_report_is_refused_with_the_rule_it_broke() -> None:
    alice = Net().member("alice")
    alice.report(ev.PieceProgress(at=0, user_id="alice", piece="chars/kfm", done=5))
    refusal = alice.refused()
    assert refusal.code == "illegal"
    assert "'progress' is not legal in state 'not_started'" in refusal.reason


def test_a_goodbye_before_being_done_is_refused_with_the_member_s_state() -> None:
    alice = Net().member("alice")
    alice.goodbye()
    refusal = alice.refused()
    assert refusal.code == "not-done"
    assert "'goodbye' is not legal in state 'connected'" in refusal.reason


# -- the planted bug the simulation must find ----------------------------------------------------


@pytest.mark.parametrize("planted", [False, True])
def test_skip_reporter_relay_withholds_only_the_reporter_s_own_relay(planted: bool) -> None:
    net = Net(HostProtocol(planted_bugs=frozenset({"skip-reporter-relay"} if planted else ())))
    alice, bob = net.member("alice"), net.member("bob")
    alice.report(ev.PieceStarted(at=0, user_id="alice", piece="chars/kfm"), at=5)
    started = ev.PieceStarted(at=5, user_id="alice", piece="chars/kfm")
    assert started in bob.relayed()
    assert (started in alice.relayed()) is not planted


# -- shares of the history -----------------------------------------------------------------------


def test_a_one_user_room_gives_its_member_the_whole_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = Net()
    alice = net.member("alice", SOLO)
    monkeypatch.setattr(history_limits(net.host, "solo"), "MAX_HISTORY_EVENTS", 12)
    alice.report(ev.PieceStarted(at=0, user_id="alice", piece="chars/kfm"))
    accepted = 0
    for done in range(1, 20):
        alice.report(ev.PieceProgress(at=0, user_id="alice", piece="chars/kfm", done=done))
        accepted += alice.accepted()
    # 12 events, nine tenths of them (10.8) for progress: joined, started and 8 progress reports
    assert accepted == 8
    assert alice.refused().code == "history-full"


def test_a_decision_may_use_the_whole_share_and_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    alice = net.member("alice")
    net.member("bob")
    monkeypatch.setattr(history_limits(net.host, "r1"), "MAX_HISTORY_EVENTS", 8)  # 4 each
    failure = ev.ResolvableFailure(index=0, url="https://a.example/kfm", reason="404")
    failed = ev.ResolvableFailed(at=0, user_id="alice", piece="chars/kfm", failure=failure)
    alice.report(ev.PieceStarted(at=0, user_id="alice", piece="chars/kfm"))  # 2 (after joined)
    alice.report(failed)  # 3
    alice.report(failed)  # 4: the whole share
    assert alice.accepted()
    alice.report(failed)
    assert alice.refused().code == "history-full"


@pytest.mark.parametrize(("spare", "fits"), [(0, True), (-1, False)])
def test_a_share_of_bytes_is_all_a_member_added_counted_to_the_byte(
    monkeypatch: pytest.MonkeyPatch, spare: int, fits: bool
) -> None:
    net = Net()
    alice = net.member("alice")
    net.member("bob")
    alice.report(ev.PieceStarted(at=0, user_id="alice", piece="chars/kfm"), at=1)
    failure = ev.ResolvableFailure(index=0, url="https://a.example/kfm", reason="404")
    failed = ev.ResolvableFailed(at=2, user_id="alice", piece="chars/kfm", failure=failure)
    added = [e for e in net.recorded if getattr(e, "user_id", "") == "alice"] + [failed]
    assert [e.type for e in added] == ["member_joined", "piece_started", "resolvable_failed"]
    share = sum(len(ev.EventAdapter.dump_json(e)) for e in added) + spare
    monkeypatch.setattr(history_limits(net.host, "r1"), "MAX_HISTORY_BYTES", 2 * share)
    alice.report(failed, at=2)
    assert alice.accepted() is fits
    assert (net.recorded[-1] == failed) is fits


def test_each_event_to_record_names_its_room_and_carries_the_bytes_relayed() -> None:
    host = HostProtocol()
    net = Net(host)
    alice = net.member("alice")
    out = host.receive(alice.conn, pr.encode(pr.Goodbye()), at=2)  # refused: recorded
    outputs = [out, host.disconnect(alice.conn, at=3)]
    recorded = [r for output in outputs for r in output.events]
    assert [r.event.type for r in recorded] == ["member_refused", "member_disconnected"]
    for room_id, event, body in recorded:
        assert room_id == "r1"
        assert body == ev.EventAdapter.dump_json(event)
    relayed = [frame for conn, frame in out.sends if frame.startswith(b'{"type":"event"')]
    assert relayed == [pr.relay_frame(3, recorded[0].body)]


def test_progress_stops_at_nine_tenths_of_a_share_of_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    alice = net.member("alice", SOLO)
    monkeypatch.setattr(history_limits(net.host, "solo"), "MAX_HISTORY_BYTES", 2000)
    alice.report(ev.PieceStarted(at=0, user_id="alice", piece="chars/kfm"))
    for done in range(1, 40):
        alice.report(ev.PieceProgress(at=0, user_id="alice", piece="chars/kfm", done=done))
    assert alice.refused().code == "history-full"
    used = sum(len(ev.EventAdapter.dump_json(e)) for e in net.recorded if e.type != "room_opened")
    assert 1800 - 100 < used <= 1800  # nine tenths of 2000, less than one more report
