"""A room driven by random legal and illegal events: replaying its log equals the live state."""

from __future__ import annotations

import asyncio

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from matchlock.core import events as ev
from matchlock.core.chain import LogDecoder
from matchlock.core.errors import IllegalEventError
from matchlock.core.room import Room, replay
from matchlock.store.eventlog import EventLog, MemoryStore
from tests.core.strategies import OPENED, PIECES, USERS, candidate_events


class RoomWithLog(RuleBasedStateMachine):
    """The live room appends every event it accepts to a log; illegal ones are refused."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.log = EventLog.in_memory("room/r1")
        self.room = Room()
        self.clock = 0.0
        self.accept(OPENED)

    def accept(self, event: ev.Event) -> None:
        self.room.apply(event)
        self.loop.run_until_complete(self.log.append(event))

    def offer(self, event: ev.Event) -> None:
        before = self.room.snapshot()
        try:
            self.accept(event)
        except IllegalEventError:
            assert self.room.snapshot() == before

    @rule(data=st.data())
    def any_event(self, data: st.DataObject) -> None:
        self.clock += 1
        self.offer(data.draw(candidate_events(self.room, self.clock)))

    @rule(user=st.sampled_from(USERS), piece=st.sampled_from(PIECES))
    def piece_found_in_cache(self, user: str, piece: str) -> None:
        self.clock += 1
        self.offer(ev.MemberJoined(at=self.clock, user_id=user))
        self.offer(ev.PieceFinished(at=self.clock, user_id=user, piece=piece, source="cache"))

    @rule(user=st.sampled_from(USERS))
    def member_done(self, user: str) -> None:
        self.clock += 1
        self.offer(ev.MemberDone(at=self.clock, user_id=user))

    @rule()
    def room_moves_on(self) -> None:
        self.clock += 1
        endings: list[ev.Event] = [ev.RoomAllDone(at=self.clock)]
        endings += [ev.MemberGoodbye(at=self.clock, user_id=u) for u in USERS]
        endings.append(ev.RoomClosed(at=self.clock))
        for event in endings:
            self.offer(event)

    @invariant()
    def replaying_the_log_equals_the_live_state(self) -> None:
        assert isinstance(self.log.store, MemoryStore)
        events = list(LogDecoder("memory").events(self.log.store.lines))
        assert replay(events) == self.room.snapshot()

    def teardown(self) -> None:
        self.loop.close()


TestRoomWithLog = RoomWithLog.TestCase
