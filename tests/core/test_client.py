"""The sans-IO member: joining, mirroring the host, goodbye, catching up after a reconnect."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol, ProtocolError, catch_up
from matchlock.core.errors import UsageError
from matchlock.core.host import HostProtocol
from matchlock.core.room import PieceState, Room
from matchlock.tools.testing import insecure_key
from tests.core.test_host import CONFIG, Harness, report


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


# -- issue 9.6: catch-up sends only what the host lacks ---------------------------------------

PIECES = {"chars/kfm": 100, "stages/dojo": 50}


def next_event(data: st.DataObject, room: Room, key: str) -> ev.Event | None:
    """A legal next event of alice's downloader for ``key`` in ``room`` (None: finished)."""
    state = room.members["alice"].pieces[key]
    at, size = 1.0, PIECES[key]
    match state.status:
        case "finished":
            return None
        case "error":
            return ev.PieceRetried(at=at, user_id="alice", piece=key)
        case "not_started":
            choices: list[ev.Event] = [
                ev.PieceStarted(at=at, user_id="alice", piece=key),
                ev.PieceFinished(at=at, user_id="alice", piece=key, source="cache"),
            ]
        case _:
            done = data.draw(st.integers(state.done, size))
            choices = [
                ev.PieceProgress(at=at, user_id="alice", piece=key, done=done),
                ev.ResolvableFailed(at=at, user_id="alice", piece=key, failure=FAILURE),
                ev.FolderRejected(
                    at=at, user_id="alice", piece=key, folder="/g", where="cache", reason="edited"
                ),
                ev.PieceFinished(at=at, user_id="alice", piece=key, source="https://a.example"),
                ev.PieceFailed(at=at, user_id="alice", piece=key, failures=(FAILURE,)),
            ]
    return data.draw(st.sampled_from(choices))


def walk(data: st.DataObject, room: Room, steps: int) -> list[ev.Event]:
    """Up to ``steps`` legal events of alice's pieces, applied to ``room``."""
    events: list[ev.Event] = []
    for _ in range(steps):
        event = next_event(data, room, data.draw(st.sampled_from(sorted(PIECES))))
        if event is not None:
            room.apply(event)
            events.append(event)
    return events


class Wire:
    """One connection between the member core and a real host core, each direction in order."""

    def __init__(self, host: HostProtocol, client: ClientProtocol, conn: int) -> None:
        self.host, self.client, self.conn = host, client, conn
        self.up: list[bytes] = []
        self.down: list[bytes] = []
        host.connect(conn, conn.to_bytes(16, "big"))
        self.up.append(client.hello())

    def to_host(self) -> None:
        out = self.host.receive(self.conn, self.up.pop(0), 2.0)
        self.down += [frame for conn, frame in out.sends if conn == self.conn]

    def to_client(self) -> None:
        out = self.client.receive(self.down.pop(0))
        assert out.refused is None, out.refused
        self.up += out.sends


@given(st.data())
def test_every_report_is_legal_when_it_arrives_and_the_host_ends_finished(
    data: st.DataObject,
) -> None:
    """For any host view (a history of alice's pieces, restored after a host restart), any part
    of it the member already holds, and any local events (a fresh local state: a restarted
    member; or one moving on while disconnected), interleaved in any way with the two
    directions of the connection and with lost connections: the host refuses nothing, and once
    the local pieces are finished so are the host's."""
    history: list[ev.Event] = [
        ev.RoomOpened(at=0.0, config=CONFIG),
        ev.MemberJoined(at=0.0, user_id="alice"),
    ]
    opened = Room()
    for event in history:
        opened.apply(event)
    history += walk(data, opened, data.draw(st.integers(0, 12)))
    host = HostProtocol()
    host.restore(history, 1.0)
    known = history[: data.draw(st.integers(0, len(history)))]
    client = ClientProtocol(CONFIG, "alice", insecure_key("alice"), known)
    wire = Wire(host, client, 1)
    for _ in range(data.draw(st.integers(0, 60))):
        action = data.draw(st.sampled_from(["local", "up", "down", "drop"]))
        if action == "local":
            key = data.draw(st.sampled_from(sorted(PIECES)))
            step = next_event(data, client.local, key)
            if step is not None:
                wire.up += client.piece_event(step)
        elif action == "up" and wire.up:
            wire.to_host()
        elif action == "down" and wire.down:
            wire.to_client()
        elif action == "drop" and client.phase != "closed":
            host.disconnect(wire.conn, 2.0)
            wire = Wire(host, client, wire.conn + 1)
    for key in sorted(PIECES):  # the downloads end well
        while (last := next_event_finishing(client.local, key)) is not None:
            wire.up += client.piece_event(last)
    while wire.up or wire.down:
        wire.to_host() if wire.up else wire.to_client()
    assert host.refusals == Counter()
    mine = host.rooms["r1"].room.members["alice"]
    assert {key: p.status for key, p in mine.pieces.items()} == dict.fromkeys(PIECES, "finished")
    assert mine.status == "done"


def next_event_finishing(room: Room, key: str) -> ev.Event | None:
    status = room.members["alice"].pieces[key].status
    if status == "error":
        return ev.PieceRetried(at=3.0, user_id="alice", piece=key)
    if status == "finished":
        return None
    return ev.PieceFinished(at=3.0, user_id="alice", piece=key, source="https://a.example")


def test_already_connected_ends_only_this_connection() -> None:
    """The host has not yet noticed that the member's last connection is gone: try again."""
    h = Harness()
    h.join("alice")
    again = ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    conn = h.connect()
    h.send(conn, again.hello())
    out = again.receive(pr.encode(h.last(conn)))
    assert out.refused is not None and out.refused.code == "already-connected"
    assert out.retry and again.phase == "new"


def test_the_events_before_an_illegal_one_are_still_recorded() -> None:
    alice = ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    alice.hello()
    alice.receive(pr.encode(pr.Challenge(nonce="00" * 16)))
    good = [ev.RoomOpened(at=0, config=CONFIG), ev.MemberJoined(at=1, user_id="alice")]
    welcome = pr.Welcome(since=0, events=[*good, ev.RoomClosed(at=2)])
    with pytest.raises(ProtocolError, match="illegal event") as caught:
        alice.receive(pr.encode(welcome))
    assert caught.value.events == good and alice.seen == 2  # the log keeps what the mirror holds
    assert alice.phase == "new"
