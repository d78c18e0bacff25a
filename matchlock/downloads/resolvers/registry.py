"""Resolvers by URL scheme: which factory serves a scheme, and opening them for one job.

A :class:`Registry` maps each scheme to the
:data:`~matchlock.downloads.resolvers.base.ResolverFactory` registered for it; one factory may
serve several schemes (``http`` and ``https``), and then one resolver serves them all in a job.
:meth:`Registry.open` opens, for one job, the resolver of every allowed scheme that has one, and
closes them all when the job ends. A scheme with no resolver is refused by the caller, with that
reason, like a scheme that is not allowed.

A job may add resolvers of its own (:meth:`Registry.with_extra`: the room's, for a member of a
room), always as factories; a resolver that lives longer than the job (the room's, which outlives
every download of a join) is given as :func:`already_open`, which the job neither opens nor closes.

This module only keeps the mapping: it never imports a resolver (the package's ``__init__``
registers the built-in ones) and does no IO of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

from matchlock.core.errors import UsageError
from matchlock.downloads.resolvers.base import Resolver, ResolverContext, ResolverFactory

__all__ = ["Registry", "already_open"]


class Registry:
    """Resolver factories by scheme. See the module docs."""

    def __init__(self) -> None:
        self._factories: dict[str, ResolverFactory] = {}

    def register(self, factory: ResolverFactory, *schemes: str) -> None:
        """Serve ``schemes`` with ``factory``. A scheme registered already is a
        :class:`~matchlock.core.errors.UsageError` naming it (two resolvers cannot share one)."""
        if not schemes:
            raise UsageError("a resolver must be registered for at least one scheme")
        taken = [scheme for scheme in schemes if scheme in self._factories]
        if taken:
            raise UsageError(f"scheme(s) {', '.join(taken)} already have a resolver")
        for scheme in schemes:
            self._factories[scheme] = factory

    def with_extra(self, extra: Mapping[str, ResolverFactory]) -> Registry:
        """A new registry: this one's factories plus ``extra`` (scheme -> factory); a scheme
        both serve is a :class:`~matchlock.core.errors.UsageError` naming it."""
        combined = Registry()
        combined._factories = dict(self._factories)
        for scheme, factory in extra.items():
            combined.register(factory, scheme)
        return combined

    def __contains__(self, scheme: object) -> bool:
        return scheme in self._factories

    def __iter__(self) -> Iterator[str]:
        """The registered schemes, in registration order."""
        return iter(self._factories)

    async def open(
        self, schemes: Collection[str], context: ResolverContext, stack: AsyncExitStack
    ) -> dict[str, Resolver]:
        """Open the resolver of each of ``schemes`` that has one (once per factory), closed by
        ``stack``; return them by scheme."""
        opened: dict[int, Resolver] = {}
        resolvers: dict[str, Resolver] = {}
        for scheme in schemes:
            factory = self._factories.get(scheme)
            if factory is None:
                continue
            if id(factory) not in opened:
                opened[id(factory)] = await stack.enter_async_context(factory(context))
            resolvers[scheme] = opened[id(factory)]
        return resolvers


def already_open(resolver: Resolver) -> ResolverFactory:
    """A factory that hands every job the same ``resolver``, open already, and leaves it open
    when the job ends (its owner closes it)."""

    @asynccontextmanager
    async def factory(context: ResolverContext) -> AsyncIterator[Resolver]:
        yield resolver

    return factory
