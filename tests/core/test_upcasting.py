"""Old logs keep replaying after the event schema evolves: events of an older schema version
are upcast on reading; a log from a newer matchlock is refused with a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from matchlock.core import chain
from matchlock.core import events as ev
from matchlock.core.chain import GENESIS, LogHeader
from matchlock.core.errors import LogError
from matchlock.core.room import replay
from matchlock.store.eventlog import read_events, replay_file


def write_log(path: Path, schema: int, events: list[dict[str, Any]]) -> None:
    """A log as a matchlock with event schema ``schema`` would have written it."""
    header = LogHeader(format=chain.FORMAT_VERSION, schema_version=schema, stream="download")
    body = header.model_dump_json(by_alias=True).encode()
    line, prev = chain._seal(b'{"seq":0,"prev":"%s","header":%s' % (GENESIS.encode(), body))
    lines = [line]
    for seq, event in enumerate(events, start=1):
        raw = json.dumps(event, separators=(",", ":")).encode()
        line, prev = chain._seal(b'{"seq":%d,"prev":"%s","event":%s' % (seq, prev.encode(), raw))
        lines.append(line)
    path.write_bytes(b"".join(lines))


OLD_EVENTS = [  # schema 0 called a piece's progress "bytes_done"
    {"v": 0, "at": 1.0, "type": "download_opened", "user_id": "local", "sizes": {"chars/kfm": 10}},
    {"v": 0, "at": 2.0, "type": "piece_started", "user_id": "local", "piece": "chars/kfm"},
    {
        "v": 0,
        "at": 3.0,
        "type": "piece_progress",
        "user_id": "local",
        "piece": "chars/kfm",
        "bytes_done": 4,
    },
]


def rename_bytes_done(event: dict[str, Any]) -> dict[str, Any]:
    event = {**event, "v": 1}
    if "bytes_done" in event:
        event["done"] = event.pop("bytes_done")
    return event


def test_an_old_log_is_upcast_and_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chain, "EVENT_SCHEMA_VERSION", 1)
    monkeypatch.setitem(ev.UPCASTERS, 0, rename_bytes_done)
    path = tmp_path / "old.log"
    write_log(path, schema=0, events=OLD_EVENTS)
    contents = read_events(path)
    assert contents.header is not None and contents.header.schema_version == 0
    progress = contents.events[-1]
    assert isinstance(progress, ev.PieceProgress) and progress.done == 4 and progress.v == 1
    state = replay_file(path).state
    assert state == replay(contents.events)
    assert state.members["local"].pieces["chars/kfm"].done == 4


def test_an_old_log_without_its_upcaster_is_a_log_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chain, "EVENT_SCHEMA_VERSION", 1)
    path = tmp_path / "old.log"
    write_log(path, schema=0, events=OLD_EVENTS)
    with pytest.raises(LogError, match=r"old\.log:2: no upcaster from event schema 0"):
        read_events(path)


def test_a_log_from_a_newer_matchlock_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.log"
    write_log(path, schema=ev.EVENT_SCHEMA_VERSION + 1, events=[])
    with pytest.raises(LogError, match="newer than this matchlock"):
        read_events(path)
