"""The download job as a whole: which pieces, the result or the error, events, the log."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from matchlock.core.errors import InputError, UsageError
from matchlock.core.events import DownloadClosed, DownloadOpened, Event
from matchlock.downloads import DownloadError, download, download_sync
from matchlock.store.eventlog import read_events, replay_file
from tests.downloads.conftest import FAST_POLICY, ContentServer, config, piece, zip_bytes


def two_collections(server: ContentServer) -> dict[str, Any]:
    blobs = {name: os.urandom(20_000) for name in ("kfm", "ryu", "arena")}
    for name, data in blobs.items():
        server.add(name, data)
    return {
        "chars": {
            "mandatory": True,
            "pieces": {
                "kfm": piece(blobs["kfm"], server.url("ok", "kfm")),
                "ryu": piece(blobs["ryu"], server.url("ok", "ryu")),
            },
        },
        "stages": {
            "mandatory": False,
            "pieces": {
                "arena": piece(blobs["arena"], server.url("ok", "arena")),
            },
        },
    }


async def test_mandatory_only_downloads_nothing_optional(
    server: ContentServer, tmp_path: Path
) -> None:
    events: list[Event] = []
    folders = await download(
        config(two_collections(server)),
        tmp_path,
        mandatory_only=True,
        on_event=events.append,
        policy=FAST_POLICY,
    )
    assert list(folders) == ["chars/kfm", "chars/ryu"]
    assert sorted(r.name for r in server.requests) == ["kfm", "ryu"]
    opened = events[0]
    assert isinstance(opened, DownloadOpened)
    assert sorted(opened.sizes) == ["chars/kfm", "chars/ryu"]


async def test_the_full_match_lock_downloads_everything(
    server: ContentServer, tmp_path: Path
) -> None:
    folders = await download(config(two_collections(server)), tmp_path, policy=FAST_POLICY)
    assert list(folders) == ["chars/kfm", "chars/ryu", "stages/arena"]
    assert all(folder.is_dir() and folder.is_absolute() for folder in folders.values())


async def test_a_failed_piece_raises_with_its_reasons_and_the_other_folders(
    server: ContentServer, tmp_path: Path
) -> None:
    pieces = two_collections(server)
    pieces["chars"]["pieces"]["ryu"]["resolvables"] = [
        {"url": server.url("missing", "ryu")},
        {"url": server.url("wrong", "ryu")},
    ]
    with pytest.raises(DownloadError) as raised:
        await download(config(pieces), tmp_path, policy=FAST_POLICY)
    error = raised.value
    assert isinstance(error, InputError)
    assert sorted(error.folders) == ["chars/kfm", "stages/arena"]
    assert [f.index for f in error.failures["chars/ryu"]] == [0, 1]
    assert "chars/ryu" in str(error) and "HTTP 404" in str(error)


async def test_the_log_replays_to_what_happened(server: ContentServer, tmp_path: Path) -> None:
    pieces = two_collections(server)
    pieces["stages"]["pieces"]["arena"]["resolvables"].insert(
        0, {"url": server.url("missing", "arena")}
    )
    pieces["chars"]["pieces"]["ryu"]["resolvables"] = [{"url": server.url("wrong", "ryu")}]
    log = tmp_path / "download.jsonl"
    ticks = itertools.count(1000)
    with pytest.raises(DownloadError):
        await download(
            config(pieces),
            tmp_path / "cache",
            log_path=log,
            policy=FAST_POLICY,
            clock=lambda: float(next(ticks)),
        )
    contents = read_events(log)
    assert contents.header is not None and contents.header.stream == "download"
    assert contents.torn is None
    assert [e.at for e in contents.events] == [float(t) for t in range(1000, next(ticks))]
    assert isinstance(contents.events[-1], DownloadClosed)
    state = replay_file(log).state.members["local"].pieces
    assert state["chars/kfm"].status == "finished"
    assert state["stages/arena"].status == "finished"
    assert [f.index for f in state["stages/arena"].failures] == [0]
    assert state["chars/ryu"].status == "error"
    assert "sha256 is" in state["chars/ryu"].failures[0].reason


async def test_a_log_is_closed_even_when_the_job_is_cancelled(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(2_000_000)
    server.add("slow", data)
    log = tmp_path / "download.jsonl"
    pieces = {"chars": {"pieces": {"kfm": piece(data, server.url("slow", "slow"))}}}
    job = asyncio.create_task(download(config(pieces), tmp_path / "cache", log_path=log))
    await asyncio.sleep(0.2)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    events = read_events(log).events
    assert [e.type for e in events][:2] == ["download_opened", "piece_started"]
    assert isinstance(events[-1], DownloadClosed)


async def test_an_unpacked_folder_must_match_folder_sha256(
    server: ContentServer, tmp_path: Path
) -> None:
    data = zip_bytes({"a.txt": b"a"})
    server.add("z", data)
    pieces = {
        "chars": {
            "pieces": {
                "z": piece(
                    data,
                    server.url("ok", "z"),
                    server.url("norange", "z"),
                    unpack="zip",
                    folder_sha256="0" * 64,
                )
            }
        }
    }
    with pytest.raises(DownloadError) as raised:
        await download(config(pieces), tmp_path, policy=FAST_POLICY)
    (failure,) = raised.value.failures["chars/z"]
    assert "folder_sha256 " + "0" * 64 in failure.reason
    assert len(server.requests) == 1
    assert not any(tmp_path.glob("*-zip"))


async def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="jobs must be at least 1"):
        await download(config({}), tmp_path, jobs=0)
    with pytest.raises(UsageError, match="await download"):
        download_sync(config({}), tmp_path)
    log = tmp_path / "exists.jsonl"
    log.write_text("")
    with pytest.raises(UsageError, match="already exists"):
        await download(config({}), tmp_path, log_path=log)


def test_download_sync_returns_the_same_result(tmp_path: Path) -> None:
    data = os.urandom(5000)
    source = tmp_path / "kfm.bin"
    source.write_bytes(data)
    pieces = {"chars": {"pieces": {"kfm": piece(data, source.as_uri())}}}
    folders = download_sync(config(pieces), tmp_path / "cache")
    assert (folders["chars/kfm"] / "kfm.bin").read_bytes() == data
