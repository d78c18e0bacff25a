"""Rooms whose pieces come from their members, for the peer tests: the room, each member's
match-lock config (the mirrors it knows, which may answer 404), a member run with
:func:`matchlock.app.joining.join`, and what its log says about transfers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matchlock.app.hosting import RoomHost
from matchlock.app.joining import join
from matchlock.core import events as ev
from matchlock.core.config import MatchLockConfig, PinnedPiece, RoomConfig
from matchlock.store.eventlog import read_events
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport.connect import listen
from tests.app.room_content import DOJO, KFM
from tests.downloads.conftest import ContentServer, config, piece, sha256

PIECES = {
    "chars/kfm": PinnedPiece(sha256=sha256(KFM), size=len(KFM)),
    "stages/dojo": PinnedPiece(sha256=sha256(DOJO), size=len(DOJO)),
}


def room_of(room_id: str, users: Sequence[str]) -> RoomConfig:
    """The room of kfm and dojo for ``users``, signed by them all."""
    return signed_room(room_id, users, PIECES)


def lock(server: ContentServer, kfm_route: str) -> MatchLockConfig:
    """A member's config: kfm through ``kfm_route`` (``ok`` or ``missing``, a 404), dojo ok."""
    return config(
        {
            "chars": {
                "mandatory": True,
                "pieces": {"kfm": piece(KFM, server.url(kfm_route, "kfm.zip"), unpack="zip")},
            },
            "stages": {
                "mandatory": True,
                "pieces": {"dojo": piece(DOJO, server.url("ok", "dojo.zip"), unpack="zip")},
            },
        }
    )


async def member(
    url: str,
    room: RoomConfig,
    user: str,
    lock: MatchLockConfig,
    folder: Path,
    **options: Any,
) -> dict[str, Path]:
    """``user`` joins ``room`` at ``url`` with its cache and log under ``folder / user``."""
    return await join(
        url,
        room=room,
        user_id=user,
        key=insecure_key(user),
        config=lock,
        dest=folder / user / "cache",
        log_path=folder / user / "room.log",
        retry_delay=0.05,
        deadline=30,
        **options,
    )


def transfers(log: Path) -> list[ev.TransferReceived | ev.TransferServed]:
    """The member-local transfer events in a member's log, in order."""
    return [e for e in read_events(log).events if isinstance(e, ev.MEMBER_LOCAL)]


def sources(log: Path) -> Mapping[str, str]:
    """Where the log's member (the user of its folder) got each piece, by piece."""
    user = log.parent.name
    return {
        e.piece: e.source
        for e in read_events(log).events
        if isinstance(e, ev.PieceFinished) and e.user_id == user
    }


class WsRoom:
    """A real room host on ``ws://127.0.0.1`` (its log under ``folder / "host"``) while open."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = ""

    async def __aenter__(self) -> WsRoom:
        self.host = RoomHost(self.folder / "host")
        await self.host.start()
        self.listener = await listen("ws://127.0.0.1:0", self.host)
        self.url = self.listener.url
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.listener.close()
        await self.host.stop()
