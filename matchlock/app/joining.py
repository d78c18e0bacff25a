"""Joining a room: the member's shell around :class:`~matchlock.core.client.ClientProtocol`.

:func:`join` connects (any transport), proves who the user is, receives everyone's progress,
installs the room's pieces with the download engine (game folders and cache first, then each
resolvable in order) while reporting every piece event to the room, says goodbye when everyone
has everything, and returns ``{"collection/piece": folder}``.

Every decision about what to tell the host is the client core's (it keeps what this member
really has apart from what the host believes, and after a reconnect or a restart sends only
what the host lacks); this shell moves frames, records the room's events in the member's log,
runs the downloads and keeps time with ``asyncio.sleep`` and the injected ``clock`` only, so
that a simulation can run it under a virtual-time loop. It must never start a thread or read
the wall clock itself.

When the room cannot complete, :class:`~matchlock.core.errors.RoomIncompleteError` carries every
member's and piece's state: when one of this member's pieces failed on every resolvable (after
``retries`` more attempts), or when ``deadline`` seconds pass. A refusal from the host raises
:class:`~matchlock.core.errors.JoinRefusedError` with its code and reason. Every failure to connect,
to complete a handshake (the transport's or the room's), or to keep the connection, on any
transport, is retried every ``retry_delay`` seconds until the deadline: a host that dies and
restarts, or something else answering on its port for a while, only delays the member. Given
several URLs (the nodes of a cluster serving the room), each failure moves on to the next. A
member whose own log already holds the room's close (it was killed after hearing it) does not
connect at all: it checks its cache and returns, as the host may be long gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from matchlock.app.peers import Peers
from matchlock.core import events as ev
from matchlock.core.client import ClientOutput, ClientProtocol, MemberPhase, ProtocolError
from matchlock.core.config import (
    Collection,
    MatchLockConfig,
    Piece,
    RoomConfig,
    RoomSource,
    split_piece_key,
)
from matchlock.core.errors import (
    JoinRefusedError,
    Problem,
    RestrictionError,
    RoomIncompleteError,
    UsageError,
)
from matchlock.core.signing import pin_problems
from matchlock.downloads import DownloadError, download
from matchlock.downloads.resolvers import FetchPolicy
from matchlock.store.eventlog import EventLog
from matchlock.transport import Connection, ConnectionClosed
from matchlock.transport.discovery import NoHostFound

__all__ = ["Connector", "Installer", "join", "room_match_lock"]

logger = logging.getLogger(__name__)

Connector = Callable[[str], Awaitable[Connection]]
"""Opens a connection to a room URL (``ws://``, ``tcp://``, ``lan://`` or the caller's own)."""


def room_match_lock(room: RoomConfig, config: MatchLockConfig) -> MatchLockConfig:
    """The part of ``config`` a room needs: its pieces only, each checked against the content
    the room pins. Raises :class:`RestrictionError` naming every piece missing or different."""
    problems: list[Problem] = []
    collections: dict[str, dict[str, Piece]] = {}
    for key in room.piece_keys():
        collection, name = split_piece_key(key)
        piece = config.piece(key)
        if piece is None:
            problems.append(
                Problem(f"$.pieces.{collection}", f"{key} is not in the match-lock config", name)
            )
        elif differs := pin_problems(key, piece, room):
            problems += differs
        else:
            kept = collections.setdefault(collection, {})
            kept[name] = piece
    if problems:
        raise RestrictionError(problems)
    return MatchLockConfig(
        collections={
            name: Collection(
                mandatory=True, engine_path=config.collections[name].engine_path, pieces=pieces
            )
            for name, pieces in collections.items()
        }
    )


Installer = Callable[[list[str], Callable[[ev.Event], None]], Awaitable[dict[str, Path]]]
"""Installs the given pieces, telling each piece event; returns their folders."""


_RETRYABLE = (OSError, EOFError, ConnectionClosed, NoHostFound, ProtocolError)
"""Why a connection could not be opened, or its handshake completed, or why it ended early
(the host died, restarts, or something else answered): reasons to try again until the
deadline. ``OSError`` covers refused, reset and timed-out connections."""


class _Member:
    """One member's run in a room: connections, downloads, its log. Every decision about what
    to send is the client core's; this shell only moves frames, events and time."""

    peers: Peers | None = None
    """What this member asks of the room and serves to it (None: no peer transfers)."""

    def __init__(
        self,
        client: ClientProtocol,
        install: Installer,
        log: EventLog | None,
        on_event: Callable[[ev.Event], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self.user_id = client.user_id
        self.install = install
        self.log = log
        self.on_event = on_event
        self.clock = clock
        self.conn: Connection | None = None
        self.downloads: asyncio.Task[dict[str, Path]] | None = None
        self.failed: Exception | None = None

    async def run(
        self, connect: Connector, urls: Sequence[str], retries: int, retry_delay: float
    ) -> dict[str, Path]:
        """Connect, reconnect after losing the connection, until the room closes. Every
        failure to connect and every lost connection moves on to the next of ``urls`` (round
        robin), continuing from what this member holds; each round of them ends with a pause
        of ``retry_delay``."""
        self.retries, self.retry_delay = retries, retry_delay
        try:
            if self.client.room.status == "closed":  # heard the close before a restart: the
                return await self._download()  # room is over, the host may be long gone
            if self.client.room.status == "aborted":  # as heard before a restart: it is over
                why = "the host had aborted it"
                raise RoomIncompleteError(why, self.client.room.snapshot())
            for attempt in itertools.count(1):
                url, then = urls[(attempt - 1) % len(urls)], _next(urls, attempt, retry_delay)
                try:
                    if await self._session(await connect(url)):
                        break
                    logger.warning("lost the room at %s; %s", url, then)
                except _RETRYABLE as error:
                    why = f"{type(error).__name__}: {error}"
                    logger.warning("cannot join at %s (%s); %s", url, why, then)
                self._raise_if_failed()
                if attempt % len(urls) == 0:  # a round of every URL: wait before the next
                    await asyncio.sleep(retry_delay)
            assert self.downloads is not None  # the room closed: this member was done
            return await self.downloads
        finally:
            if self.downloads is not None:  # stop it, or collect how it failed
                self.downloads.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.downloads

    async def _session(self, conn: Connection) -> bool:
        """One connection: True when the room closed, False when it ended before."""
        self.conn = conn
        try:
            conn.send_nowait(self.client.hello())
            while True:
                try:
                    out = self.client.receive(await conn.recv())
                except ProtocolError as error:
                    await self._record(error.events)
                    raise
                for frame in out.sends:  # before any await: a piece event reported while
                    self._send(frame)  # the log is written must not overtake these frames
                await self._record(out.events)
                self._peers_out(out)
                if out.refused is not None:
                    if out.retry:
                        logger.warning("the host said: %s", out.refused.reason)
                        return False
                    if out.refused.fatal:
                        raise JoinRefusedError(out.refused.code, out.refused.reason)
                    logger.warning("the host refused a report: %s", out.refused.reason)
                if out.joined and self.downloads is None:
                    self.downloads = asyncio.create_task(self._download())
                if out.closed:
                    return True
                if out.aborted is not None:
                    why = f"the host aborted it: {out.aborted}"
                    raise RoomIncompleteError(why, self.client.room.snapshot())
        except ConnectionClosed:
            return self.client.phase == MemberPhase.CLOSED
        finally:
            self.conn = None
            if self.peers is not None:
                self.peers.link_down()
            await conn.close()

    def _peers_out(self, out: ClientOutput) -> None:
        """Hand the room's changes and the transfer messages to this member's peers."""
        if self.peers is None:
            return
        if out.joined:
            self.peers.welcomed(self._send if self.client.peers else None)
        for event in out.events:
            self.peers.room_event(event)
        for message in out.transfers:
            self.peers.handle(message)

    async def _download(self) -> dict[str, Path]:
        try:
            return await self._download_with_retries()
        except Exception as error:  # the connection waits for nobody: end it, say why
            self.failed = error
            if self.conn is not None:
                await self.conn.close()
            raise

    async def _download_with_retries(self) -> dict[str, Path]:
        keys = self.client.config.piece_keys()
        folders: dict[str, Path] = {}
        for attempt in range(self.retries + 1):
            try:
                folders.update(await self.install(keys, self._local_event))
                return folders
            except DownloadError as error:
                folders.update(error.folders)
                keys = list(error.failures)
                if attempt == self.retries:
                    raise
                await asyncio.sleep(self.retry_delay)
                for key in keys:
                    self._local_event(
                        ev.PieceRetried(at=self.clock(), user_id=self.user_id, piece=key)
                    )
        raise AssertionError("unreachable")  # pragma: no cover

    def _local_event(self, event: ev.Event) -> None:
        """A piece event from the downloader: the client core says what to report."""
        for frame in self.client.piece_event(event):
            self._send(frame)

    def _send(self, frame: bytes) -> None:
        if self.conn is not None:
            with contextlib.suppress(ConnectionClosed):
                self.conn.send_nowait(frame)

    async def _record(self, events: list[ev.Event]) -> None:
        if self.log is not None and events:
            await self.log.append(*events)
        if self.on_event is not None:
            for event in events:
                self.on_event(event)

    def _raise_if_failed(self) -> None:
        if isinstance(self.failed, DownloadError):
            pieces = ", ".join(self.failed.failures)
            _, _, why = str(self.failed).partition("\n")  # each resolvable tried, and why
            raise RoomIncompleteError(
                f"{self.user_id} could not install {pieces}\n{why}", self.client.room.snapshot()
            )
        if self.failed is not None:
            raise self.failed


async def join(
    url: str | Sequence[str],
    *,
    room: RoomConfig,
    user_id: str,
    key: Ed25519PrivateKey,
    config: MatchLockConfig,
    dest: str | os.PathLike[str],
    engine_root: str | os.PathLike[str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    log: tuple[EventLog, list[ev.Event]] | None = None,
    on_event: Callable[[ev.Event], None] | None = None,
    deadline: float | None = None,
    retries: int = 1,
    retry_delay: float = 1.0,
    connect: Connector | None = None,
    install: Installer | None = None,
    clock: Callable[[], float] = time.time,
    serve: bool = True,
    room_source: RoomSource | None = None,
    upload_limit: float | None = None,
    policy: FetchPolicy | None = None,
) -> dict[str, Path]:
    """Join the room at ``url`` as ``user_id`` and return ``{"collection/piece": folder}`` once
    every member has every piece and the room has closed. ``url`` may be a list of URLs, the
    nodes of one cluster hosting the room: each failure to connect and each lost connection
    moves on to the next, round robin, and the member continues there from what it holds.

    ``room`` is the signed room config; ``config`` this user's match-lock config, which must
    hold every room piece with the content the room pins. Pieces install into the cache at
    ``dest`` (or are found under ``engine_root``). ``log_path`` keeps this member's log of the
    room; if it exists, the member continues from it. Instead, ``log`` may give this member's
    log already open with the events it holds (``join`` appends to it and leaves it open for
    its caller to close). ``on_event`` sees every room event. ``deadline`` (seconds) bounds the
    whole join. ``connect`` opens connections (default: by URL scheme,
    :func:`matchlock.transport.connect.open_connection`). ``install`` replaces the download
    engine (for embedding and for the simulation): it is given piece keys and a callback for
    each piece event, and returns their folders or raises
    :class:`~matchlock.downloads.DownloadError`; ``dest`` and ``engine_root`` are then unused.

    Pieces may come from other members (docs/peers.md): with the download engine, each piece
    has the room as one more source, at ``room_source`` (``"first"``, ``"last"`` or
    ``"never"``; unset: the room config's ``restrictions.room_source``, else ``first`` over
    ``lan://`` and ``last`` otherwise). With ``serve`` (the default) this member serves the
    pieces it holds, at most ``upload_limit`` bytes a second when given; with ``install``
    given it neither serves nor asks the room. ``policy`` is the download engine's
    :class:`~matchlock.downloads.resolvers.FetchPolicy` (its ``read_timeout`` is also the
    longest silence of a holder before its transfer is cancelled and resumed).

    Raises :class:`~matchlock.core.errors.RestrictionError` before connecting if the match-lock
    config lacks a piece or disagrees with the room;
    :class:`~matchlock.core.errors.JoinRefusedError` when the host refuses this member;
    :class:`~matchlock.core.errors.RoomIncompleteError` when the room cannot complete (a piece
    failed everywhere, the deadline passed).
    """
    needed = room_match_lock(room, config)
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise UsageError("join() needs at least one host URL")
    if log is not None and log_path is not None:
        raise UsageError("join() takes log_path or an open log, not both")
    if connect is None:
        from matchlock.transport.connect import open_connection

        connect = open_connection
    owned = log is None
    member_log, known = log if log is not None else await _open_log(log_path, room.room_id, user_id)
    client = ClientProtocol(room, user_id, key, known, serve=serve and install is None)
    peers = None
    if install is None:
        peers = Peers(
            room, needed, client, serve=serve, cache_root=Path(dest),
            engine_root=None if engine_root is None else Path(engine_root),
            record=_recorder(member_log), clock=clock, upload_limit=upload_limit,
            read_timeout=(policy or FetchPolicy()).read_timeout,
        )  # fmt: skip
        source = room_source or room.restrictions.room_source or _default_source(urls)
        install = _engine(
            needed, room, dest, engine_root, clock, peers=peers, room_source=source, policy=policy
        )
    member = _Member(client, install, member_log, on_event, clock)
    member.peers = peers
    try:
        return await asyncio.wait_for(member.run(connect, urls, retries, retry_delay), deadline)
    except TimeoutError:
        why = f"the room did not complete within {deadline} seconds"
        raise RoomIncompleteError(why, member.client.room.snapshot()) from None
    finally:
        if peers is not None:
            await peers.close()
        if owned and member_log is not None:
            await member_log.close()


def _default_source(urls: Sequence[str]) -> RoomSource:
    """The room first on a LAN (peers are nearer than mirrors), last elsewhere."""
    return "first" if all(url.startswith("lan://") for url in urls) else "last"


def _recorder(log: EventLog | None) -> Callable[[ev.Event], None]:
    """Where this member's own transfer events go: its log (written with its next append)."""
    if log is None:
        return lambda event: None
    return log.buffer


def _next(urls: Sequence[str], attempt: int, retry_delay: float) -> str:
    """What the member does after its ``attempt``-th try failed, for the log."""
    following = urls[attempt % len(urls)]
    if attempt % len(urls):
        return f"{following} next"
    again = "again" if len(urls) == 1 else f"{following} again (every URL tried)"
    return f"{again} in {retry_delay:.1f}s"


def _engine(
    needed: MatchLockConfig,
    room: RoomConfig,
    dest: str | os.PathLike[str],
    engine_root: str | os.PathLike[str] | None,
    clock: Callable[[], float],
    *,
    peers: Peers,
    room_source: RoomSource,
    policy: FetchPolicy | None,
) -> Installer:
    """The download engine as an :data:`Installer` of the room's pieces, the room's members
    one more source of each at ``room_source``."""

    async def install(keys: list[str], emit: Callable[[ev.Event], None]) -> dict[str, Path]:
        return await download(
            _subset(needed, keys),
            dest,
            engine_root=engine_root,
            allowed_schemes=room.restrictions.allowed_schemes,
            on_event=emit,
            clock=clock,
            resolvers=peers.resolvers(),
            policy=policy,
            room_source=room_source,
        )

    return install


async def _open_log(
    path: str | os.PathLike[str] | None, room_id: str, user_id: str
) -> tuple[EventLog | None, list[ev.Event]]:
    if path is None:
        return None, []
    if Path(path).exists():
        return await EventLog.open(Path(path))
    return await EventLog.create(Path(path), f"client/{room_id}/{user_id}"), []


def _subset(config: MatchLockConfig, keys: list[str]) -> MatchLockConfig:
    wanted = set(keys)
    return MatchLockConfig(
        collections={
            name: collection.model_copy(
                update={
                    "pieces": {
                        p: piece
                        for p, piece in collection.pieces.items()
                        if f"{name}/{p}" in wanted
                    }
                }
            )
            for name, collection in config.collections.items()
        }
    )
