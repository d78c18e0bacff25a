"""Where each piece of a room will come from, before joining: ``matchlock plan`` and the live
table of ``matchlock join``.

For every piece the room expects, :func:`plan_room` says one of:

- ``here``: a folder on this machine already holds it, verified as installing would verify it
  (:func:`~matchlock.downloads.verify.folder_problem`): the game's folder (``engine``, from
  ``--engine-root`` and the collection's ``engine_path``) or the cache (``cache``);
- ``mirror``: the first of its resolvables (in the config's order, those whose scheme the room
  allows) that answers: an ``http(s)`` one to a ``HEAD`` request with 2xx (and, when it gives
  one, a ``Content-Length`` equal to the pinned size; a server that refuses ``HEAD`` with 403,
  405 or 501 is asked a one-byte ``GET`` instead), a ``file`` one with a regular file of the
  pinned size; each probe waits at most ``timeout`` seconds, and every answer is kept;
- ``room``: no mirror answered (or the piece lists none, or is pinned by its folder only):
  only a member of the room who holds it can give it;
- ``nowhere``: no mirror answered and the room is not a source (``room_source`` ``never``),
  or the match-lock config cannot install the piece at all (it lacks it, or pins other
  content: ``problem`` says which; joining refuses such a room).

With ``room_source`` ``first`` a piece that is not here is planned from the room, its first
answering mirror kept as the fallback. Bytes are the piece's pinned size (the archive's, or
the folder's for a folder-only piece); :class:`Plan` sums them per source.

This module is part of the shell: it reads folders and sends ``HEAD`` requests, never a
download, and never writes anything.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from urllib.request import url2pathname

import aiohttp

from matchlock import __version__
from matchlock.core.config import MatchLockConfig, Piece, RoomConfig, RoomSource
from matchlock.core.fitting import pin_problems
from matchlock.downloads.cache import Cache, piece_file_name
from matchlock.downloads.engine import engine_folders
from matchlock.downloads.verify import folder_problem

__all__ = ["PROBE_TIMEOUT", "PiecePlan", "Plan", "Probe", "Source", "plan_room", "plan_room_sync"]

PROBE_TIMEOUT = 3.0
"""Seconds a mirror has to answer its ``HEAD`` request."""

_PROBES_AT_ONCE = 8

Source = Literal["here", "mirror", "room", "nowhere"]
"""Where a piece will come from (see the module docs)."""


@dataclass(frozen=True)
class Probe:
    """One resolvable asked: its ``url`` and ``None`` when it answered with the piece's size,
    else why not (``problem``)."""

    url: str
    problem: str | None

    def as_json(self) -> dict[str, object]:
        """``{"url", "ok", "problem"}``."""
        return {"url": self.url, "ok": self.problem is None, "problem": self.problem}


@dataclass(frozen=True)
class PiecePlan:
    """Where one piece will come from.

    ``folder`` and ``where`` (``engine`` or ``cache``) when it is ``here``; ``url`` the mirror
    that answered first (also kept as the fallback when the room comes first); ``bytes`` its
    pinned size; ``form`` what the room would send (``archive`` or ``folder``); ``probes``
    every resolvable asked, in order; ``problem`` why the config cannot install it.
    """

    piece: str
    source: Source
    bytes: int
    folder: Path | None = None
    where: Literal["engine", "cache"] | None = None
    url: str | None = None
    form: Literal["archive", "folder"] | None = None
    probes: tuple[Probe, ...] = ()
    problem: str | None = None

    def as_json(self) -> dict[str, object]:
        """The piece's plan as one JSON object (``matchlock plan --json``)."""
        return {
            "piece": self.piece,
            "source": self.source,
            "bytes": self.bytes,
            "folder": None if self.folder is None else str(self.folder),
            "where": self.where,
            "url": self.url,
            "form": self.form,
            "probes": [probe.as_json() for probe in self.probes],
            "problem": self.problem,
        }


@dataclass(frozen=True)
class Plan:
    """Every piece's plan, in the room's order, and the room source it assumed."""

    room_id: str
    room_source: RoomSource
    pieces: tuple[PiecePlan, ...] = field(default=())

    def totals(self) -> dict[str, int]:
        """Bytes per source (``here``, ``mirror``, ``room``, ``nowhere``) and ``total``."""
        sums = dict.fromkeys(("here", "mirror", "room", "nowhere"), 0)
        for piece in self.pieces:
            sums[piece.source] += piece.bytes
        return {**sums, "total": sum(sums.values())}

    def as_json(self) -> dict[str, object]:
        """``{"type": "plan", "room_id", "room_source", "pieces": [...], "totals": {...}}``."""
        return {
            "type": "plan",
            "room_id": self.room_id,
            "room_source": self.room_source,
            "pieces": [piece.as_json() for piece in self.pieces],
            "totals": self.totals(),
        }


async def plan_room(
    room: RoomConfig,
    config: MatchLockConfig,
    dest: Path,
    *,
    engine_root: Path | None = None,
    room_source: RoomSource | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> Plan:
    """Plan every piece of ``room`` for a member whose match-lock config is ``config``, whose
    cache is ``dest`` and whose game is at ``engine_root`` (see the module docs).

    ``room_source`` is the join's choice; None takes the room's ``restrictions.room_source``,
    else ``last``.
    """
    source = room_source or room.restrictions.room_source or "last"
    engine = engine_folders(config, engine_root)
    cache = Cache(dest)
    gate = asyncio.Semaphore(_PROBES_AT_ONCE)
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": f"matchlock/{__version__}"},
    ) as session:
        prober = _Prober(session, room.restrictions.allowed_schemes, gate, timeout)
        planner = _Planner(room, config, cache, engine, prober, source)
        plans = await asyncio.gather(*(planner.piece(key) for key in room.piece_keys()))
    return Plan(room.room_id, source, tuple(plans))


def plan_room_sync(
    room: RoomConfig,
    config: MatchLockConfig,
    dest: Path,
    *,
    engine_root: Path | None = None,
    room_source: RoomSource | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> Plan:
    """:func:`plan_room` without an event loop."""
    return asyncio.run(
        plan_room(
            room, config, dest, engine_root=engine_root, room_source=room_source, timeout=timeout
        )
    )


@dataclass(frozen=True)
class _Planner:
    """What planning one piece needs: the room, the member's config, cache, game folders."""

    room: RoomConfig
    config: MatchLockConfig
    cache: Cache
    engine: dict[str, Path]
    prober: _Prober
    room_source: RoomSource

    async def piece(self, key: str) -> PiecePlan:
        """The plan of the piece ``key`` (see the module docs)."""
        pinned = self.room.content[key]
        plan = PiecePlan(key, "nowhere", pinned.content_size)
        piece = self.config.piece(key)
        if piece is None:
            return replace(plan, problem=f"{key} is not in the match-lock config")
        if problems := pin_problems(key, piece, self.room):
            return replace(plan, problem="; ".join(f"{p.path} {p.message}" for p in problems))
        here = await asyncio.to_thread(_here, key, piece, self.cache, self.engine.get(key))
        if here is not None:
            return replace(plan, source="here", folder=here[0], where=here[1])
        form: Literal["archive", "folder"] = "archive" if pinned.archive is not None else "folder"
        probes = await self.prober.first_answer(piece) if pinned.archive is not None else ()
        answered = next((p.url for p in probes if p.problem is None), None)
        if self.room_source == "first" or (answered is None and self.room_source == "last"):
            return replace(plan, source="room", url=answered, form=form, probes=probes)
        if answered is not None:
            return replace(plan, source="mirror", url=answered, probes=probes)
        return replace(plan, probes=probes)


def _here(
    key: str, piece: Piece, cache: Cache, engine_folder: Path | None
) -> tuple[Path, Literal["engine", "cache"]] | None:
    """The folder that already holds ``piece`` (blocking: it reads the folders)."""
    name = piece_file_name(key, piece)
    if engine_folder is not None and folder_problem(engine_folder, piece, name, None) is None:
        return engine_folder, "engine"
    folder = cache.folder(key, piece)
    if folder_problem(folder, piece, name, cache.recorded_digest(folder)) is None:
        return folder, "cache"
    return None


class _Prober:
    """Asks a piece's resolvables in order until one answers (see the module docs)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        allowed: Sequence[str],
        gate: asyncio.Semaphore,
        timeout: float,
    ) -> None:
        self._session = session
        self._allowed = allowed
        self._gate = gate
        self._timeout = timeout

    async def first_answer(self, piece: Piece) -> tuple[Probe, ...]:
        """Every resolvable asked, up to and with the first that answered."""
        assert piece.size is not None
        probes: list[Probe] = []
        for resolvable in piece.resolvables:
            if resolvable.scheme not in self._allowed:
                problem: str | None = f"the room does not allow {resolvable.scheme}:"
            elif resolvable.scheme == "file":
                problem = await asyncio.to_thread(_file_problem, resolvable.url, piece.size)
            else:
                async with self._gate:
                    problem = await self._http_problem(resolvable.url, piece.size)
            probes.append(Probe(resolvable.url, problem))
            if problem is None:
                break
        return tuple(probes)

    async def _http_problem(self, url: str, size: int) -> str | None:
        try:
            async with self._session.head(url, allow_redirects=True) as response:
                status, reason, length = response.status, response.reason, _announced(response)
            if status in _HEAD_REFUSED:
                # Some servers answer only GET (a URL signed for GET refuses HEAD): ask for one
                # byte, read only the headers.
                ranged = {"Range": "bytes=0-0"}
                async with self._session.get(url, headers=ranged, allow_redirects=True) as response:
                    status, reason, length = response.status, response.reason, _announced(response)
        except TimeoutError:
            return f"no answer within {self._timeout:g} s"
        except aiohttp.ClientError as error:
            return f"cannot connect: {error}"
        if not 200 <= status < 300:
            return f"HTTP {status} {reason or ''}".rstrip()
        if length is not None and length != size:
            return f"it announces {length} bytes; the piece has {size}"
        return None


_HEAD_REFUSED = (403, 405, 501)
"""Answers to ``HEAD`` after which the resolvable is asked again with a one-byte ``GET``."""


def _announced(response: aiohttp.ClientResponse) -> int | None:
    """The whole body's size a response announces: a 206's ``Content-Range`` total, otherwise
    its ``Content-Length`` (None when it says nothing)."""
    if response.status == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


def _file_problem(url: str, size: int) -> str | None:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        return f"a file URL must name this machine, not {parts.netloc!r}"
    path = Path(url2pathname(parts.path))
    try:
        info = os.stat(path)
    except OSError as error:
        return f"cannot read {path}: {error.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if info.st_size != size:
        return f"{path} has {info.st_size} bytes; the piece has {size}"
    return None
