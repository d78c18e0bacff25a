"""The host core across the crash windows of issue 9 and the late steps of issue 10: a member
that said goodbye, or whose room closed before it heard so, is welcomed read-only and finishes;
a join is checked again at the answer; nothing is written after a room's close."""

from __future__ import annotations

from pathlib import Path

from matchlock.app.hosting import RoomHost
from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol
from matchlock.core.host import HostProtocol
from matchlock.core.room import replay
from matchlock.store.eventlog import EventLog
from matchlock.tools.testing import insecure_key
from matchlock.transport.memory import memory_connector
from tests.core.test_host import CONFIG, USERS, Harness, refused, report


def finish_all(h: Harness, conns: dict[int, ClientProtocol]) -> None:
    for conn, client in conns.items():
        for key in ("chars/kfm", "stages/dojo"):
            finished = ev.PieceFinished(at=0, user_id=client.user_id, piece=key, source="cache")
            h.send(conn, report(client.user_id, finished))


def feed(h: Harness, conn: int, client: ClientProtocol, start: int = 1) -> list[bytes]:
    """Give ``client`` every frame the host sent on ``conn`` from ``start`` (after the challenge
    its join answered); what it sends back."""
    sends: list[bytes] = []
    for message in h.sent[conn][start:]:
        sends += client.receive(pr.encode(message)).sends
    return sends


def closed_room() -> Harness:
    """A host core whose room ran to its close: every member finished and said goodbye."""
    h = Harness()
    conns = dict(h.join(u) for u in USERS)
    finish_all(h, conns)
    for conn, client in conns.items():
        for frame in feed(h, conn, client):
            h.send(conn, frame)
    return h


def restarted(h: Harness) -> Harness:
    """A new host core rebuilt from what ``h`` recorded (the process was killed)."""
    again = Harness()
    again.host = HostProtocol()
    _, out = again.host.restore(list(h.recorded), at=50.0)
    again.recorded = list(h.recorded)
    again.take(out)
    again.next_id = 100
    return again


def rejoin(h: Harness, client: ClientProtocol) -> int:
    conn = h.connect()
    h.send(conn, client.hello())
    h.send(conn, client.receive(pr.encode(h.last(conn))).sends[0])
    return conn


def test_a_member_that_said_goodbye_before_the_crash_is_welcomed_and_finishes() -> None:
    h = Harness()
    conns = dict(h.join(u) for u in USERS)
    finish_all(h, conns)
    alice_conn, alice = next(iter(conns.items()))
    for frame in feed(h, alice_conn, alice):
        h.send(alice_conn, frame)  # alice's goodbye reaches the log; then the host dies
    assert h.recorded[-1] == ev.MemberGoodbye(at=1.0, user_id="alice")
    again = restarted(h)
    fresh_alice = ClientProtocol(CONFIG, "alice", insecure_key("alice"), h.recorded[:-1])
    conn = rejoin(again, fresh_alice)
    welcome = again.sent[conn][1]
    assert isinstance(welcome, pr.Welcome)  # not refused: the rest of the history
    assert welcome.events[0].type == "member_goodbye"
    bob = ClientProtocol(CONFIG, "bob", insecure_key("bob"), h.recorded)
    bob_conn = rejoin(again, bob)
    for frame in feed(again, bob_conn, bob):
        again.send(bob_conn, frame)
    assert again.state().status == "closed"
    assert conn in again.closed
    assert feed(again, conn, fresh_alice) == []  # no goodbye said twice
    assert fresh_alice.phase == "closed"
    assert replay(again.recorded) == again.state()


def test_a_closed_room_welcomes_its_members_with_the_close() -> None:
    h = closed_room()
    assert h.state().status == "closed"
    again = restarted(h)
    for user in USERS:  # each heard nothing after its own joining: the close was never sent
        client = ClientProtocol(CONFIG, user, insecure_key(user), h.recorded[:3])
        conn = rejoin(again, client)
        welcome = again.sent[conn][1]
        assert isinstance(welcome, pr.Welcome) and welcome.events[-1].type == "room_closed"
        assert client.receive(pr.encode(welcome)).closed and conn in again.closed
        assert again.host.everyone_told("r1") is (user == USERS[-1])
    assert again.recorded == h.recorded  # read-only: nothing was added
    assert h.host.everyone_told("r1")  # the first host sent the close to everyone connected


def test_restore_closes_a_room_whose_every_member_said_goodbye() -> None:
    h = closed_room()
    torn = [e for e in h.recorded if e.type != "room_closed"]  # the close never reached the disk
    host = HostProtocol()
    _, out = host.restore(torn, at=9.0)
    assert [r.event.type for r in out.events] == ["room_closed"]


def test_an_answer_after_the_user_said_goodbye_is_welcomed_read_only() -> None:
    h = Harness()
    conns = dict(h.join(u) for u in USERS)
    alice_conn, alice = next(iter(conns.items()))
    h.take(h.host.disconnect(alice_conn, 2.0))
    late = h.connect()  # challenged while alice could still join
    h.send(late, alice.hello())
    answer = alice.receive(pr.encode(h.last(late))).sends[0]
    again = ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    back = rejoin(h, again)
    finish_all(h, {back: again, **{c: m for c, m in conns.items() if c != alice_conn}})
    for frame in feed(h, back, again):
        h.send(back, frame)  # alice's goodbye
    h.take(h.host.disconnect(back, 3.0))
    before = list(h.recorded)
    h.send(late, answer)  # the late answer: before the fix, IllegalEventError escaped
    assert isinstance(h.last(late), pr.Welcome)
    assert h.recorded == before


def test_an_answer_after_the_room_closed_gets_the_close_and_nothing_is_recorded() -> None:
    h = Harness()
    conns = dict(h.join(u) for u in USERS)
    late = h.connect()
    stranger_alice = ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    h.send(late, stranger_alice.hello())
    refused(h, late, "already-connected", fatal=True)  # alice is in: the hello is refused
    alice_conn = next(iter(conns))
    h.take(h.host.disconnect(alice_conn, 2.0))
    late = h.connect()
    h.send(late, stranger_alice.hello())
    answer = stranger_alice.receive(pr.encode(h.last(late))).sends[0]
    back = rejoin(h, ClientProtocol(CONFIG, "alice", insecure_key("alice")))
    conns = {back: ClientProtocol(CONFIG, "alice", insecure_key("alice"))} | {
        c: m for c, m in conns.items() if c != alice_conn
    }
    finish_all(h, conns)
    for conn in conns:
        h.send(conn, pr.encode(pr.Goodbye()))
    assert h.state().status == "closed"
    closed_at = len(h.recorded)
    h.send(late, answer)
    welcome = h.last(late)
    assert isinstance(welcome, pr.Welcome) and welcome.events[-1].type == "room_closed"
    assert late in h.closed
    stranger = h.connect()  # and no refusal after the close is written
    h.send(stranger, pr.encode(pr.Hello(protocol=1, room=CONFIG, user_id="mallory")))
    h.send(h.connect(), b"{garbage")
    assert len(h.recorded) == closed_at and h.recorded[-1].type == "room_closed"


def test_reports_after_goodbye_are_refused_read_only_and_not_recorded() -> None:
    h = Harness()
    conns = dict(h.join(u) for u in USERS)
    finish_all(h, conns)
    alice_conn = next(iter(conns))
    h.send(alice_conn, pr.encode(pr.Goodbye()))
    before = list(h.recorded)
    h.send(alice_conn, pr.encode(pr.Goodbye()))  # said again: nothing to do
    h.send(alice_conn, report("alice", ev.PieceStarted(at=0, user_id="alice", piece="chars/kfm")))
    refused(h, alice_conn, "read-only", fatal=False)
    assert h.recorded == before


async def test_a_restarted_host_lingers_until_every_member_was_sent_the_close(
    tmp_path: Path,
) -> None:
    """``join --host`` stops hosting only once every member was sent its room's close: a
    player hosting over direct TCP, killed after the close reached its log, used to stop again
    as soon as its own member finished, and the others never heard the close."""
    h = closed_room()
    log = await EventLog.create(tmp_path / "r1.log", "room/r1")
    await log.append(*h.recorded)
    await log.close()
    host = RoomHost(tmp_path)
    await host.start()
    connect = memory_connector(host)
    try:
        assert not await host.linger("r1", 0.2)  # nobody was sent the close yet
        for user in USERS:
            client = ClientProtocol(CONFIG, user, insecure_key(user), h.recorded[:3])
            link = await connect("memory://")
            link.send_nowait(client.hello())
            link.send_nowait(client.receive(await link.recv()).sends[0])
            assert client.receive(await link.recv()).closed
        assert await host.linger("r1", 5.0)
    finally:
        await host.stop()
