"""A hypothesis state machine of hostile transfer traffic against the host core: members that ask
for anything, send data frames for any transfer at any offset and of any size, ack, end, cancel
and say unheld at random, leave and come back, beside holders that serve honestly.

After every step: the host buffers at most a window per transfer (sent minus acked) and never
lets a transfer pass its bound; every data frame relayed is the very bytes its transfer's holder
sent, to that transfer's requester only; what each member receives of a transfer is in order,
from the offset it was told, within the bound, from the holder it was told; a version 1 member
never receives anything of protocol 2; and the room's state is what its history replays to."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.host import HostOutput
from matchlock.core.room import replay
from matchlock.core.transfers import form_bound
from tests.core.transfer_net import CONFIG, DOJO, KFM, SONG, Member, Net

MEMBERS = ("alice", "bob", "carol", "dave")
PIECES = (KFM, DOJO, SONG, "chars/ryu")
SIZES = (1, 7, 1000, pr.MAX_CHUNK_BYTES, pr.MAX_CHUNK_BYTES + 1)
_PAYLOADS = {size: bytes([size % 251]) * size for size in SIZES}


class Seen:
    """What one member was told of one transfer, and how far its bytes have come."""

    def __init__(self, sending: tm.Sending) -> None:
        self.holder = sending.holder
        self.next = sending.offset
        pinned = CONFIG.content[sending.piece]
        bound = form_bound(pinned, sending.form)
        assert bound is not None
        self.bound = bound


class HostileTransfers(RuleBasedStateMachine):
    """Members alice and bob hold every piece; everyone may ask; erin speaks protocol 1."""

    def __init__(self) -> None:
        super().__init__()
        self.net = Net()
        self.by_user: dict[str, Member] = {}
        for user in MEMBERS:
            self._join(user)
        self.old = self.net.join("erin", protocol=1)
        self.read: dict[int, int] = {}  # conn -> frames already checked
        self.seen: dict[int, dict[int, Seen]] = {}  # conn -> transfer -> what it was told

    def _join(self, user: str) -> None:
        member = self.by_user[user] = self.net.join(user)
        room = self.net.host.rooms[CONFIG.room_id].room
        for piece in (KFM, DOJO, SONG) if user in ("alice", "bob") else ():
            if room.piece_state(user, piece).status != "finished":
                member.report(ev.PieceFinished(at=0, user_id=user, piece=piece, source="cache"))

    def _numbers(self) -> st.SearchStrategy[int]:
        known = sorted(self.net.host.transfers.running) or [1]
        return st.sampled_from(known) | st.integers(1, 2**32 - 1)

    def _send(self, member: Member, frame: bytes) -> HostOutput:
        before = {n: (t.holder, t.requester) for n, t in self.net.host.transfers.running.items()}
        out = member.send(frame)
        for to, data in out.sends:
            if pr.is_data_frame(data):  # relayed: the very frame, from the holder, to the requester
                assert data is frame
                holder, requester = before[pr.data_header(data)[0]]
                assert (holder, requester) == (member.conn, to)
        return out

    @rule(data=st.data())
    def want(self, data: st.DataObject) -> None:
        member = self.by_user[data.draw(st.sampled_from(MEMBERS))]
        avoid = data.draw(st.lists(st.sampled_from([*MEMBERS, "erin"]), max_size=3, unique=True))
        want = tm.Want(
            piece=data.draw(st.sampled_from(PIECES)),
            form=data.draw(st.sampled_from(["archive", "folder"])),
            offset=data.draw(
                st.sampled_from([0, 1, 299, 300, 6 << 20]) | st.integers(0, 2**53 - 1)
            ),
            avoid=tuple(avoid),
        )
        self._send(member, pr.encode(want))

    @rule(data=st.data())
    def hostile_data(self, data: st.DataObject) -> None:
        member = self.by_user[data.draw(st.sampled_from(MEMBERS))]
        number = data.draw(self._numbers())
        running = self.net.host.transfers.running.get(number)
        expected = running.sent if running is not None else 0
        offset = data.draw(st.sampled_from([expected, expected + 1]) | st.integers(0, 2**64 - 1))
        payload = _PAYLOADS[data.draw(st.sampled_from(SIZES))]
        frame = pr.DATA_FRAME_TAG.to_bytes(1, "big") + number.to_bytes(4, "big")
        self._send(member, frame + offset.to_bytes(8, "big") + payload)

    @rule(data=st.data())
    def honest_data(self, data: st.DataObject) -> None:
        running = sorted(self.net.host.transfers.running.items())
        if not running:
            return
        number, transfer = data.draw(st.sampled_from(running))
        room = min(
            transfer.bound - transfer.sent,
            transfer.acked + tm.TRANSFER_WINDOW_BYTES - transfer.sent,
        )
        sizes = [s for s in SIZES if s <= min(room, pr.MAX_CHUNK_BYTES)]
        if not sizes:
            return
        holder = self.net.members[transfer.holder]
        payload = _PAYLOADS[data.draw(st.sampled_from(sizes))]
        out = self._send(holder, pr.data_frame(number, transfer.sent, payload))
        assert [to for to, _ in out.sends] == [transfer.requester]

    @rule(data=st.data())
    def eager_holder(self, data: st.DataObject) -> None:
        """A holder that sends whole chunks at the right offsets, heedless of the window."""
        running = sorted(self.net.host.transfers.running.items())
        if not running:
            return
        number, transfer = data.draw(st.sampled_from(running))
        holder = self.net.members[transfer.holder]
        for _ in range(data.draw(st.integers(1, 10))):
            size = min(pr.MAX_CHUNK_BYTES, transfer.bound - transfer.sent)
            if size < 1 or number not in self.net.host.transfers.running:
                return
            self._send(
                holder, pr.data_frame(number, transfer.sent, _PAYLOADS[pr.MAX_CHUNK_BYTES][:size])
            )

    @rule(data=st.data())
    def control(self, data: st.DataObject) -> None:
        member = self.by_user[data.draw(st.sampled_from(MEMBERS))]
        number = data.draw(self._numbers())
        kind = data.draw(st.sampled_from(["ack", "end", "unheld", "cancel"]))
        if kind == "ack":
            running = self.net.host.transfers.running.get(number)
            sent = running.sent if running is not None else 0
            offset = data.draw(st.sampled_from([sent, sent + 1, 0]) | st.integers(0, 2**53 - 1))
            message: tm.MemberTransferMessage = tm.Ack(transfer=number, offset=offset)
        elif kind == "end":
            message = tm.End(transfer=number)
        elif kind == "unheld":
            message = tm.Unheld(transfer=number, reason="gone")
        else:
            message = tm.Cancel(transfer=number, reason="enough")
        self._send(member, pr.encode(message))

    @rule(data=st.data())
    def leave_and_return(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(MEMBERS))
        member = self.by_user[user]
        self.net.take(self.net.host.disconnect(member.conn, 2.0))
        member.closed = True
        self._join(user)

    @rule(data=st.data())
    def old_member_tries(self, data: st.DataObject) -> None:
        if self.old.closed:
            return
        frame = data.draw(
            st.sampled_from(
                [pr.data_frame(1, 0, b"x"), pr.encode(tm.Want(piece=KFM, form="archive"))]
            )
        )
        self.old.send(frame)
        assert self.old.refused().fatal

    @invariant()
    def the_host_holds_at_most_a_window_within_the_bound(self) -> None:
        for transfer in self.net.host.transfers.running.values():
            assert transfer.acked <= transfer.sent <= transfer.bound
            assert transfer.sent - transfer.acked <= tm.TRANSFER_WINDOW_BYTES

    def _read(self) -> None:
        """Check every frame each member was sent since the last step."""
        for conn, member in self.net.members.items():
            seen = self.seen.setdefault(conn, {})
            for frame in member.frames[self.read.get(conn, 0) :]:
                if not pr.is_data_frame(frame):
                    message = pr.decode_host_message(frame)
                    if isinstance(message, tm.Sending):
                        seen[message.transfer] = Seen(message)
                    continue
                chunk = pr.parse_data_frame(frame)
                told = seen[chunk.transfer]  # only transfers it was told of
                assert chunk.offset == told.next
                told.next += len(chunk.payload)
                assert told.next <= told.bound
            self.read[conn] = len(member.frames)

    @invariant()
    def each_member_gets_its_transfers_in_order_from_the_holder_it_was_told(self) -> None:
        self._read()
        users = {m.conn: m.user for m in self.net.members.values()}
        for transfer in self.net.host.transfers.running.values():
            told = self.seen[transfer.requester][transfer.id]
            assert told.holder == users[transfer.holder]
            assert told.next == transfer.sent  # nothing held back, nothing made up

    @invariant()
    def a_version_1_member_sees_nothing_of_protocol_2(self) -> None:
        assert not any(pr.is_data_frame(f) for f in self.old.frames)
        kinds = {type(m) for m in self.old.messages()}
        assert kinds <= {pr.Challenge, pr.Welcome, pr.Relay, pr.Refused}

    @invariant()
    def the_room_is_its_history(self) -> None:
        hosted = self.net.host.rooms[CONFIG.room_id]
        assert replay(hosted.history) == hosted.room.snapshot()


HostileTransfers.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
test_hostile_transfers = HostileTransfers.TestCase
