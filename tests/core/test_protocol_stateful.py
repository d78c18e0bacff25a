"""Hypothesis drives the host and member protocols (the real cores, over the simulated world's
network): it chooses every delivery, download step, drop, crash and hostile act, and shrinks a
failure to the shortest program. The invariants are the simulation's, with every log replayed
at every step."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from matchlock.core.config import PinnedPiece
from matchlock.tools.testing import signed_room
from tests.tools.sim.protocol_invariants import check_logs, check_step
from tests.tools.sim.protocol_world import FAULTS, SimMember, World

USERS = ("u0", "u1", "u2")


class RoomProtocols(RuleBasedStateMachine):
    """One host, three members and an adversary; hypothesis is the scheduler."""

    world: World

    @initialize(seed=st.integers(0, 2**32 - 1))
    def build(self, seed: int) -> None:
        pieces = {
            f"chars/p{i}": PinnedPiece(sha256=f"{i:064x}", size=1000 * (i + 1)) for i in range(2)
        }
        room = signed_room("stateful", USERS, pieces)
        self.world = World(random.Random(seed), room, frozenset(FAULTS), frozenset())

    def member(self, data: st.DataObject) -> SimMember:
        return self.world.members[data.draw(st.sampled_from(USERS))]

    def tick(self) -> None:
        self.world.step_no += 1

    @precondition(lambda self: any(self.world.queues.values()))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        self.tick()
        busy = sorted(key for key, queue in self.world.queues.items() if queue)
        self.world.deliver(data.draw(st.sampled_from(busy)))

    @rule(data=st.data())
    def download_step(self, data: st.DataObject) -> None:
        self.tick()
        member = self.member(data)
        work = self.world.pending_work(member)
        if work:
            self.world.work(member, data.draw(st.sampled_from(work)))

    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        self.tick()
        member = self.member(data)
        if member.conn is None and member.client.phase != "closed":
            self.world.rejoin(member)

    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.tick()
        member = self.member(data)
        if member.conn is not None:
            self.world.close(member.conn, tell_host=True)

    @rule(tear=st.booleans())
    def crash_host(self, tear: bool) -> None:
        self.tick()
        self.world.crash_host(tear)

    @rule()
    def impostor(self) -> None:
        self.tick()
        self.world.intrude()

    @rule(data=st.data())
    def bad_report(self, data: st.DataObject) -> None:
        self.tick()
        member = self.member(data)
        if member.conn is not None and member.client.phase == "joined":
            self.world.misbehave(member)

    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        self.tick()
        member = self.member(data)
        if member.conn is not None and member.client.phase == "joined" and member.last_report:
            self.world.duplicate(member)

    @invariant()
    def every_invariant_and_every_log(self) -> None:
        if self.world.host.core.rooms:
            check_step(self.world)
            check_logs(self.world)


TestRoomProtocols = RoomProtocols.TestCase
TestRoomProtocols.settings = settings(stateful_step_count=60, deadline=None)
