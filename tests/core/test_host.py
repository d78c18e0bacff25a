"""The sans-IO host: the join flow, relays, and a test per hostile input (refused, recorded,
room state unchanged)."""

from __future__ import annotations

import base64
import json

import pytest

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol
from matchlock.core.host import MAX_REFUSALS, Diagnostic, HostOutput, HostProtocol
from matchlock.core.room import RoomState
from matchlock.tools.testing import insecure_key, pinned, signed_room

USERS = ("alice", "bob")
CONFIG = signed_room("r1", USERS, pinned({"chars/kfm": 100, "stages/dojo": 50}))


class Harness:
    """A host and the frames it sent to each connection."""

    def __init__(self) -> None:
        self.host = HostProtocol()
        self.sent: dict[int, list[pr.HostMessage]] = {}
        self.closed: set[int] = set()
        self.recorded: list[ev.Event] = []
        self.diagnostics: list[Diagnostic] = []
        self.next_id = 0

    def take(self, out: HostOutput) -> HostOutput:
        for _, event, _ in out.events:
            self.recorded.append(event)
        for conn, frame in out.sends:
            self.sent.setdefault(conn, []).append(pr.decode_host_message(frame))
        self.closed.update(out.closes)
        self.diagnostics += out.diagnostics
        return out

    def connect(self) -> int:
        self.next_id += 1
        self.host.connect(self.next_id, self.next_id.to_bytes(16, "big"))
        return self.next_id

    def send(self, conn: int, frame: bytes, at: float = 1.0) -> HostOutput:
        return self.take(self.host.receive(conn, frame, at))

    def join(self, user: str) -> tuple[int, ClientProtocol]:
        client = ClientProtocol(CONFIG, user, insecure_key(user))
        conn = self.connect()
        self.send(conn, client.hello())
        reply = client.receive(pr.encode(self.sent[conn][-1]))
        self.send(conn, reply.sends[0])
        assert isinstance(self.sent[conn][0], pr.Challenge)
        assert isinstance(self.sent[conn][1], pr.Welcome)
        return conn, client

    def state(self) -> RoomState:
        return self.host.rooms["r1"].room.snapshot()

    def last(self, conn: int) -> pr.HostMessage:
        return self.sent[conn][-1]


def without_refusals(state: RoomState) -> RoomState:
    return state.model_copy(update={"refusals": (), "events": 0})


def report(user: str, event: ev.Event) -> bytes:
    return json.dumps(
        {"type": "report", "event": json.loads(ev.EventAdapter.dump_json(event))}
    ).encode()


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_join_welcomes_and_relays_to_everyone(h: Harness) -> None:
    alice, _ = h.join("alice")
    bob, _ = h.join("bob")
    assert h.state().members["alice"].status == "connected"
    welcome = h.sent[bob][1]
    assert isinstance(welcome, pr.Welcome)
    assert [e.type for e in welcome.events] == ["room_opened", "member_joined"]
    relay = h.last(alice)
    assert isinstance(relay, pr.Relay) and relay.event.type == "member_joined" and relay.seq == 3


def test_full_room_closes_after_everyone_says_goodbye(h: Harness) -> None:
    conns = dict(h.join(u) for u in USERS)
    for user, conn in zip(USERS, conns, strict=True):
        for key in ("chars/kfm", "stages/dojo"):
            h.send(
                conn, report(user, ev.PieceFinished(at=0, user_id=user, piece=key, source="cache"))
            )
    assert h.state().status == "all_done"
    for conn in conns:
        h.send(conn, pr.encode(pr.Goodbye()))
    assert h.state().status == "closed"
    assert h.closed == set(conns)
    assert [e.type for e in h.recorded][-3:] == ["member_goodbye", "member_goodbye", "room_closed"]


def test_reports_are_restamped_with_the_host_time(h: Harness) -> None:
    conn, _ = h.join("alice")
    h.send(
        conn, report("alice", ev.PieceStarted(at=999.0, user_id="alice", piece="chars/kfm")), at=5.0
    )
    assert h.recorded[-1].at == 5.0


def refused(h: Harness, conn: int, code: str, fatal: bool) -> None:
    message = h.last(conn)
    assert isinstance(message, pr.Refused), message
    assert (message.code, message.fatal) == (code, fatal)
    assert (conn in h.closed) is fatal


def test_unsigned_config_is_refused_and_opens_nothing(h: Harness) -> None:
    unsigned = CONFIG.model_copy(update={"signatures": {}})
    conn = h.connect()
    h.send(conn, pr.encode(pr.Hello(protocol=1, room=unsigned, user_id="alice")))
    refused(h, conn, "unsigned-config", fatal=True)
    assert h.host.rooms == {}


def test_tampered_config_for_an_open_room_is_refused(h: Harness) -> None:
    h.join("alice")
    before = h.state()
    loose = CONFIG.restrictions.model_copy(update={"max_pieces": 1000})
    tampered = CONFIG.model_copy(update={"restrictions": loose})
    conn = h.connect()
    h.send(conn, pr.encode(pr.Hello(protocol=1, room=tampered, user_id="bob")))
    refused(h, conn, "config-mismatch", fatal=True)
    assert h.state() == before  # unauthenticated: a diagnostic, not an event of the room
    assert h.diagnostics[-1].code == "config-mismatch"


@pytest.mark.parametrize(
    ("hello", "code"),
    [
        ({"user_id": "mallory"}, "unknown-user"),
        ({"protocol": 99}, "protocol"),
        ({"since": 1000}, "bad-since"),
    ],
)
def test_bad_hello_is_refused(h: Harness, hello: dict[str, object], code: str) -> None:
    h.join("alice")
    before = h.state()
    conn = h.connect()
    fields: dict[str, object] = {"protocol": 1, "room": CONFIG, "user_id": "bob", **hello}
    h.send(conn, pr.encode(pr.Hello.model_validate(fields)))
    refused(h, conn, code, fatal=True)
    assert h.state() == before  # unauthenticated: a diagnostic, not an event of the room
    assert h.diagnostics[-1].code == code


def answer_with(h: Harness, user: str, signature: bytes) -> int:
    conn = h.connect()
    h.send(conn, pr.encode(pr.Hello(protocol=1, room=CONFIG, user_id=user)))
    h.send(conn, pr.encode(pr.Answer(signature=base64.b64encode(signature).decode())))
    return conn


def test_impostor_with_the_wrong_key_is_refused(h: Harness) -> None:
    h.join("bob")
    before = h.state()
    nonce = (h.next_id + 1).to_bytes(16, "big").hex()
    forged = insecure_key("mallory").sign(pr.challenge_bytes("r1", "alice", nonce))
    conn = answer_with(h, "alice", forged)
    refused(h, conn, "bad-answer", fatal=True)
    assert h.state() == before
    message = h.last(conn)
    assert isinstance(message, pr.Refused)
    assert h.diagnostics[-1] == Diagnostic("r1", "alice", "bad-answer", message.reason)


def test_replayed_answer_from_another_connection_is_refused(h: Harness) -> None:
    first, _ = h.join("alice")
    h.take(h.host.disconnect(first, 2.0))
    old_nonce = first.to_bytes(16, "big").hex()
    replayed = insecure_key("alice").sign(pr.challenge_bytes("r1", "alice", old_nonce))
    before = h.state()
    conn = answer_with(h, "alice", replayed)
    refused(h, conn, "bad-answer", fatal=True)
    assert h.state() == before


def test_second_connection_for_a_connected_user_is_refused(h: Harness) -> None:
    h.join("alice")
    before = h.state()
    conn = h.connect()
    h.send(conn, pr.encode(pr.Hello(protocol=1, room=CONFIG, user_id="alice")))
    refused(h, conn, "already-connected", fatal=True)
    assert h.state() == before


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (ev.PieceStarted(at=0, user_id="alice", piece="chars/zzz"), "unknown-piece"),
        (ev.PieceStarted(at=0, user_id="bob", piece="chars/kfm"), "not-yours"),
        (ev.PieceProgress(at=0, user_id="alice", piece="chars/kfm", done=101), "illegal"),
        (ev.PieceProgress(at=0, user_id="alice", piece="chars/kfm", done=10), "illegal"),
        (ev.PieceRetried(at=0, user_id="alice", piece="chars/kfm"), "illegal"),
    ],
)
def test_bad_report_is_refused_without_closing(h: Harness, event: ev.Event, code: str) -> None:
    conn, _ = h.join("alice")
    h.join("bob")
    h.send(conn, report("alice", ev.PieceStarted(at=0, user_id="alice", piece="chars/kfm")))
    h.send(
        conn, report("alice", ev.PieceProgress(at=0, user_id="alice", piece="chars/kfm", done=20))
    )
    before = h.state()
    h.send(conn, report("alice", event))
    refused(h, conn, code, fatal=False)
    assert without_refusals(h.state()) == without_refusals(before)
    assert h.state().refusals[-1].code == code


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"x" * (pr.MAX_MESSAGE_BYTES + 1), "too-large"),
        (b"{not json", "malformed-json"),
        (b'{"type": "hello", "protocol": 1}', "missing-field"),
        (b'{"type": "launch_missiles"}', "unknown-type"),
        (pr.encode(pr.Goodbye()), "out-of-order"),
    ],
)
def test_hostile_frames_close_the_connection(h: Harness, frame: bytes, code: str) -> None:
    h.join("alice")
    before = h.state()
    conn = h.connect()
    h.send(conn, frame)
    refused(h, conn, code, fatal=True)
    assert h.state() == before  # unknown to any room: nothing recorded either


def test_answer_before_hello_and_report_before_join_are_out_of_order(h: Harness) -> None:
    conn = h.connect()
    h.send(conn, pr.encode(pr.Answer(signature="AAAA")))
    refused(h, conn, "out-of-order", fatal=True)
    h.join("alice")
    conn = h.connect()
    h.send(conn, pr.encode(pr.Hello(protocol=1, room=CONFIG, user_id="bob")))
    h.send(conn, report("bob", ev.PieceStarted(at=0, user_id="bob", piece="chars/kfm")))
    refused(h, conn, "out-of-order", fatal=True)


def test_too_many_refusals_close_the_connection(h: Harness) -> None:
    conn, _ = h.join("alice")
    bad = report("alice", ev.PieceStarted(at=0, user_id="alice", piece="chars/zzz"))
    for _ in range(MAX_REFUSALS):
        h.send(conn, bad)
    assert conn not in h.closed
    h.send(conn, bad)
    refused(h, conn, "unknown-piece", fatal=True)
    assert h.state().members["alice"].status == "disconnected"


def test_goodbye_before_done_is_refused(h: Harness) -> None:
    conn, _ = h.join("alice")
    h.send(conn, pr.encode(pr.Goodbye()))
    refused(h, conn, "not-done", fatal=False)


def test_disconnect_and_rejoin_gets_only_missing_events(h: Harness) -> None:
    conn, client = h.join("alice")
    for message in h.sent[conn][1:]:
        client.receive(pr.encode(message))
    h.take(h.host.disconnect(conn, 2.0))
    assert h.state().members["alice"].status == "disconnected"
    h.join("bob")
    rejoin = h.connect()
    h.send(rejoin, client.hello())
    h.send(rejoin, client.receive(pr.encode(h.last(rejoin))).sends[0])
    welcome = h.sent[rejoin][1]
    assert isinstance(welcome, pr.Welcome)
    assert welcome.since == 2
    assert [(e.type, getattr(e, "user_id", "")) for e in welcome.events] == [
        ("member_disconnected", "alice"),
        ("member_joined", "bob"),
    ]
    assert h.state().members["alice"].status == "connected"


def test_restore_marks_connected_members_disconnected(h: Harness) -> None:
    h.join("alice")
    restarted = HostProtocol()
    room_id, out = restarted.restore(h.recorded, at=9.0)
    assert room_id == "r1"
    assert [(r.event.type, r.event.at) for r in out.events] == [("member_disconnected", 9.0)]
    assert restarted.rooms["r1"].room.snapshot().members["alice"].status == "disconnected"


def test_abort_ends_the_room_and_closes_members(h: Harness) -> None:
    conn, _ = h.join("alice")
    h.take(h.host.abort("r1", "deadline passed", 9.0))
    assert h.state().status == "aborted"
    assert conn in h.closed
