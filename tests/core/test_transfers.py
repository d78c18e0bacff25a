"""Peer transfers in the host core: who is chosen to serve, what is relayed, every refusal, cuts."""

from __future__ import annotations

import json

import pytest

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.folderstream import folder_stream_bound
from matchlock.core.hosted import HostOutput
from tests.core.transfer_net import DOJO, KFM, KFM_SIZE, SONG, Member, Net

CHUNK = pr.MAX_CHUNK_BYTES


def started(net: Net, requester: Member, piece: str = KFM, form: tm.Form = "archive") -> int:
    """``requester`` wants ``piece``: the transfer id the host announced."""
    requester.want(piece, form)
    sending = requester.last()
    assert isinstance(sending, tm.Sending), sending
    return sending.transfer


def pair(net: Net) -> tuple[Member, Member, int]:
    """alice holds kfm, bob wants it: (bob, alice, the transfer)."""
    alice = net.holding("alice", KFM)
    bob = net.join("bob")
    return bob, alice, started(net, bob)


# -- holder choice ----------------------------------------------------------------------------


def test_the_requester_is_told_sending_and_the_holder_serve_with_one_id() -> None:
    net = Net()
    bob, alice, number = pair(net)
    assert bob.last() == tm.Sending(
        transfer=number, piece=KFM, form="archive", offset=0, holder="alice"
    )
    assert alice.last() == tm.Serve(
        transfer=number, piece=KFM, form="archive", offset=0, requester="bob"
    )


def test_requesters_are_spread_across_holders() -> None:
    net = Net()
    net.holding("alice", KFM)
    net.holding("bob", KFM)
    holders = []
    for user in ("carol", "dave"):
        requester = net.join(user)
        requester.want(KFM)
        sending = requester.last()
        assert isinstance(sending, tm.Sending)
        holders.append(sending.holder)
    assert holders == ["alice", "bob"]  # the tie goes to the first id, then the least busy


def test_ties_in_running_uploads_go_to_the_one_that_served_less() -> None:
    net = Net()
    alice, bob = net.holding("alice", KFM), net.holding("bob", KFM)
    carol = net.join("carol")
    first = started(net, carol)
    alice.message(tm.End(transfer=first))  # alice has served one, bob none
    dave = net.join("dave")
    dave.want(KFM)
    assert isinstance(dave.last(), tm.Sending) and dave.last().holder == "bob"  # type: ignore[union-attr]
    assert bob.last() == tm.Serve(
        transfer=first + 1, piece=KFM, form="archive", offset=0, requester="dave"
    )


@pytest.mark.parametrize(
    "why",
    ["does not serve", "speaks protocol 1", "has not finished", "is avoided", "is the requester"],
)
def test_only_a_member_that_serves_holds_and_is_not_avoided_is_chosen(why: str) -> None:
    net = Net()
    if why == "speaks protocol 1":
        alice = net.join("alice", protocol=1)
        alice.report(ev.PieceFinished(at=0, user_id="alice", piece=KFM, source="cache"))
    elif why in ("has not finished", "is the requester"):
        net.join("alice")
    else:
        net.holding("alice", KFM, serve=why != "does not serve")
    bob = net.holding("bob", KFM) if why == "is the requester" else net.join("bob")
    bob.want(KFM, avoid=("alice",) if why == "is avoided" else ())
    unavailable = bob.last()
    assert isinstance(unavailable, tm.Unavailable), unavailable
    assert (unavailable.piece, unavailable.form) == (KFM, "archive")
    assert not net.host.transfers.running


def test_a_member_runs_at_most_max_uploads_then_it_is_unavailable() -> None:
    net = Net()
    alice = net.holding("alice", KFM, SONG)
    bob, carol = net.join("bob"), net.join("carol")
    started(net, bob)
    started(net, bob, SONG)
    carol.want(KFM)
    unavailable = carol.last()
    assert isinstance(unavailable, tm.Unavailable)
    assert f"runs {tm.MAX_UPLOADS_PER_MEMBER} uploads" in unavailable.reason
    assert sum(isinstance(m, tm.Serve) for m in alice.messages()) == tm.MAX_UPLOADS_PER_MEMBER


def test_a_holder_that_left_is_never_chosen() -> None:
    net = Net()
    alice = net.holding("alice", KFM)
    net.take(net.host.disconnect(alice.conn, 2.0))
    bob = net.join("bob")
    bob.want(KFM)
    assert isinstance(bob.last(), tm.Unavailable)


# -- relaying ---------------------------------------------------------------------------------


def test_data_frames_reach_the_requester_as_the_same_bytes_in_order() -> None:
    net = Net()
    bob, alice, number = pair(net)
    frames = [pr.data_frame(number, i * CHUNK, bytes([i]) * CHUNK) for i in range(3)]
    for frame in frames:
        out = alice.send(frame)
        assert out.sends == [(bob.conn, frame)] and out.sends[0][1] is frame
    bob.message(tm.Ack(transfer=number, offset=2 * CHUNK))
    assert alice.last() == tm.Ack(transfer=number, offset=2 * CHUNK)
    alice.message(tm.End(transfer=number))
    assert bob.transfers()[1:] == [*map(pr.parse_data_frame, frames), tm.End(transfer=number)]
    assert not net.host.transfers.running


def test_a_transfer_may_start_at_an_offset() -> None:
    net = Net()
    alice = net.holding("alice", KFM)
    bob = net.join("bob")
    bob.want(KFM, offset=1000)
    sending = bob.last()
    assert isinstance(sending, tm.Sending) and sending.offset == 1000
    alice.send(pr.data_frame(sending.transfer, 1000, b"x" * 10))
    assert bob.last() == pr.DataChunk(sending.transfer, 1000, b"x" * 10)


def test_late_messages_of_a_transfer_that_ended_are_dropped_without_refusal() -> None:
    net = Net()
    bob, alice, number = pair(net)
    bob.message(tm.Cancel(transfer=number, reason="found it in the cache"))
    before = (len(alice.frames), len(bob.frames))
    alice.send(pr.data_frame(number, 0, b"in flight"))
    alice.message(tm.End(transfer=number))
    bob.message(tm.Ack(transfer=number, offset=0))
    assert (len(alice.frames), len(bob.frames)) == before
    assert not any(isinstance(e, ev.MemberRefused) for e in net.recorded)


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("piece", "form", "offset", "code"),
    [
        ("chars/ryu", "archive", 0, "not-in-room"),
        (DOJO, "archive", 0, "bad-form"),
        (KFM, "folder", 0, "bad-form"),
        (KFM, "archive", KFM_SIZE + 1, "out-of-range"),
        (DOJO, "folder", folder_stream_bound(5000) + 1, "out-of-range"),
    ],
)
def test_a_want_the_room_cannot_pin_is_refused_recorded_and_not_fatal(
    piece: str, form: tm.Form, offset: int, code: str
) -> None:
    net = Net()
    net.holding("alice", KFM, DOJO)
    bob = net.join("bob")
    bob.want(piece, form, offset)
    refused = bob.refused()
    assert (refused.code, refused.fatal) == (code, False)
    assert piece in refused.reason
    assert isinstance(net.recorded[-1], ev.MemberRefused) and net.recorded[-1].code == code
    assert not net.host.transfers.running and not bob.closed


def test_a_want_at_the_bound_of_each_form_is_accepted() -> None:
    net = Net()
    net.holding("alice", SONG, DOJO)
    bob = net.join("bob")
    bob.want(SONG, "archive", 300)
    bob.want(SONG, "folder", folder_stream_bound(200))
    bob.want(DOJO, "folder", folder_stream_bound(5000))
    assert [type(m) for m in bob.transfers()] == [tm.Sending] * 3


def cut_and_refused(
    net: Net, sender: Member, other: Member, frame: bytes, *, number: int, code: str
) -> None:
    """``frame`` from ``sender`` is refused ``code``, not relayed, and both sides are cut."""
    sent_before = len(other.frames)
    out = sender.send(frame)
    assert sender.refused().code == code and not sender.refused().fatal
    assert all(f != frame for _, f in out.sends)
    assert [c.transfer for c in other.cuts()] == [number]
    assert [c.transfer for c in sender.cuts()] == [number]
    assert code in {e.code for e in net.recorded if isinstance(e, ev.MemberRefused)}
    told = other.messages()[sent_before:]  # the cut, and the relay of the refusal
    assert [type(m).__name__ for m in told] == ["Cut", "Relay"]
    assert number not in net.host.transfers.running


def test_a_frame_at_another_offset_is_refused_bad_offset() -> None:
    net = Net()
    bob, alice, number = pair(net)
    alice.send(pr.data_frame(number, 0, b"a" * 100))
    cut_and_refused(
        net, alice, bob, pr.data_frame(number, 99, b"b"), number=number, code="bad-offset"
    )


def test_a_frame_beyond_the_bound_is_refused_too_large() -> None:
    net = Net()
    alice = net.holding("alice", SONG)
    bob = net.join("bob")
    number = started(net, bob, SONG)
    alice.send(pr.data_frame(number, 0, b"a" * 299))
    cut_and_refused(
        net, alice, bob, pr.data_frame(number, 299, b"bc"), number=number, code="too-large"
    )


def test_a_folder_stream_is_bound_by_folder_stream_bound() -> None:
    net = Net()
    alice = net.holding("alice", SONG)
    bob = net.join("bob")
    bound = folder_stream_bound(200)
    assert bound > 300  # the folder's bound, not the archive's
    bob.want(SONG, "folder", bound - 1)
    sending = bob.last()
    assert isinstance(sending, tm.Sending)
    number = sending.transfer
    frame = pr.data_frame(number, bound - 1, b"!!")
    cut_and_refused(net, alice, bob, frame, number=number, code="too-large")


def test_more_than_a_window_unacknowledged_is_refused_window_exceeded() -> None:
    net = Net()
    bob, alice, number = pair(net)
    window = tm.TRANSFER_WINDOW_BYTES
    for offset in range(0, window, CHUNK):
        alice.send(pr.data_frame(number, offset, b"w" * CHUNK))
    assert not any(isinstance(m, pr.Refused) for m in alice.messages())
    cut_and_refused(
        net, alice, bob, pr.data_frame(number, window, b"!"), number=number, code="window-exceeded"
    )


def test_an_ack_opens_the_window_again() -> None:
    net = Net()
    bob, alice, number = pair(net)
    window = tm.TRANSFER_WINDOW_BYTES
    for offset in range(0, window, CHUNK):
        alice.send(pr.data_frame(number, offset, b"w" * CHUNK))
    bob.message(tm.Ack(transfer=number, offset=CHUNK))
    alice.send(pr.data_frame(number, window, b"w" * CHUNK))
    assert bob.last() == pr.DataChunk(number, window, b"w" * CHUNK)


def test_data_for_a_transfer_never_started_is_refused_bad_transfer() -> None:
    net = Net()
    alice = net.holding("alice", KFM)
    alice.send(pr.data_frame(99, 0, b"x"))
    assert alice.refused().code == "bad-transfer" and not alice.refused().fatal


def test_data_from_the_requester_is_refused_bad_transfer() -> None:
    net = Net()
    bob, alice, number = pair(net)
    cut_and_refused(
        net, bob, alice, pr.data_frame(number, 0, b"x"), number=number, code="bad-transfer"
    )


def test_data_from_a_third_member_is_refused_and_the_transfer_runs_on() -> None:
    net = Net()
    bob, _alice, number = pair(net)
    carol = net.holding("carol", KFM)
    carol.send(pr.data_frame(number, 0, b"forged"))
    assert carol.refused().code == "bad-transfer"
    assert not bob.cuts() and number in net.host.transfers.running
    assert not any(isinstance(m, pr.DataChunk) for m in bob.messages())


def test_an_ack_beyond_what_was_sent_is_refused_bad_offset() -> None:
    net = Net()
    bob, alice, number = pair(net)
    alice.send(pr.data_frame(number, 0, b"x" * 10))
    ack = pr.encode(tm.Ack(transfer=number, offset=11))
    cut_and_refused(net, bob, alice, ack, number=number, code="bad-offset")


def test_an_end_from_the_requester_is_refused_bad_transfer() -> None:
    net = Net()
    bob, alice, number = pair(net)
    cut_and_refused(
        net, bob, alice, pr.encode(tm.End(transfer=number)), number=number, code="bad-transfer"
    )


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x01" + bytes(12), "bad-value"),  # a header and no byte
        (b"\x01" + bytes(4) + bytes(8) + b"x", "bad-value"),  # transfer 0
        (pr.data_frame(1, 0, b"x")[:13] + bytes(CHUNK + 1), "too-large"),
    ],
)
def test_a_malformed_data_frame_is_refused(frame: bytes, code: str) -> None:
    net = Net()
    bob, alice, _number = pair(net)
    alice.send(frame)
    assert alice.refused().code == code
    assert not any(isinstance(m, pr.DataChunk) for m in bob.messages())


# -- cuts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("leaves", ["holder", "requester"])
def test_a_side_that_disconnects_cuts_the_transfer_for_the_other(leaves: str) -> None:
    net = Net()
    bob, alice, number = pair(net)
    gone, other = (alice, bob) if leaves == "holder" else (bob, alice)
    net.take(net.host.disconnect(gone.conn, 2.0))
    assert [(c.transfer, f"{gone.user} disconnected") for c in other.cuts()] == [
        (number, c.reason) for c in other.cuts()
    ]
    assert not gone.cuts() and not net.host.transfers.running
    other.send(
        pr.data_frame(number, 0, b"late")
        if other is alice
        else pr.encode(tm.Ack(transfer=number, offset=0))
    )
    assert not isinstance(other.last(), pr.Refused)  # a race, not a fault


@pytest.mark.parametrize(
    ("who", "message", "reason"),
    [
        ("requester", tm.Cancel(transfer=1, reason="enough"), "bob cancelled it: enough"),
        ("holder", tm.Cancel(transfer=1, reason=""), "alice cancelled it"),
        (
            "holder",
            tm.Unheld(transfer=1, reason="folder edited"),
            "alice cannot serve it: folder edited",
        ),
    ],
)
def test_cancel_and_unheld_cut_and_tell_the_other_side(
    who: str, message: tm.MemberTransferMessage, reason: str
) -> None:
    net = Net()
    bob, alice, number = pair(net)
    assert number == 1
    sender, other = (bob, alice) if who == "requester" else (alice, bob)
    sender.message(message)
    assert other.cuts() == [tm.Cut(transfer=1, reason=reason)]
    assert not sender.cuts() and not net.host.transfers.running


def test_unheld_from_the_requester_is_refused() -> None:
    net = Net()
    bob, _alice, number = pair(net)
    bob.message(tm.Unheld(transfer=number))
    assert bob.refused().code == "bad-transfer"


def test_a_new_want_of_the_same_piece_cuts_the_running_one() -> None:
    net = Net()
    bob, alice, first = pair(net)
    carol = net.holding("carol", KFM)
    bob.want(KFM, avoid=("alice",))
    assert alice.cuts() == [tm.Cut(transfer=first, reason=f"bob asked for {KFM} again")]
    assert isinstance(carol.last(), tm.Serve) and list(net.host.transfers.running) == [first + 1]


def test_the_room_closing_forgets_every_transfer() -> None:
    net = Net()
    alice = net.holding("alice", KFM, DOJO, SONG)
    bob = net.join("bob")
    started(net, bob)
    for user in ("bob", "carol", "dave", "erin"):
        member = bob if user == "bob" else net.join(user)
        for piece in (KFM, DOJO, SONG):
            member.report(ev.PieceFinished(at=0, user_id=user, piece=piece, source="cache"))
    for member in [m for m in net.members.values() if not m.closed]:
        member.send(pr.encode(pr.Goodbye()))
    assert all(m.closed for m in net.members.values()) and alice.closed
    assert not net.host.transfers.running
    for member in net.members.values():  # nothing after the close, which ends every connection
        last = member.last()
        assert isinstance(last, pr.Relay) and last.event.type == "room_closed"


# -- who may speak of transfers ---------------------------------------------------------------


def test_an_unproven_peer_s_transfer_messages_change_nothing() -> None:
    net = Net()
    bob, alice, number = pair(net)
    history = len(net.host.rooms["transfers"].history)
    mallory = net.connect("carol")
    mallory.hello()  # challenged, never answered
    out = mallory.send(pr.data_frame(number, 0, b"forged"))
    assert [conn for conn, _ in out.sends] == [mallory.conn] and mallory.closed
    for frame in (
        pr.encode(tm.Want(piece=KFM, form="archive")),
        pr.encode(tm.Cancel(transfer=number)),
    ):
        stranger = net.connect("dave")
        stranger.hello()
        out = stranger.send(frame)
        assert stranger.refused().code == "out-of-order" and stranger.closed
        assert [conn for conn, _ in out.sends] == [stranger.conn]
    assert len(net.host.rooms["transfers"].history) == history
    assert list(net.host.transfers.running) == [number] and not bob.cuts() and not alice.cuts()


def test_a_version_1_member_never_sees_protocol_2() -> None:
    net = Net()
    old = net.join("carol", protocol=1)
    old.report(ev.PieceFinished(at=0, user_id="carol", piece=KFM, source="cache"))
    bob, alice, number = pair(net)
    alice.send(pr.data_frame(number, 0, b"x"))
    bob.message(tm.Cancel(transfer=number))
    net.join("dave")
    assert old.keys("welcome") == [{"type", "since", "events"}]
    assert {type(m) for m in old.messages()} == {pr.Challenge, pr.Welcome, pr.Relay}
    assert not any(pr.is_data_frame(f) for f in old.frames)


def test_a_version_2_member_s_welcome_says_protocol_2_and_who_serves() -> None:
    net = Net()
    net.join("alice")
    net.join("bob", serve=False)
    net.join("carol", protocol=1)
    dave = net.join("dave")
    welcome = next(m for m in dave.messages() if isinstance(m, pr.Welcome))
    assert (welcome.protocol, welcome.serving) == (2, ("alice",))
    alice = next(m for m in net.members.values() if m.user == "alice")
    assert [m for m in alice.messages() if isinstance(m, tm.Peer)] == [
        tm.Peer(user_id="bob", serve=False),
        tm.Peer(user_id="dave", serve=True),
    ]


@pytest.mark.parametrize(
    "frame",
    [
        pr.encode(tm.Want(piece=KFM, form="archive")),
        pr.encode(tm.Ack(transfer=1, offset=0)),
        pr.encode(tm.Cancel(transfer=1)),
    ],
)
def test_a_version_1_member_s_transfer_message_is_refused_unknown_type(frame: bytes) -> None:
    net = Net()
    old = net.join("carol", protocol=1)
    old.send(frame)
    assert (old.refused().code, old.refused().fatal) == ("unknown-type", True)


def test_a_version_1_member_s_data_frame_is_not_json() -> None:
    net = Net()
    old = net.join("carol", protocol=1)
    old.send(pr.data_frame(1, 0, b"x"))
    assert (old.refused().code, old.refused().fatal) == ("malformed-json", True)


@pytest.mark.parametrize("kind", ["transfer_received", "transfer_served"])
def test_member_local_events_are_refused_in_reports(kind: str) -> None:
    net = Net()
    alice = net.join("alice")
    other = {"holder": "bob"} if kind == "transfer_received" else {"requester": "bob"}
    outcome = "verified" if kind == "transfer_received" else "sent"
    event = {"type": kind, "at": 0, "user_id": "alice", "piece": KFM, "form": "archive"}
    body = {**event, **other, "outcome": outcome}
    alice.send(b'{"type":"report","event":%s}' % json.dumps(body).encode())
    assert alice.refused().code == "unknown-type"


def test_a_connection_the_transfers_never_saw_join_is_refused_not_crashed() -> None:
    net = Net()
    _, _, number = pair(net)
    out = HostOutput()
    transfers = net.host.transfers
    assert transfers.data(99, pr.data_frame(number, 0, b"x"), out) == (
        "out-of-order",
        "transfers need a member welcomed with protocol 2",
    )
    want = tm.Want(piece=KFM, form="archive")
    assert transfers.receive(99, want, net.host.rooms["transfers"].room, out) is not None
    assert not out.sends and number in transfers.running


def test_a_transfer_s_frames_are_marked_to_go_at_once_unless_something_is_recorded() -> None:
    net = Net()
    bob, alice, number = pair(net)
    assert alice.send(pr.data_frame(number, 0, b"a" * 100)).transfer_only
    assert bob.message(tm.Ack(transfer=number, offset=100)).transfer_only
    refused = alice.send(pr.data_frame(number, 99, b"b"))  # recorded: member_refused
    assert refused.events and not refused.transfer_only
