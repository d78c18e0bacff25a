"""Resolvers: one way each of getting a piece's bytes, looked up by the resolvable's URL scheme.

The seam (:mod:`~matchlock.downloads.resolvers.base`): a :class:`Resolver` writes what a URL
holds into the piece's :class:`Staging` (its ``.part`` in the cache's ``.matchlock/tmp/``),
reports progress through it, and says why it failed with a :class:`ResolveFailed` subclass per
failure class; the download job (:class:`matchlock.downloads.fetch.Fetcher`) verifies the bytes
and decides what to try next from those types. :data:`RESOLVERS` is the registry the download
job uses; the built-in resolvers are registered below, one line each:

- ``http``, ``https``: :mod:`~matchlock.downloads.resolvers.http` (aiohttp, streamed);
- ``file``: :mod:`~matchlock.downloads.resolvers.file` (a regular file on this machine).

Adding a resolver is one new module here, one ``RESOLVERS.register`` line, and a subclass of
the contract suite ``tests/resolvers/contract.py`` (docs/adding-a-resolver.md). The schemes a
match-lock config may name are :data:`matchlock.core.config.SCHEMES` (the signed format, in the
core); every one of them has a resolver here, which the contract tests check.

The package lives under :mod:`matchlock.downloads` because a resolver writes into that
package's cache and staging files: it is the shell's content half, and the core never imports
it (the import-linter contracts in ``pyproject.toml`` cover it with the rest of the package).
"""

from matchlock.downloads.resolvers import http
from matchlock.downloads.resolvers.base import (
    Corrupt,
    CorruptAfterResume,
    FetchPolicy,
    HostUnreachable,
    NotFound,
    Progress,
    Refused,
    ResolveFailed,
    Resolver,
    ResolverContext,
    ResolverFactory,
    SourceError,
    Staging,
    TooLarge,
    Transient,
    Wanted,
)
from matchlock.downloads.resolvers.file import open_file
from matchlock.downloads.resolvers.http import open_http
from matchlock.downloads.resolvers.registry import Registry

__all__ = [
    "RESOLVERS",
    "Corrupt",
    "CorruptAfterResume",
    "FetchPolicy",
    "HostUnreachable",
    "NotFound",
    "Progress",
    "Refused",
    "Registry",
    "ResolveFailed",
    "Resolver",
    "ResolverContext",
    "ResolverFactory",
    "SourceError",
    "Staging",
    "TooLarge",
    "Transient",
    "Wanted",
]

RESOLVERS = Registry()
"""The resolvers every download job uses, by scheme."""
RESOLVERS.register(open_http, *http.SCHEMES)
RESOLVERS.register(open_file, "file")
