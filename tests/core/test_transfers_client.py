"""Peer transfers in the member core: negotiation (and falling back to protocol 1), what the shell
is handed, who holds a piece, the builders; member-local events beside the room's."""

from __future__ import annotations

import json

import pytest

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.client import OLD_HOST_REFUSALS, ClientProtocol, ProtocolError
from matchlock.core.host import HostProtocol
from matchlock.core.room import replay
from matchlock.tools.testing import insecure_key
from tests.core.transfer_net import CONFIG, KFM

AT = 1.0


class Room:
    """A host core and member cores wired together by hand."""

    def __init__(self) -> None:
        self.host = HostProtocol()
        self.members: dict[int, ClientProtocol] = {}
        self.handed: dict[int, list[object]] = {}

    def join(self, user: str, *, serve: bool = True, protocol: int = 2) -> int:
        member = ClientProtocol(CONFIG, user, insecure_key(user), serve=serve)
        member.protocol = protocol
        conn = len(self.members) + 1
        self.members[conn], self.handed[conn] = member, []
        self.host.connect(conn, conn.to_bytes(16, "big"))
        self.send(conn, member.hello())
        return conn

    def send(self, conn: int, frame: bytes) -> None:
        queue = [(conn, frame)]
        while queue:
            sender, data = queue.pop(0)
            for to, reply in self.host.receive(sender, data, AT).sends:
                out = self.members[to].receive(reply)
                self.handed[to] += out.transfers
                queue += [(to, f) for f in out.sends]

    def finish(self, conn: int) -> None:
        member = self.members[conn]
        finished = ev.PieceFinished(at=0, user_id=member.user_id, piece=KFM, source="cache")
        for frame in member.piece_event(finished):
            self.send(conn, frame)


def test_a_hello_says_protocol_2_and_whether_the_member_serves() -> None:
    for serve in (True, False):
        hello = json.loads(
            ClientProtocol(CONFIG, "alice", insecure_key("alice"), serve=serve).hello()
        )
        assert (hello["protocol"], hello["serve"]) == (2, serve)


@pytest.mark.parametrize("code", sorted(OLD_HOST_REFUSALS))
def test_an_old_host_s_refusal_of_the_hello_means_hello_again_with_protocol_1(code: str) -> None:
    member = ClientProtocol(CONFIG, "alice", insecure_key("alice"), serve=True)
    member.hello()
    refused = pr.Refused(
        code=code, reason="hello.serve: Extra inputs are not permitted", fatal=True
    )
    out = member.receive(pr.encode(refused))
    assert out.retry and member.protocol == 1
    hello = json.loads(member.hello())
    assert hello["protocol"] == 1 and "serve" not in hello  # what a version 1 host reads


def test_other_refusals_of_the_hello_keep_protocol_2() -> None:
    member = ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    member.hello()
    out = member.receive(pr.encode(pr.Refused(code="unknown-user", reason="no", fatal=True)))
    assert not out.retry and member.protocol == 2


def test_a_member_that_fell_back_joins_as_version_1_and_never_uses_peers() -> None:
    room = Room()
    conn = room.join("alice", protocol=1)
    member = room.members[conn]
    assert member.phase == "joined" and not member.peers
    assert member.holders(KFM) == []


def test_peers_and_holders_follow_the_welcome_and_the_peer_messages() -> None:
    room = Room()
    alice = room.join("alice")
    room.finish(alice)
    room.join("bob", serve=False)
    room.finish(2)
    carol = room.join("carol")
    member = room.members[carol]
    assert member.peers and member.holders(KFM) == ["alice"]  # bob holds it and does not serve
    dave = room.join("dave")
    room.finish(dave)
    assert member.holders(KFM) == ["alice", "dave"]
    for to, frame in room.host.disconnect(alice, AT).sends:
        room.members[to].receive(frame)
    assert member.holders(KFM) == ["dave"]


def test_a_transfer_between_member_cores_hands_the_shell_everything_in_order() -> None:
    room = Room()
    alice = room.join("alice")
    room.finish(alice)
    bob = room.join("bob")
    holder, requester = room.members[alice], room.members[bob]
    room.send(bob, requester.want(KFM, "archive", avoid=["carol"]))
    sending = room.handed[bob][-1]
    assert isinstance(sending, tm.Sending) and sending.holder == "alice"
    serve = room.handed[alice][-1]
    assert isinstance(serve, tm.Serve) and serve.requester == "bob"
    number = sending.transfer
    room.send(alice, holder.data(number, 0, b"abc"))
    room.send(alice, holder.data(number, 3, b"de"))
    room.send(bob, requester.ack(number, 5))
    room.send(alice, holder.end(number))
    assert room.handed[bob] == [
        sending,
        pr.DataChunk(number, 0, b"abc"),
        pr.DataChunk(number, 3, b"de"),
        tm.End(transfer=number),
    ]
    assert room.handed[alice] == [serve, tm.Ack(transfer=number, offset=5)]


def test_cancel_and_unheld_reach_the_other_side_as_cut() -> None:
    room = Room()
    alice = room.join("alice")
    room.finish(alice)
    bob = room.join("bob")
    room.send(bob, room.members[bob].want(KFM, "archive"))
    room.send(alice, ClientProtocol.unheld(1, "the folder was edited"))
    assert room.handed[bob][-1] == tm.Cut(
        transfer=1, reason="alice cannot serve it: the folder was edited"
    )
    room.send(bob, room.members[bob].want(KFM, "archive"))
    room.send(bob, ClientProtocol.cancel(2, "found it"))
    assert room.handed[alice][-1] == tm.Cut(transfer=2, reason="bob cancelled it: found it")


def test_protocol_2_frames_before_a_protocol_2_welcome_are_the_host_s_fault() -> None:
    member = ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    member.hello()
    with pytest.raises(ProtocolError):
        member.receive(pr.data_frame(1, 0, b"x"))
    with pytest.raises(ProtocolError):
        member.receive(pr.encode(tm.Cut(transfer=1, reason="?")))


def test_a_malformed_data_frame_from_the_host_is_its_fault() -> None:
    room = Room()
    member = room.members[room.join("alice")]
    with pytest.raises(ProtocolError, match="bad message"):
        member.receive(b"\x01" + bytes(12))


def test_member_local_events_are_ignored_by_the_fold_and_by_since() -> None:
    room = Room()
    conn = room.join("alice")
    member = room.members[conn]
    local: list[ev.Event] = [
        ev.TransferReceived(
            at=2,
            user_id="alice",
            piece=KFM,
            holder="bob",
            form="archive",
            bytes=10,
            outcome="corrupt",
            reason="bob sent 10 bytes whose sha256 is ...",
        ),
        ev.TransferServed(
            at=3, user_id="alice", piece=KFM, requester="bob", form="folder", outcome="cut"
        ),
    ]
    history = room.host.rooms[CONFIG.room_id].history
    mixed = [history[0], *local, *history[1:]]
    restarted = ClientProtocol(CONFIG, "alice", insecure_key("alice"), mixed)
    assert restarted.seen == member.seen == len(history)
    assert replay(mixed) == replay(history)  # a member's own log folds as its host's


def test_a_host_never_relays_a_member_local_event() -> None:
    local = ev.TransferServed(
        at=3, user_id="alice", piece=KFM, requester="bob", form="archive", outcome="sent"
    )
    frame = pr.relay_frame(2, ev.EventAdapter.dump_json(local))
    with pytest.raises(pr.MessageError) as caught:
        pr.decode_host_message(frame)
    assert caught.value.code == "unknown-type"


def test_against_a_host_of_protocol_1_only_the_member_joins_again_as_version_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pr, "SUPPORTED_PROTOCOLS", frozenset({1}))  # the host's, as before 2
    host = HostProtocol()
    member = ClientProtocol(CONFIG, "alice", insecure_key("alice"), serve=True)
    host.connect(1, bytes(16))
    ((_, refusal),) = host.receive(1, member.hello(), AT).sends
    out = member.receive(refusal)
    assert out.retry and out.refused is not None and out.refused.code == "protocol"
    host.connect(2, bytes(15) + b"\x01")
    frames = [member.hello()]
    while frames:
        for _, reply in host.receive(2, frames.pop(0), AT).sends:
            frames += member.receive(reply).sends
    assert member.phase == "joined" and not member.peers
