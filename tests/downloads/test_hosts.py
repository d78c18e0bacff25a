"""Hosts that are down are skipped by the whole job; transient failures wait for the others."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from matchlock.core.events import Event, PieceFinished, ResolvableFailed, ResolvableFailure
from matchlock.core.room import replay
from matchlock.downloads import DownloadError, FetchPolicy, download
from tests.downloads.conftest import FAST_POLICY, ContentServer, config, piece

TWO_TRIES = FetchPolicy(attempts=2, backoff=0.01, read_timeout=5)


def nobody_listens() -> str:
    """The origin of a port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{closed.getsockname()[1]}"


@pytest.fixture
def unreachable() -> Iterator[str]:
    """The origin of a port on 127.0.0.1 whose accept queue is full: a connect there is never
    answered (the kernel drops the SYN), as with a host that cannot be reached."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())  # takes the queue's only place
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def failures(events: list[Event]) -> list[tuple[str, ResolvableFailure]]:
    return [(e.piece, e.failure) for e in events if isinstance(e, ResolvableFailed)]


def sources(events: list[Event]) -> dict[str, str]:
    return {e.piece: e.source for e in events if isinstance(e, PieceFinished)}


def pieces_behind(server: ContentServer, first: str, count: int) -> dict[str, Any]:
    """``count`` pieces whose first resolvable is under ``first``, the second on ``server``."""
    found: dict[str, Any] = {}
    for index in range(count):
        data = os.urandom(10_000)
        server.add(f"p{index}", data)
        found[f"p{index}"] = piece(data, f"{first}/ok/p{index}", server.url("ok", f"p{index}"))
    return {"chars": {"pieces": found}}


async def test_a_refused_host_is_left_at_once_and_skipped_by_every_other_piece(
    server: ContentServer, tmp_path: Path
) -> None:
    dead = nobody_listens()
    events: list[Event] = []
    await download(
        config(pieces_behind(server, dead, 4)),
        tmp_path,
        jobs=1,
        policy=TWO_TRIES,
        on_event=events.append,
        clock=lambda: 3723.5,
    )
    found, *skipped = failures(events)
    assert found[0] == "chars/p0" and "Connect call failed" in found[1].reason
    assert f"host {dead} is skipped by the rest of this job" in found[1].reason
    assert [key for key, _ in skipped] == ["chars/p1", "chars/p2", "chars/p3"]
    for _, failure in skipped:
        assert failure.reason.startswith(
            f"not requested: host {dead} was found down at 01:02:03.500 UTC by chars/p0 ("
        )
    assert set(sources(events).values()) == {server.url("ok", f"p{i}") for i in range(4)}
    assert len(server.requests) == 4, "only the working mirror was asked, once per piece"
    replay(events)


async def test_a_host_that_never_answers_the_connect_is_skipped_too(
    server: ContentServer, tmp_path: Path, unreachable: str
) -> None:
    events: list[Event] = []
    policy = FetchPolicy(attempts=2, backoff=0.01, connect_timeout=0.3)
    await download(
        config(pieces_behind(server, unreachable, 3)),
        tmp_path,
        jobs=1,
        policy=policy,
        on_event=events.append,
    )
    found, *skipped = failures(events)
    assert found[1].reason.startswith("no connection within 0.3 s; host ")
    assert all("was found down at" in f.reason for _, f in skipped) and len(skipped) == 2


async def test_a_redirect_to_a_host_found_down_is_not_followed(
    server: ContentServer, tmp_path: Path
) -> None:
    dead = nobody_listens()
    data = os.urandom(10_000)
    server.add("a", data)
    server.add("b", data[::-1])
    pieces = {
        "a": piece(data, f"{dead}/ok/a", server.url("ok", "a")),
        "b": piece(data[::-1], server.url("elsewhere", "b") + f"?to={dead}/ok/b",
                   server.url("ok", "b")),
    }  # fmt: skip
    events: list[Event] = []
    await download(
        config({"chars": {"pieces": pieces}}),
        tmp_path,
        jobs=1,
        policy=TWO_TRIES,
        on_event=events.append,
    )
    (_, refused), (_, skipped) = failures(events)
    assert refused.url.startswith(dead)
    assert skipped.url.startswith(server.url("elsewhere", "b"))
    assert skipped.reason.startswith(f"not requested: host {dead} was found down at")
    assert [r.route for r in server.requests] == ["ok", "elsewhere", "ok"]


async def test_a_transient_failure_is_tried_again_only_after_the_other_sources(
    server: ContentServer, tmp_path: Path
) -> None:
    dead = nobody_listens()
    data = os.urandom(50_000)
    server.add("a", data)
    urls = [f"{dead}/ok/a", server.url("unavailable", "a"), server.url("missing", "a")]
    events: list[Event] = []
    await download(
        config({"chars": {"pieces": {"kfm": piece(data, *urls)}}}),
        tmp_path,
        policy=FAST_POLICY,
        on_event=events.append,
    )
    assert [r.route for r in server.requests] == ["unavailable", "missing", "unavailable"]
    reasons = [(f.index, f.reason) for _, f in failures(events)]
    assert [index for index, _ in reasons] == [0, 1, 2]
    assert reasons[1][1] == (
        "HTTP 503 Service Unavailable (attempt 1 of 3; tried again after the other resolvables)"
    )
    assert reasons[2][1] == "HTTP 404 Not Found"
    assert sources(events) == {"chars/kfm": urls[1]}
    state = replay(events).members["local"].pieces["chars/kfm"]
    assert (state.status, state.source) == ("finished", urls[1])


async def test_coming_back_to_a_cut_source_starts_again_from_zero(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    server.add("a", data)
    urls = [server.url("cut", "a"), server.url("wrong", "a")]
    events: list[Event] = []
    await download(
        config({"chars": {"pieces": {"kfm": piece(data, *urls)}}}),
        tmp_path,
        policy=FAST_POLICY,
        on_event=events.append,
    )
    asked = [(r.route, r.range) for r in server.requests]
    assert asked == [("cut", None), ("wrong", None), ("cut", None)], (
        "the part held the wrong mirror's bytes: no resume from them"
    )
    assert sources(events) == {"chars/kfm": urls[0]}


async def test_every_attempt_of_a_failed_piece_is_in_its_failures(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(10_000)
    server.add("a", data)
    urls = [server.url("stall", "a"), server.url("missing", "a")]
    policy = FetchPolicy(attempts=2, backoff=0.01, read_timeout=0.3)
    events: list[Event] = []
    with pytest.raises(DownloadError) as raised:
        await download(
            config({"chars": {"pieces": {"kfm": piece(data, *urls)}}}),
            tmp_path,
            policy=policy,
            on_event=events.append,
        )
    (reasons,) = raised.value.failures.values()
    assert [f.index for f in reasons] == [0, 1, 0]
    assert reasons == tuple(f for _, f in failures(events))
    assert [r.route for r in server.requests] == ["stall", "missing", "stall"]
    state = replay(events).members["local"].pieces["chars/kfm"]
    assert (state.status, tuple(state.failures)) == ("error", reasons)


async def test_a_skipped_host_leaves_the_part_to_the_source_that_wrote_it(
    server: ContentServer, tmp_path: Path
) -> None:
    dead = nobody_listens()
    first, second = os.urandom(10_000), os.urandom(3 * 1024 * 1024)
    server.add("a", first)
    server.add("b", second)
    pieces = {
        "a": piece(first, f"{dead}/ok/a", server.url("ok", "a")),  # finds the host down
        "b": piece(second, server.url("cut", "b"), f"{dead}/ok/b"),
    }
    events: list[Event] = []
    await download(
        config({"chars": {"pieces": pieces}}),
        tmp_path,
        jobs=1,
        policy=FAST_POLICY,
        on_event=events.append,
    )
    cut = [r.range for r in server.requests if r.route == "cut"]
    assert len(cut) == 2 and cut[0] is None
    assert cut[1] is not None, "the cut download resumes: the skipped host never touched it"
    assert sources(events)["chars/b"] == server.url("cut", "b")
