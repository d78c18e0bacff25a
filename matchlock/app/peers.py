"""A member's peers: what it asks of the room and what it serves, over the room's connection.

:class:`Peers` joins the two halves for :mod:`matchlock.app.joining`: the room's resolver
(:class:`~matchlock.downloads.resolvers.room.RoomResolver`, given to every download job as
``room:``) and, unless the member said ``serve=False``, the
:class:`~matchlock.app.serving.PieceServer`. The member's shell calls :meth:`Peers.welcomed`
once the host's welcome says whether it speaks peers, :meth:`Peers.handle` with every transfer
message and data frame, :meth:`Peers.room_event` with every room event, and
:meth:`Peers.link_down` when a connection ends. It decides nothing about the room itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matchlock.app.serving import PieceServer
from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.client import ClientProtocol, HostTransfer
from matchlock.core.config import MatchLockConfig, RoomConfig
from matchlock.downloads.resolvers import ResolverFactory
from matchlock.downloads.resolvers.registry import already_open
from matchlock.downloads.resolvers.room import ROOM_SCHEME, RoomResolver

__all__ = ["Peers"]

_CHANGES = (ev.PieceFinished, ev.MemberJoined, ev.MemberDisconnected, ev.PieceFailed)
"""Room events after which a piece nobody could give may be given: ask again."""


class Peers:
    """The room's resolver and (with ``serve``) the server of one member; see the module docs.
    ``record`` receives the member-local transfer events for the member's log."""

    def __init__(
        self,
        room: RoomConfig,
        config: MatchLockConfig,
        client: ClientProtocol,
        *,
        serve: bool,
        cache_root: Path,
        engine_root: Path | None,
        record: Callable[[ev.Event], None],
        clock: Callable[[], float],
        upload_limit: float | None = None,
        read_timeout: float = 30.0,
    ) -> None:
        self.serve = serve
        user_id = client.user_id
        self.resolver = RoomResolver(
            room, user_id, client.room, client.holders,
            record=record, clock=clock, read_timeout=read_timeout,
        )  # fmt: skip
        self.server = (
            PieceServer(
                room, config, user_id, cache_root=cache_root, engine_root=engine_root,
                record=record, clock=clock, upload_limit=upload_limit,
            )
            if serve
            else None
        )  # fmt: skip

    def resolvers(self) -> dict[str, ResolverFactory]:
        """The extra resolvers of every download job of this member: the room's."""
        return {ROOM_SCHEME: already_open(self.resolver)}

    def welcomed(self, send: Callable[[bytes], None] | None) -> None:
        """Joined: ``send`` goes to the host, None when it does not speak peers."""
        self.resolver.link_up(send)
        if self.server is not None and send is not None:
            self.server.link_up(send)

    def link_down(self) -> None:
        """The connection ended: transfers on it are gone."""
        self.resolver.link_down()
        if self.server is not None:
            self.server.link_down()

    def handle(self, message: HostTransfer | pr.DataChunk) -> None:
        """A transfer message or data frame from the host: to the side it is for."""
        match message:
            case tm.Serve() | tm.Ack():
                if self.server is not None:
                    self.server.receive(message)
            case tm.Cut():  # either side's: transfer ids are unique on one connection
                if self.server is not None:
                    self.server.receive(message)
                self.resolver.receive(message)
            case _:
                self.resolver.receive(message)

    def room_event(self, event: ev.Event) -> None:
        """A room event: the room may now have a piece nobody could give before."""
        if isinstance(event, _CHANGES):
            self.resolver.room_changed()

    async def close(self) -> None:
        """Stop serving (the resolver holds nothing of its own)."""
        if self.server is not None:
            await self.server.close()
