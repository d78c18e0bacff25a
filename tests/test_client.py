"""The sans-IO member: joining, mirroring the host, goodbye, catching up after a reconnect."""

from __future__ import annotations

import pytest

from matchlock import events as ev
from matchlock import protocol as pr
from matchlock.client import ClientProtocol, ProtocolError, catch_up
from matchlock.errors import UsageError
from matchlock.room import PieceState
from matchlock.testing import insecure_key
from tests.test_host import CONFIG, Harness, report


def finish_everything(h: Harness, conns: dict[str, int]) -> None:
    for user, conn in conns.items():
        for key in ("chars/kfm", "stages/dojo"):
            h.send(
                conn, report(user, ev.PieceFinished(at=0, user_id=user, piece=key, source="cache"))
            )


def feed(client: ClientProtocol, messages: list[pr.HostMessage]) -> list[bytes]:
    return [frame for m in messages for frame in client.receive(pr.encode(m)).sends]


def test_the_mirror_follows_the_host_and_says_goodbye_when_all_are_done() -> None:
    h = Harness()
    conns, clients = {}, {}
    for user in ("alice", "bob"):
        conns[user], clients[user] = h.join(user)
    finish_everything(h, conns)
    sends = feed(clients["alice"], h.sent[conns["alice"]][1:])
    assert sends == [pr.encode(pr.Goodbye())]
    assert clients["alice"].room.snapshot() == h.state()


def test_goodbye_is_said_again_after_a_reconnect() -> None:
    """Found by the simulation (replay-logs/sim-seed13-goodbye-lost.log): a member whose goodbye
    was lost with its connection never said it again, and the room never closed."""
    h = Harness()
    conns, clients = {}, {}
    for user in ("alice", "bob"):
        conns[user], clients[user] = h.join(user)
    finish_everything(h, conns)
    bob = clients["bob"]
    assert pr.encode(pr.Goodbye()) in feed(bob, h.sent[conns["bob"]][1:])
    h.take(h.host.disconnect(conns["bob"], 5.0))  # the goodbye never arrived
    conn = h.connect()
    h.send(conn, bob.hello())
    h.send(conn, bob.receive(pr.encode(h.last(conn))).sends[0])
    assert pr.encode(pr.Goodbye()) in feed(bob, h.sent[conn][1:])


def test_a_gap_in_the_hosts_events_is_a_protocol_error() -> None:
    h = Harness()
    conn, alice = h.join("alice")
    feed(alice, h.sent[conn][1:])
    relay = pr.Relay(seq=alice.seen + 2, event=ev.MemberJoined(at=1, user_id="bob"))
    with pytest.raises(ProtocolError, match="arrived after event"):
        alice.receive(pr.encode(relay))


def test_an_illegal_event_from_the_host_is_a_protocol_error() -> None:
    h = Harness()
    conn, alice = h.join("alice")
    feed(alice, h.sent[conn][1:])
    relay = pr.Relay(seq=alice.seen + 1, event=ev.RoomClosed(at=1))
    with pytest.raises(ProtocolError, match="illegal event"):
        alice.receive(pr.encode(relay))


def test_garbage_from_the_host_is_a_protocol_error() -> None:
    alice = ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    alice.hello()
    with pytest.raises(ProtocolError, match="bad message"):
        alice.receive(b"\x00garbage")


def test_a_member_cannot_report_for_someone_else() -> None:
    alice = ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    with pytest.raises(UsageError):
        alice.report(ev.PieceStarted(at=0, user_id="bob", piece="chars/kfm"))
    with pytest.raises(UsageError):
        ClientProtocol(CONFIG, "mallory", insecure_key("mallory"))


def piece(
    status: str, done: int = 0, source: str = "", failures: tuple[ev.ResolvableFailure, ...] = ()
) -> PieceState:
    return PieceState(status=status, done=done, size=100, source=source, failures=failures)


FAILURE = ev.ResolvableFailure(index=0, url="https://a.example/k.zip", reason="HTTP 404")


@pytest.mark.parametrize(
    ("host", "local", "expected"),
    [
        (piece("not_started"), piece("not_started"), []),
        (piece("finished"), piece("finished"), []),
        (piece("not_started"), piece("finished", 100, "cache"), ["piece_finished"]),
        (piece("in_progress", 30), piece("finished", 100, "x"), ["piece_finished"]),
        (piece("error"), piece("finished", 100, "x"), ["piece_retried", "piece_finished"]),
        (piece("not_started"), piece("in_progress", 40), ["piece_started", "piece_progress"]),
        (piece("in_progress", 30), piece("in_progress", 40), ["piece_progress"]),
        (
            piece("in_progress", 60),
            piece("in_progress", 10, failures=(FAILURE,)),
            ["resolvable_failed", "piece_progress"],
        ),
        (piece("in_progress", 30), piece("error", failures=(FAILURE,)), ["piece_failed"]),
        (
            piece("not_started"),
            piece("error", failures=(FAILURE,)),
            ["piece_started", "piece_failed"],
        ),
    ],
)
def test_catch_up_brings_the_host_to_the_members_truth(
    host: PieceState, local: PieceState, expected: list[str]
) -> None:
    events = catch_up("alice", "chars/kfm", host, local, 9.0)
    assert [e.type for e in events] == expected
