"""Transports by URL scheme: which transport serves a room URL.

A :class:`Registry` maps each scheme to the :class:`~matchlock.transport.base.Transport`
registered for it; one transport may serve several schemes (``ws`` and ``wss``).
:meth:`Registry.transport` finds the one for a URL, or refuses the URL naming every scheme
registered. :data:`matchlock.transport.connect.TRANSPORTS` is the registry that
``open_connection`` and ``listen`` use; the built-in transports are registered there.

This module only keeps the mapping: it never imports a transport and opens nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from matchlock.core.errors import UsageError
from matchlock.transport.base import RoomURL, Transport

__all__ = ["Registry"]


class Registry:
    """Transports by scheme. See the module docs."""

    def __init__(self) -> None:
        self._transports: dict[str, Transport] = {}

    def register(self, transport: Transport, *schemes: str) -> None:
        """Serve ``schemes`` (lower case, as URLs are split) with ``transport``. A scheme
        registered already is a :class:`~matchlock.core.errors.UsageError` naming it (two transports
        cannot share one)."""
        if not schemes:
            raise UsageError("a transport must be registered for at least one scheme")
        taken = [scheme for scheme in schemes if scheme in self._transports]
        if taken:
            raise UsageError(f"scheme(s) {', '.join(taken)} already have a transport")
        for scheme in schemes:
            self._transports[scheme] = transport

    def __contains__(self, scheme: object) -> bool:
        return scheme in self._transports

    def __iter__(self) -> Iterator[str]:
        """The registered schemes, in registration order."""
        return iter(self._transports)

    def transport(self, url: RoomURL) -> Transport:
        """The transport of ``url``'s scheme; a :class:`~matchlock.transport.base.BadURLError`
        naming the scheme found and every scheme registered when none serves it."""
        found = self._transports.get(url.scheme)
        if found is None:
            shown = f"scheme {url.scheme!r}" if url.scheme else "no scheme"
            raise url.bad(f"{shown}; use {_choices(list(self._transports))}")
        return found


def _choices(schemes: list[str]) -> str:
    """``ws://, tcp:// or lan://``."""
    if not schemes:
        return "a registered transport (none is)"
    shown = [f"{scheme}://" for scheme in schemes]
    return " or ".join([", ".join(shown[:-1]), shown[-1]] if len(shown) > 1 else shown)
