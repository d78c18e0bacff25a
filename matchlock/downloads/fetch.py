"""Getting one resolvable's bytes into a piece's ``.part`` file, and checking them.

:meth:`Fetcher.fetch` looks the resolvable's scheme up among the job's resolvers
(:mod:`matchlock.downloads.resolvers`), lets the resolver write into the part, and succeeds only
when the part then holds exactly the piece: as many bytes as its ``size`` and the same sha256.
Every other outcome raises a :class:`~matchlock.downloads.resolvers.ResolveFailed` subclass
with a reason a person can act on; the caller records it and decides from its type what to try
next (:mod:`matchlock.downloads.piece`). Before a resolver is called:

- a scheme the caller does not allow, or that no resolver serves, is :class:`Refused` without
  a request;
- a resolvable whose host (:meth:`Resolver.host`) was found down earlier in the job is
  :class:`HostUnreachable` without a request, before the part is touched (it may hold another
  resolvable's bytes).

After it, the checks every resolver gets, whatever its source: a part shorter than the piece is
:class:`Transient` (the source ended early); a wrong sha256 empties the part and is
:class:`Corrupt`, or :class:`CorruptAfterResume` when the part continued earlier bytes, so the
resolvable is tried once more from zero in case the old bytes were the bad ones. Resumed bytes
are only ever trusted through this final sha256.

The room's resolver (:mod:`matchlock.downloads.resolvers.room`) is reached through
:meth:`Fetcher.room`: it delivers more than one form, and verifies with the piece's own checks.

This module never does IO of its own: the resolvers do, through the part.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from urllib.parse import urlsplit

from matchlock.downloads.hosts import Hosts
from matchlock.downloads.resolvers import (
    Corrupt,
    CorruptAfterResume,
    FetchPolicy,
    HostUnreachable,
    Progress,
    Refused,
    Resolver,
    Staging,
    Transient,
    Wanted,
)
from matchlock.downloads.resolvers.room import ROOM_SCHEME, RoomResolver
from matchlock.downloads.sink import PartFile

__all__ = ["Fetcher"]


class Fetcher:
    """Fetches resolvables with the job's ``resolvers`` (by scheme), for the ``allowed_schemes``
    only; ``hosts`` is the job's memory of hosts found down."""

    def __init__(
        self,
        resolvers: Mapping[str, Resolver],
        policy: FetchPolicy,
        allowed_schemes: Collection[str],
        hosts: Hosts,
    ) -> None:
        self._resolvers = dict(resolvers)
        self.policy = policy
        self._allowed = frozenset(allowed_schemes)
        self._hosts = hosts

    async def fetch(
        self, url: str, wanted: Wanted, part: PartFile, progress: Progress, *, resume: bool
    ) -> None:
        """Fill ``part`` with exactly the ``wanted`` bytes from ``url``, or raise a
        :class:`~matchlock.downloads.resolvers.ResolveFailed`.

        With ``resume``, bytes this same ``url`` wrote into the part earlier (in an earlier
        run, or an earlier attempt) may be continued.
        """
        resolver = self._resolver(url)
        host = resolver.host(url)
        known = None if host is None else self._hosts.down(host)
        if known is not None:
            raise HostUnreachable(known.skip_reason())
        await resolver.fetch(url, wanted, Staging(part, wanted, progress, url), resume=resume)
        await _check(wanted, part)

    def room(self) -> RoomResolver:
        """The job's room resolver; :class:`Refused` when the job has none."""
        resolver = self._resolvers.get(ROOM_SCHEME)
        if not isinstance(resolver, RoomResolver) or ROOM_SCHEME not in self._allowed:
            raise Refused("this download is not in a room: no member to ask")
        return resolver

    def _resolver(self, url: str) -> Resolver:
        scheme = urlsplit(url).scheme
        if scheme not in self._allowed:
            allowed = ", ".join(sorted(self._allowed)) or "none"
            raise Refused(f"scheme {scheme!r} is not allowed (allowed: {allowed})")
        resolver = self._resolvers.get(scheme)
        if resolver is None:
            served = ", ".join(sorted(self._resolvers)) or "none"
            raise Refused(f"no resolver serves scheme {scheme!r} (served: {served})")
        return resolver


async def _check(wanted: Wanted, part: PartFile) -> None:
    """Accept the part only if it is the piece; a doubtful resume restarts from zero."""
    await part.drain()
    if part.size > wanted.size:
        await part.restart()
        raise Transient("the partial download is larger than the piece")
    digest = part.hexdigest()
    if part.size == wanted.size and digest == wanted.sha256:
        return
    if part.size < wanted.size:
        raise Transient(f"the body ended after {part.size} of {wanted.size} bytes")
    resumed = part.resumed_from
    await part.restart()  # never keep bytes known to be wrong
    if resumed:
        reason = f"sha256 mismatch after resuming at byte {resumed}; starting again from 0"
        raise CorruptAfterResume(reason)
    raise Corrupt(f"sha256 is {digest}, expected {wanted.sha256}")
