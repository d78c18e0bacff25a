"""The hosts a download job found down, so that no other piece of the job waits on them.

A host is whatever a resolver names it (:meth:`~matchlock.downloads.resolvers.Resolver.host`);
for http(s) it is ``scheme://host:port`` (:func:`host_of`: the port made explicit, so
``http://a`` and ``http://a:80`` are one host). When a connection to it is refused, its name
does not resolve, or it does not accept a connection within
:attr:`~matchlock.downloads.FetchPolicy.connect_timeout`, the resolver records it here with the
time, the piece that found it and the reason; every later resolvable on that host, in any piece
of the job, is then skipped without a request, and its failure says when and by which piece the
host was found down.

The record lives as long as one job (one :func:`matchlock.downloads.download` call): the next
job tries every host again. This module only keeps that memory: it never does IO, and it never
marks a host down on its own (a host that answers, even with an error, is up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from yarl import URL

__all__ = ["HostDown", "Hosts", "host_of"]


def host_of(url: URL) -> str:
    """``scheme://host:port`` of ``url``, the unit a host is remembered by."""
    return f"{url.scheme}://{url.host or ''}:{url.port}"


@dataclass(frozen=True)
class HostDown:
    """``host`` was found down at ``at`` (the job's clock) by ``piece``, for ``reason``."""

    host: str
    at: float
    piece: str
    reason: str

    def skip_reason(self) -> str:
        """Why a resolvable on this host was skipped, for its ``resolvable_failed`` event."""
        stamp = datetime.fromtimestamp(self.at, UTC).strftime("%H:%M:%S.%f")[:-3]
        return (
            f"not requested: host {self.host} was found down at {stamp} UTC by {self.piece} "
            f"({self.reason})"
        )


class Hosts:
    """The hosts found down so far in one job; ``clock`` stamps each record."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._down: dict[str, HostDown] = {}

    def down(self, host: str) -> HostDown | None:
        """The record of ``host`` when it was found down in this job, else None."""
        return self._down.get(host)

    def mark_down(self, host: str, piece: str, reason: str) -> HostDown:
        """Remember that ``host`` is down (``piece`` found it, for ``reason``); the first
        record of a host is kept when several pieces find it at once."""
        return self._down.setdefault(host, HostDown(host, self._clock(), piece, reason))
