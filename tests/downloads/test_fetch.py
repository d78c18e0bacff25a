"""Getting a piece's bytes: mirror order, bad sources, resume, retries, limits, redirects, file:."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from matchlock.core.errors import UsageError
from matchlock.core.events import (
    Event,
    PieceFinished,
    PieceProgress,
    ResolvableFailed,
    ResolvableFailure,
)
from matchlock.core.room import replay
from matchlock.downloads import DownloadError, FetchPolicy, download
from tests.downloads.conftest import FAST_POLICY, ContentServer, config, piece, sha256

MIB = 1024 * 1024


def one_piece(data: bytes, *urls: str) -> dict[str, Any]:
    return {"chars": {"pieces": {"kfm": piece(data, *urls, filename="kfm.bin")}}}


async def fetch(
    tmp_path: Path, data: bytes, *urls: str, policy: FetchPolicy = FAST_POLICY, **options: object
) -> tuple[Path, list[Event]]:
    events: list[Event] = []
    folders = await download(
        config(one_piece(data, *urls)),
        tmp_path / "cache",
        on_event=events.append,
        policy=policy,
        **options,  # type: ignore[arg-type]
    )
    folder = folders["chars/kfm"]
    assert (folder / "kfm.bin").read_bytes() == data
    return folder, events


def failures(events: list[Event]) -> list[ResolvableFailure]:
    return [e.failure for e in events if isinstance(e, ResolvableFailed)]


def source(events: list[Event]) -> str:
    return next(e.source for e in events if isinstance(e, PieceFinished))


async def test_mirrors_are_tried_in_order_until_one_verifies(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    server.add("a", data)
    urls = [server.url(route, "a") for route in ("missing", "wrong", "ok", "norange")]
    _, events = await fetch(tmp_path, data, *urls)
    assert [r.route for r in server.requests] == ["missing", "wrong", "ok"]
    failed = failures(events)
    assert [(f.index, f.url) for f in failed] == [(0, urls[0]), (1, urls[1])]
    assert "HTTP 404" in failed[0].reason
    assert f"expected {sha256(data)}" in failed[1].reason
    assert source(events) == urls[2]
    state = replay(events).members["local"].pieces["chars/kfm"]
    assert (state.status, state.source, state.failures) == ("finished", urls[2], tuple(failed))


async def test_a_corrupt_only_source_fails_the_piece_and_keeps_nothing(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    server.add("a", data)
    with pytest.raises(DownloadError) as raised:
        await download(
            config(one_piece(data, server.url("wrong", "a"))),
            tmp_path / "cache",
            policy=FAST_POLICY,
        )
    (reasons,) = raised.value.failures.values()
    assert "sha256 is" in reasons[0].reason
    assert raised.value.folders == {}
    leftovers = [p.name for p in (tmp_path / "cache").iterdir()]
    assert leftovers == [".matchlock"]
    assert list((tmp_path / "cache" / ".matchlock" / "tmp").iterdir()) == []


async def test_a_cut_download_resumes_with_range(server: ContentServer, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)
    server.add("a", data)
    _, events = await fetch(tmp_path, data, server.url("cut", "a"))
    first, second = server.requests
    assert first.range is None
    assert second.range is not None
    start = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= len(data) // 2
    assert failures(events) == []  # a retry within one resolvable is not a failure


async def test_a_server_ignoring_range_restarts_from_zero(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(3 * MIB)
    server.add("a", data)
    _, events = await fetch(tmp_path, data, server.url("cut-norange", "a"))
    assert [r.range is not None for r in server.requests] == [False, True]
    done = [e.done for e in events if isinstance(e, PieceProgress)]
    assert done == sorted(done), "progress never goes down within a resolvable"
    replay(events)


async def test_a_resume_that_fails_the_sha256_starts_again_from_zero(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(3 * MIB)
    server.add("a", data)
    _, events = await fetch(tmp_path, data, server.url("cut-badrange", "a"))
    assert [r.range is not None for r in server.requests] == [False, True, False]
    assert failures(events) == []


async def test_a_part_left_by_an_earlier_run_is_resumed(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(2 * MIB)
    server.add("a", data)
    part = tmp_path / "cache" / ".matchlock" / "tmp" / f"{sha256(data)}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:700_000])
    await fetch(tmp_path, data, server.url("ok", "a"))
    assert [r.range for r in server.requests] == ["bytes=700000-"]
    assert not part.exists()


async def test_a_corrupt_part_is_dropped_after_the_resume_fails(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(2 * MIB)
    server.add("a", data)
    part = tmp_path / "cache" / ".matchlock" / "tmp" / f"{sha256(data)}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 700_000)
    _, events = await fetch(tmp_path, data, server.url("ok", "a"))
    assert [r.range for r in server.requests] == ["bytes=700000-", None]
    assert failures(events) == []


async def test_transient_http_errors_are_retried(server: ContentServer, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    server.add("a", data)
    _, events = await fetch(tmp_path, data, server.url("unavailable", "a"))
    assert [r.route for r in server.requests] == ["unavailable", "unavailable"]
    assert failures(events) == []


async def test_retries_are_bounded(server: ContentServer, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    server.add("a", data)
    policy = FetchPolicy(attempts=2, backoff=0.01, read_timeout=0.3)
    events: list[Event] = []
    with pytest.raises(DownloadError):
        await download(
            config(one_piece(data, server.url("stall", "a"))),
            tmp_path / "cache",
            on_event=events.append,
            policy=policy,
        )
    assert [r.route for r in server.requests] == ["stall", "stall"]
    (stalled,) = failures(events)
    assert "no data for 0.3 s" in stalled.reason


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("toomany", "more than the piece's 60000 bytes"),
        ("toolong", "announces 61000 bytes"),
        ("to-file", "redirect to 'file:///etc/passwd' refused"),
    ],
)
async def test_refused_sources_fall_back_to_the_next(
    server: ContentServer, tmp_path: Path, route: str, reason: str
) -> None:
    data = os.urandom(60_000)
    server.add("a", data)
    _, events = await fetch(tmp_path, data, server.url(route, "a"), server.url("ok", "a"))
    (failed,) = failures(events)
    assert reason in failed.reason
    assert server.requests[0].route == route
    assert len(server.asked()) == 2, "a refused source is not retried"


async def test_redirects_within_allowed_schemes_are_followed(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(10_000)
    server.add("a", data)
    _, events = await fetch(tmp_path, data, server.url("redirect", "a"))
    assert [r.route for r in server.requests] == ["redirect", "ok"]
    assert source(events) == server.url("redirect", "a")


async def test_a_disallowed_scheme_is_never_requested(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(10_000)
    server.add("a", data)
    local = tmp_path / "kfm.bin"
    local.write_bytes(data)
    _, events = await fetch(
        tmp_path, data, server.url("ok", "a"), local.as_uri(), allowed_schemes=("https", "file")
    )
    assert server.requests == []
    (failed,) = failures(events)
    assert "scheme 'http' is not allowed (allowed: file, https)" in failed.reason
    assert source(events) == local.as_uri()


async def test_file_resolvables_are_checked_like_downloads(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)
    short = tmp_path / "short.bin"
    short.write_bytes(data[:-1])
    good = tmp_path / "good.bin"
    good.write_bytes(data)
    _, events = await fetch(
        tmp_path, data, short.as_uri(), (tmp_path / "nope").as_uri(), good.as_uri()
    )
    first, second = failures(events)
    assert f"has {len(data) - 1} bytes; the piece has {len(data)}" in first.reason
    assert "No such file" in second.reason


async def test_progress_is_coalesced_and_monotonic(server: ContentServer, tmp_path: Path) -> None:
    data = os.urandom(8 * MIB)
    server.add("a", data)
    _, events = await fetch(tmp_path, data, server.url("ok", "a"))
    done = [e.done for e in events if isinstance(e, PieceProgress)]
    assert 1 <= len(done) <= 100
    steps = [b - a for a, b in zip([0, *done], done, strict=False)]
    assert min(steps) >= 256 * 1024 and done == sorted(done)
    assert done[-1] <= len(data)


async def test_a_complete_part_from_a_killed_run_is_installed_without_a_request(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    server.add("a", data)
    part = tmp_path / "cache" / ".matchlock" / "tmp" / f"{sha256(data)}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    _, events = await fetch(tmp_path, data, server.url("ok", "a"))
    assert server.requests == []
    assert source(events) == server.url("ok", "a")
    assert not part.exists()


def test_a_policy_that_would_never_try_is_refused() -> None:
    with pytest.raises(UsageError, match="attempts >= 1"):
        FetchPolicy(attempts=0)
    with pytest.raises(UsageError, match="timeouts must be > 0"):
        FetchPolicy(read_timeout=0)
    with pytest.raises(UsageError, match="cannot be negative"):
        FetchPolicy(backoff=-1)
