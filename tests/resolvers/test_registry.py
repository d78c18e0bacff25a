"""The registry: every scheme a config may name has a resolver, a scheme has one resolver,
a factory serving several schemes is opened once per job, and an allowed scheme that no
resolver serves is refused before anything is touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from matchlock.core.config import SCHEMES
from matchlock.core.errors import UsageError
from matchlock.downloads import DEFAULT_SCHEMES
from matchlock.downloads.cache import Cache
from matchlock.downloads.fetch import Fetcher
from matchlock.downloads.hosts import Hosts
from matchlock.downloads.resolvers import (
    RESOLVERS,
    FetchPolicy,
    Refused,
    Registry,
    Resolver,
    ResolverContext,
    ResolverFactory,
    Staging,
    Wanted,
)
from matchlock.downloads.sink import PartFile


def test_every_scheme_a_config_may_name_has_a_resolver() -> None:
    assert [scheme for scheme in SCHEMES if scheme not in RESOLVERS] == []
    assert DEFAULT_SCHEMES == SCHEMES


class Echo:
    """A resolver that holds nothing: enough to count how often it is opened."""

    def host(self, url: str) -> str | None:
        return None

    async def fetch(self, url: str, wanted: Wanted, staging: Staging, *, resume: bool) -> None:
        await staging.begin(resume=resume)


def counting(opened: list[str]) -> ResolverFactory:
    @asynccontextmanager
    async def open_echo(context: ResolverContext) -> AsyncIterator[Resolver]:
        opened.append("open")
        yield Echo()
        opened.append("close")

    return open_echo


def test_a_scheme_has_one_resolver() -> None:
    registry = Registry()
    registry.register(counting([]), "a", "b")
    with pytest.raises(UsageError, match="scheme\\(s\\) b already have a resolver"):
        registry.register(counting([]), "c", "b")
    assert list(registry) == ["a", "b"]
    with pytest.raises(UsageError, match="at least one scheme"):
        registry.register(counting([]))


async def test_a_factory_is_opened_once_per_job_for_the_allowed_schemes_only() -> None:
    opened: list[str] = []
    others: list[str] = []
    registry = Registry()
    registry.register(counting(opened), "a", "b")
    registry.register(counting(others), "c")
    context = ResolverContext(FetchPolicy(), Hosts(lambda: 0.0), frozenset("ab"), jobs=1)
    async with AsyncExitStack() as stack:
        resolvers = await registry.open(["a", "b", "z"], context, stack)
        assert sorted(resolvers) == ["a", "b"] and resolvers["a"] is resolvers["b"]
        assert opened == ["open"]
    assert opened == ["open", "close"] and others == []


async def test_an_allowed_scheme_without_a_resolver_is_refused_without_a_request(
    tmp_path: Path,
) -> None:
    cache = Cache(tmp_path)
    cache.prepare()
    fetcher = Fetcher({}, FetchPolicy(), ["gopher"], Hosts(lambda: 0.0))
    wanted = Wanted("chars/kfm", "0" * 64, 10)
    with ThreadPoolExecutor(1) as executor:
        async with cache.locked(wanted.sha256, executor) as held:
            part = PartFile(held)
            with pytest.raises(Refused, match="no resolver serves scheme 'gopher'"):
                await fetcher.fetch("gopher://a/b", wanted, part, lambda done: None, resume=True)
            assert not part.begun
