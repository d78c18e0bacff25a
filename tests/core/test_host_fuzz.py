"""A hypothesis fuzzer over the host core: arbitrary frames from peers that never prove who they
are, and from members that did, interleaved with honest joins, disconnects and restarts.

After every step: no exception escaped :meth:`HostProtocol.receive`; nothing a stranger sent
changed any room's state or history (nor opened a room); every room's live state is what its
history replays to; and a room's history stays within its bounds."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol
from matchlock.core.host import MAX_HISTORY_BYTES, HostOutput, HostProtocol
from matchlock.core.room import replay
from matchlock.tools.testing import insecure_key, pinned, signed_room

USERS = ("alice", "bob", "carol")
CONFIG = signed_room("fuzz", USERS, pinned({"chars/kfm": 100, "stages/dojo": 50}))
OTHER = signed_room("other", ("alice", "dave"), pinned({"chars/kfm": 100}))
VALID = json.loads(pr.encode(pr.Hello(protocol=1, room=CONFIG, user_id="alice")))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _event_dicts() -> st.SearchStrategy[dict[str, Any]]:
    piece = st.sampled_from(["chars/kfm", "stages/dojo", "chars/zzz", "../etc", ""])
    user = st.sampled_from([*USERS, "mallory", ""])
    kinds = st.sampled_from(
        [
            "piece_started",
            "piece_progress",
            "piece_finished",
            "piece_failed",
            "piece_retried",
            "resolvable_failed",
            "folder_rejected",
            "member_done",
            "room_closed",
            "room_opened",
        ]
    )
    return st.fixed_dictionaries(
        {"type": kinds, "v": st.sampled_from([1, 1, 2, "1"]), "at": st.floats(), "user_id": user},
        optional={
            "piece": piece,
            "done": st.integers(-5, 200) | json_values,
            "source": st.text(max_size=30),
            "failure": json_values,
            "failures": st.lists(json_values, max_size=3),
            "reason": st.text(max_size=30),
        },
    )


def _mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from([*base, "extra"]), json_values, max_size=3).map(
        lambda changes: {**base, **changes}
    )


frames = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda value: json.dumps(value).encode()),
    _mutated(VALID).map(lambda value: json.dumps(value).encode()),
    st.builds(
        lambda user, since: pr.encode(
            pr.Hello(protocol=1, room=CONFIG, user_id=user, since=since)
        ),
        st.sampled_from([*USERS, "mallory"]),
        st.integers(0, 40),
    ),
    st.just(pr.encode(pr.Hello(protocol=1, room=OTHER, user_id="alice"))),
    st.binary(min_size=64, max_size=64).map(
        lambda sig: json.dumps({"type": "answer", "signature": sig.hex()[:88]}).encode()
    ),
    _event_dicts().map(lambda event: json.dumps({"type": "report", "event": event}).encode()),
    st.just(b'{"type":"goodbye"}'),
    st.just(b'{"type":"report","event":{"type":"piece_started","user_id":"alice","user_id":"bob"}}'),
)


class HostUnderFire(RuleBasedStateMachine):
    """One host core; honest members join and leave; strangers and members send anything."""

    def __init__(self) -> None:
        super().__init__()
        self.host = HostProtocol()
        self.next_conn = 0
        self.members: dict[str, tuple[int, ClientProtocol]] = {}
        self.strangers: list[int] = []
        self.pending: list[tuple[int, ClientProtocol, bytes]] = []
        self.at = 1.0

    def _connect(self) -> int:
        self.next_conn += 1
        self.host.connect(self.next_conn, self.next_conn.to_bytes(16, "big"))
        return self.next_conn

    def _take(self, out: HostOutput) -> HostOutput:
        for conn in out.closes:
            self.strangers = [c for c in self.strangers if c != conn]
            self.members = {u: m for u, m in self.members.items() if m[0] != conn}
            self.pending = [p for p in self.pending if p[0] != conn]
        return out

    def _fingerprint(self) -> dict[str, tuple[int, object]]:
        return {
            room_id: (len(hosted.history), hosted.room.snapshot())
            for room_id, hosted in self.host.rooms.items()
        }

    @rule(data=st.data())
    def stranger_sends(self, data: st.DataObject) -> None:
        if not self.strangers or data.draw(st.booleans()):
            self.strangers.append(self._connect())
        conn = data.draw(st.sampled_from(self.strangers))
        before = self._fingerprint()
        self.at += 1
        out = self._take(self.host.receive(conn, data.draw(frames), self.at))
        assert out.events == [], "a stranger's frame was recorded"
        assert self._fingerprint() == before, "a stranger's frame changed a room"

    @rule(user=st.sampled_from(USERS))
    def member_says_hello(self, user: str) -> None:
        """The first half of an honest join; the answer may come much later (or never)."""
        client = ClientProtocol(CONFIG, user, insecure_key(user))
        conn = self._connect()
        self.at += 1
        out = self._take(self.host.receive(conn, client.hello(), self.at))
        frame = [frame for c, frame in out.sends if c == conn][-1]
        if isinstance(pr.decode_host_message(frame), pr.Challenge):
            self.pending.append((conn, client, client.receive(frame).sends[0]))

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def member_answers(self, data: st.DataObject) -> None:
        conn, client, answer = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
        self.at += 1
        self._take(self.host.receive(conn, answer, self.at))
        if self.host.joined(conn) and client.user_id not in self.members:
            self.members[client.user_id] = (conn, client)

    @precondition(lambda self: self.members)
    @rule(data=st.data())
    def member_sends(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.members)))
        self.at += 1
        self._take(self.host.receive(self.members[user][0], data.draw(frames), self.at))

    @precondition(lambda self: self.members)
    @rule(data=st.data())
    def member_reports_honestly(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.members)))
        piece = data.draw(st.sampled_from(["chars/kfm", "stages/dojo"]))
        event = data.draw(
            st.sampled_from(
                [
                    ev.PieceStarted(at=0, user_id=user, piece=piece),
                    ev.PieceFinished(at=0, user_id=user, piece=piece, source="cache"),
                ]
            )
        )
        self.at += 1
        frame = pr.encode(pr.Report(event=event))
        self._take(self.host.receive(self.members[user][0], frame, self.at))

    @precondition(lambda self: self.members)
    @rule(data=st.data())
    def member_leaves(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.members)))
        self.at += 1
        self._take(self.host.disconnect(self.members.pop(user)[0], self.at))

    @rule()
    def host_restarts(self) -> None:
        histories = [list(hosted.history) for hosted in self.host.rooms.values()]
        self.host = HostProtocol()
        self.members, self.strangers, self.pending = {}, [], []
        for history in histories:
            self.host.restore(history, self.at)

    @invariant()
    def every_room_is_its_history(self) -> None:
        for hosted in self.host.rooms.values():
            assert replay(hosted.history) == hosted.room.snapshot()
            size = sum(len(ev.EventAdapter.dump_json(e)) for e in hosted.history)
            assert size <= MAX_HISTORY_BYTES + (1 << 16)

    @invariant()
    def only_the_signed_room_exists(self) -> None:
        assert set(self.host.rooms) <= {"fuzz", "other"}
        assert "other" not in self.host.rooms  # only strangers ever name it


HostUnderFire.TestCase.settings = settings(stateful_step_count=40, deadline=None)
test_host_under_fire = HostUnderFire.TestCase
