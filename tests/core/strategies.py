"""Hypothesis strategies for events and rooms, shared by the property and stateful tests.

:func:`candidate_events` proposes, for any room, events of every type with plausible arguments,
legal or not; drawing from it and keeping what applies walks a room through random legal
histories, and the rejected ones exercise the guards.
"""

from __future__ import annotations

from hypothesis import strategies as st

from matchlock.core import events as ev
from matchlock.core.room import Room
from matchlock.tools.testing import pinned, signed_room

USERS = ("alice", "bob", "carol")
PIECES = ("chars/kfm", "chars/ryu", "stages/dojo")
SIZES = {"chars/kfm": 100, "chars/ryu": 0, "stages/dojo": 5000}
CONFIG = signed_room("r1", USERS, pinned(SIZES))
OPENED = ev.RoomOpened(at=0.0, config=CONFIG)

failures = st.builds(
    ev.ResolvableFailure,
    index=st.integers(0, 3),
    url=st.sampled_from(["https://a.example/k.zip", "file:///srv/k.zip"]),
    reason=st.text(max_size=20),
)


def candidate_events(room: Room, at: float) -> st.SearchStrategy[ev.Event]:
    """Events of every type for ``room``, legal or not, at time ``at``."""
    user = st.sampled_from((*USERS, "mallory"))
    piece = st.sampled_from((*PIECES, "chars/zzz"))

    def progress(u: str, p: str) -> st.SearchStrategy[ev.Event]:
        current = (
            room.members[u].pieces[p].done
            if u in room.members and p in room.members[u].pieces
            else 0
        )
        return st.builds(
            ev.PieceProgress,
            at=st.just(at),
            user_id=st.just(u),
            piece=st.just(p),
            done=st.integers(max(0, current - 10), SIZES.get(p, 100) + 10),
        )

    per_piece = st.tuples(user, piece).flatmap(
        lambda up: st.one_of(
            st.just(ev.PieceStarted(at=at, user_id=up[0], piece=up[1])),
            progress(*up),
            failures.map(
                lambda f: ev.ResolvableFailed(at=at, user_id=up[0], piece=up[1], failure=f)
            ),
            st.just(ev.PieceFinished(at=at, user_id=up[0], piece=up[1], source="cache")),
            st.just(
                ev.FolderRejected(
                    at=at,
                    user_id=up[0],
                    piece=up[1],
                    folder="/game/x",
                    where="engine",
                    reason="differs",
                )
            ),
            st.lists(failures, max_size=2).map(
                lambda fs: ev.PieceFailed(at=at, user_id=up[0], piece=up[1], failures=tuple(fs))
            ),
            st.just(ev.PieceRetried(at=at, user_id=up[0], piece=up[1])),
        )
    )
    per_user = user.flatmap(
        lambda u: st.sampled_from(
            [
                ev.MemberJoined(at=at, user_id=u),
                ev.MemberDisconnected(at=at, user_id=u, reason="network"),
                ev.MemberDone(at=at, user_id=u),
                ev.MemberGoodbye(at=at, user_id=u),
                ev.MemberRefused(at=at, user_id=u, code="bad-signature", reason="forged"),
            ]
        )
    )
    per_room = st.sampled_from(
        [
            ev.RoomAllDone(at=at),
            ev.RoomClosed(at=at),
            ev.RoomAborted(at=at, reason="deadline"),
            OPENED,
        ]
    )
    return st.one_of(per_piece, per_piece, per_user, per_room)


@st.composite
def room_histories(draw: st.DrawFn, max_steps: int = 80) -> tuple[list[ev.Event], list[ev.Event]]:
    """A legal history starting with :data:`OPENED`, and the illegal events met on the way."""
    room = Room()
    room.apply(OPENED)
    legal: list[ev.Event] = [OPENED]
    illegal: list[ev.Event] = []
    for step in range(draw(st.integers(0, max_steps))):
        event = draw(candidate_events(room, float(step + 1)))
        try:
            room.apply(event)
        except Exception:
            illegal.append(event)
        else:
            legal.append(event)
    return legal, illegal
