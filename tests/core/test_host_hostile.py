"""The host core against peers that have not proved who they are, and members that push their
limits (issue 10): nothing unauthenticated opens a room or reaches its log; a member's refusals
and history are bounded; an unauthenticated hello costs at most one signature check per config."""

from __future__ import annotations

import base64

import pytest

from matchlock.core import admission as admission_module
from matchlock.core import events as ev
from matchlock.core import hosted as hosted_module
from matchlock.core import protocol as pr
from matchlock.core.config import RoomUser
from matchlock.core.errors import IllegalEventError
from matchlock.core.host import (
    MAX_RECORDED_REFUSALS,
    MAX_REFUSALS,
    MAX_USERS,
    HostOutput,
    HostProtocol,
)
from matchlock.tools.testing import insecure_key
from tests.core.test_host import CONFIG, Harness, refused, report


def hello(user: str, room: object = CONFIG) -> bytes:
    return pr.encode(pr.Hello.model_validate({"protocol": 1, "room": room, "user_id": user}))


def test_a_hello_from_an_unexpected_user_opens_nothing() -> None:
    h = Harness()
    conn = h.connect()
    h.send(conn, hello("mallory"))
    refused(h, conn, "unknown-user", fatal=True)
    assert h.host.rooms == {} and h.recorded == []


def test_an_impostor_whose_answer_fails_opens_nothing() -> None:
    h = Harness()
    conn = h.connect()
    h.send(conn, hello("alice"))
    forged = insecure_key("mallory").sign(pr.challenge_bytes("r1", "alice", "00" * 16))
    h.send(conn, pr.encode(pr.Answer(signature=base64.b64encode(forged).decode())))
    refused(h, conn, "bad-answer", fatal=True)
    assert h.host.rooms == {} and h.recorded == []
    assert [d.code for d in h.diagnostics] == ["bad-answer"]


def test_the_first_proven_member_opens_the_room() -> None:
    h = Harness()
    h.join("alice")
    assert [e.type for e in h.recorded] == ["room_opened", "member_joined"]


def test_hundreds_of_unauthenticated_refusals_add_nothing_to_the_room() -> None:
    h = Harness()
    alice, _ = h.join("alice")
    before, sent_to_alice = list(h.recorded), len(h.sent[alice])
    for i in range(260):
        conn = h.connect()
        h.send(conn, hello("mallory") if i % 2 else hello("alice"))  # unknown; already in
    assert h.recorded == before
    assert len(h.sent[alice]) == sent_to_alice  # nothing relayed to the members either
    assert h.host.refusals["unknown-user"] == 130
    assert h.host.refusals["already-connected"] == 130


def test_a_members_recorded_refusals_are_capped_across_connections() -> None:
    h = Harness()
    bad = report("alice", ev.PieceStarted(at=0, user_id="alice", piece="chars/zzz"))
    connections = MAX_RECORDED_REFUSALS // MAX_REFUSALS + 2
    for _ in range(connections):
        conn, _ = h.join("alice")
        for _ in range(MAX_REFUSALS + 1):
            h.send(conn, bad)
        assert conn in h.closed
    recorded = [e for e in h.recorded if e.type == "member_refused"]
    assert len(recorded) == MAX_RECORDED_REFUSALS
    assert h.host.refusals["unknown-piece"] == connections * (MAX_REFUSALS + 1)


def test_a_member_past_its_share_of_the_history_is_refused_history_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hosted_module, "MAX_HISTORY_EVENTS", 40)  # 20 each for alice and bob
    h = Harness()
    conn, _ = h.join("alice")
    h.send(conn, report("alice", ev.PieceStarted(at=0, user_id="alice", piece="chars/kfm")))
    codes = []
    for done in range(1, 40):
        progress = ev.PieceProgress(at=0, user_id="alice", piece="chars/kfm", done=done)
        h.send(conn, report("alice", progress))
        last = h.last(conn)
        if isinstance(last, pr.Refused):
            codes.append(last.code)
    alice_events = [e for e in h.recorded if getattr(e, "user_id", "") == "alice"]
    assert len(alice_events) == 18  # progress stops at nine tenths of the share
    assert set(codes) == {"history-full"} and conn not in h.closed  # not counted as misbehaviour
    finished = ev.PieceFinished(at=0, user_id="alice", piece="chars/kfm", source="cache")
    h.send(conn, report("alice", finished))  # a decision still fits in what is left
    assert h.recorded[-1].type == "piece_finished"


def test_a_hello_for_a_room_bigger_than_the_host_allows_checks_no_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[object] = []
    monkeypatch.setattr(admission_module, "verify_room", checked.append)
    key = CONFIG.users["alice"]
    crowd = {f"user{i}": RoomUser(public_key=key.public_key) for i in range(MAX_USERS + 1)}
    huge = CONFIG.model_copy(update={"users": crowd})
    h = Harness()
    conn = h.connect()
    h.send(conn, hello("user0", huge))
    refused(h, conn, "too-many-users", fatal=True)
    assert checked == [] and h.host.rooms == {}


def test_the_same_unsigned_hello_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    from matchlock.core.signing import verify_room as real

    def counting(config: object) -> None:
        calls.append("check")
        real(config)  # type: ignore[arg-type]

    monkeypatch.setattr(admission_module, "verify_room", counting)
    unsigned = CONFIG.model_copy(update={"signatures": {"alice": CONFIG.signatures["alice"]}})
    h = Harness()
    for _ in range(50):
        conn = h.connect()
        h.send(conn, hello("alice", unsigned))
        refused(h, conn, "unsigned-config", fatal=True)
    assert calls == ["check"]


def test_a_quarantined_room_refuses_every_join() -> None:
    h = Harness()
    h.host.quarantine("r1", "line 7: the chain is broken")
    conn = h.connect()
    h.send(conn, hello("alice"))
    refused(h, conn, "quarantined", fatal=True)
    message = h.last(conn)
    assert isinstance(message, pr.Refused) and "line 7" in message.reason
    assert h.host.rooms == {}


def test_an_event_that_cannot_be_encoded_changes_nothing() -> None:
    h = Harness()
    h.join("alice")
    before = h.state()
    unencodable: float = object()  # type: ignore[assignment]
    broken = ev.PieceStarted.model_construct(at=unencodable, user_id="alice", piece="chars/kfm")
    with pytest.raises(Exception, match="serializ"):
        h.host.rooms["r1"].record(broken, HostOutput())
    assert h.state() == before


def test_receive_never_raises_for_a_check_the_core_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    conn, _ = h.join("alice")

    def broken_progress(*_: object) -> None:
        raise IllegalEventError("member", "alice", "connected", "complete", "planted")

    monkeypatch.setattr(HostProtocol, "_progress", broken_progress)
    h.send(conn, report("alice", ev.PieceStarted(at=0, user_id="alice", piece="chars/kfm")))
    refused(h, conn, "illegal", fatal=True)


def test_a_hello_for_a_room_with_more_pieces_than_the_host_allows_checks_no_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[object] = []
    monkeypatch.setattr(admission_module, "verify_room", checked.append)
    h = Harness()
    h.host = HostProtocol(max_pieces=1)  # CONFIG pins two
    conn = h.connect()
    h.send(conn, hello("alice"))
    refused(h, conn, "too-many-pieces", fatal=True)
    assert checked == [] and h.host.rooms == {}
