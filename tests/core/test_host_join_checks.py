"""What the host checks when a peer joins: the answer checks again what the hello checked (the
room may have changed in between), the answer is strict base64 of the user's own signature, the
signature check is remembered per config, and a refusal names who was refused and why."""

from __future__ import annotations

import base64

import pytest

from matchlock.core import events as ev
from matchlock.core import host as host_module
from matchlock.core import protocol as pr
from matchlock.core.host import HostOutput, HostProtocol
from matchlock.tools.testing import insecure_key
from tests.core.host_peers import CONFIG, Net, finish

UNSIGNED = CONFIG.model_copy(update={"signatures": {"alice": CONFIG.signatures["alice"]}})


def signature(user: str, nonce: str) -> str:
    message = pr.challenge_bytes(CONFIG.room_id, user, nonce)
    return base64.b64encode(insecure_key(user).sign(message)).decode()


def test_an_answer_for_a_user_who_joined_meanwhile_is_refused_already_connected() -> None:
    net = Net()
    late = net.peer("alice")
    late.hello()  # challenged while alice could still join...
    first = net.member("alice")  # ...but alice joined on another connection first
    before = list(net.recorded)
    late.answer()
    refusal = late.refused()
    assert (refusal.code, refusal.fatal) == ("already-connected", True)
    assert "'alice' is already connected" in refusal.reason
    assert late.closed and not first.closed
    assert net.recorded == before  # nothing recorded for a refused join
    assert net.host.rooms["r1"].members["alice"] == first.conn


def test_an_answer_must_be_strict_base64() -> None:
    net = Net()
    alice = net.peer("alice")
    alice.hello()
    challenge = alice.got[-1]
    assert isinstance(challenge, pr.Challenge)
    good = signature("alice", challenge.nonce)
    alice.send(pr.encode(pr.Answer(signature=good[:10] + "!" + good[10:])))
    assert alice.refused().code == "bad-answer"
    assert net.host.rooms == {}


@pytest.mark.parametrize("planted", [False, True])
def test_accept_any_answer_lets_in_an_impostor_only_when_planted(planted: bool) -> None:
    bugs = frozenset({"accept-any-answer"} if planted else ())
    net = Net(HostProtocol(planted_bugs=bugs))
    mallory = net.peer("alice")
    mallory.hello()
    challenge = mallory.got[-1]
    assert isinstance(challenge, pr.Challenge)
    mallory.send(pr.encode(pr.Answer(signature=signature("bob", challenge.nonce))))
    assert net.host.joined(mallory.conn) is planted
    if not planted:
        assert mallory.refused().code == "bad-answer"


def test_a_signature_check_is_remembered_for_that_config_only() -> None:
    net = Net()
    stranger = net.peer("alice", UNSIGNED)
    stranger.hello()
    refusal = stranger.refused()
    assert refusal.code == "unsigned-config"
    assert "bob" in refusal.reason  # who has not signed
    alice = net.peer("alice")
    alice.hello()  # the well-signed config is checked on its own
    assert isinstance(alice.got[-1], pr.Challenge)


def test_a_peer_refused_before_saying_who_it_is_is_named_unknown() -> None:
    net = Net()
    peer = net.peer("alice")
    out = peer.send(b"not json")
    [diagnostic] = out.diagnostics
    assert diagnostic.user_id == "(unknown)"
    assert peer.refused().fatal and peer.closed


def test_a_member_welcomed_to_an_ended_room_is_closed_and_forgotten() -> None:
    net = Net()
    alice, bob = net.member("alice"), net.member("bob")
    finish(alice)
    finish(bob)
    alice.goodbye()
    bob.goodbye()
    assert net.recorded[-1].type == "room_closed"
    late = net.member("alice")
    assert isinstance(late.got[-1], pr.Welcome) and late.got[-1].events[-1].type == "room_closed"
    assert late.closed and not net.host.joined(late.conn)
    assert net.host.receive(late.conn, pr.encode(pr.Goodbye()), at=5) == HostOutput()


def test_a_done_member_that_disconnects_is_recorded_disconnected() -> None:
    net = Net()
    alice = net.member("alice")
    net.member("bob")
    finish(alice)
    assert net.host.rooms["r1"].room.members["alice"].status == "done"
    net.take(net.host.disconnect(alice.conn, at=4))
    assert net.recorded[-1] == ev.MemberDisconnected(
        at=4, user_id="alice", reason="connection closed"
    )


def test_disconnecting_an_unknown_connection_does_nothing() -> None:
    assert HostProtocol().disconnect(4242, at=1) == HostOutput()


def test_the_cap_on_recorded_refusals_is_per_member(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_module, "MAX_RECORDED_REFUSALS", 2)
    net = Net()
    alice, bob = net.member("alice"), net.member("bob")
    for _ in range(3):
        alice.goodbye()  # refused: not done
    bob.goodbye()
    refused = [e for e in net.recorded if isinstance(e, ev.MemberRefused)]
    assert [e.user_id for e in refused] == ["alice", "alice", "bob"]


def test_a_hello_in_another_protocol_version_names_both_versions() -> None:
    net = Net()
    peer = net.peer("alice")
    hello = pr.Hello(protocol=pr.PROTOCOL_VERSION + 1, room=CONFIG, user_id="alice")
    peer.send(pr.encode(hello))
    refusal = peer.refused()
    assert refusal.code == "protocol"
    speaks = f"protocol {pr.PROTOCOL_VERSION + 1} is not supported"
    assert refusal.reason == f"{speaks} (this host speaks 1 and {pr.PROTOCOL_VERSION})"


def test_a_room_of_exactly_max_users_is_welcome_and_one_more_is_not() -> None:
    net = Net(HostProtocol(max_users=2))
    net.peer("alice").hello()
    assert isinstance(net.peers[-1].got[-1], pr.Challenge)
    small = Net(HostProtocol(max_users=1))
    peer = small.peer("alice")
    peer.hello()
    refusal = peer.refused()
    assert refusal.code == "too-many-users"
    assert refusal.reason == "room 'r1' expects 2 users; this host allows 1"


def test_a_hello_for_a_room_nobody_opened_may_not_claim_events() -> None:
    peer = Net().peer("alice")
    peer.send(
        pr.encode(pr.Hello(protocol=pr.PROTOCOL_VERSION, room=CONFIG, user_id="alice", since=1))
    )
    refusal = peer.refused()
    assert refusal.code == "bad-since"
    assert refusal.reason == "since 1 is beyond the room's 0 events"


def test_a_host_refuses_frames_over_its_own_message_limit() -> None:
    net = Net(HostProtocol(max_message_bytes=200))
    peer = net.peer("alice")
    peer.hello()  # a hello with a signed room is far over 200 bytes
    assert peer.refused().code == "too-large"


def test_only_known_bugs_can_be_planted() -> None:
    with pytest.raises(ValueError, match=r"^unknown planted bugs: \['typo'\]$"):
        HostProtocol(planted_bugs=frozenset({"typo", "accept-any-answer"}))
