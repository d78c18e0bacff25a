"""A member against a hostile room host: what an outside tester's raw host sent, and what the
member must make of it (a typed :class:`ProtocolError`, or the room's end)."""

from __future__ import annotations

import pytest

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol, ProtocolError
from matchlock.tools.testing import insecure_key, pinned, signed_room
from tests.core.test_host import CONFIG, USERS


def answered() -> ClientProtocol:
    alice = ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    alice.hello()
    alice.receive(pr.encode(pr.Challenge(nonce="00" * 16)))
    return alice


def test_a_welcome_opening_another_validly_signed_room_of_the_same_id_is_refused() -> None:
    other = signed_room(CONFIG.room_id, USERS, pinned({"chars/kfm": 200, "stages/dojo": 50}))
    welcome = pr.Welcome(since=0, events=[ev.RoomOpened(at=0, config=other)])
    alice = answered()
    with pytest.raises(ProtocolError, match="a room other than this member's"):
        alice.receive(pr.encode(welcome))
    assert alice.seen == 0 and alice.phase == "new"  # nothing of it is recorded


def test_a_welcome_opening_a_room_with_forged_signatures_is_a_protocol_error() -> None:
    forged = CONFIG.model_copy(update={"room_id": "r2"})  # the signatures no longer verify
    welcome = pr.Welcome(since=0, events=[ev.RoomOpened(at=0, config=forged)])
    with pytest.raises(ProtocolError, match="the host sent an illegal event"):
        answered().receive(pr.encode(welcome))


def test_a_room_the_host_aborted_ends_the_members_connection_with_the_reason() -> None:
    events = [
        ev.RoomOpened(at=0, config=CONFIG),
        ev.MemberJoined(at=1, user_id="alice"),
        ev.RoomAborted(at=2, reason="the host is shutting down"),
    ]
    alice = answered()
    out = alice.receive(pr.encode(pr.Welcome(since=0, events=events)))
    assert out.aborted == "the host is shutting down" and not out.closed
    assert alice.phase == "closed" and out.events == events
