"""The event log: round trip, hash chain, torn tails, damage detection, durability."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matchlock.cli import main
from matchlock.core import events as ev
from matchlock.core.chain import LogDecoder, encode_event, encode_header
from matchlock.core.errors import LogCorruptError, LogError, UsageError
from matchlock.core.room import replay
from matchlock.store.eventlog import Durability, EventLog, MemoryStore, read_events, replay_file
from tests.core.test_room import happy_path

EVENTS = happy_path()


def write(path: Path, events: list[ev.Event], stream: str = "room/r1") -> None:
    async def go() -> None:
        async with await EventLog.create(path, stream) as log:
            await log.append(*events)

    asyncio.run(go())


def lines_of(events: list[ev.Event]) -> list[bytes]:
    header, prev = encode_header("room/r1")
    lines = [header]
    for seq, event in enumerate(events, start=1):
        line, prev = encode_event(seq, prev, event)
        lines.append(line)
    return lines


def decode(lines: list[bytes]) -> list[ev.Event]:
    return list(LogDecoder("test.log").events(lines))


def test_round_trip_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "room.log"
    write(path, EVENTS)
    contents = read_events(path)
    assert contents.events == EVENTS
    assert contents.header is not None and contents.header.stream == "room/r1"
    assert contents.torn is None
    assert replay_file(path).state == replay(EVENTS)


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "room.log"
    write(path, EVENTS[:1])
    with pytest.raises(UsageError):
        write(path, EVENTS[:1])


def test_torn_last_line_is_reported_and_earlier_events_kept(tmp_path: Path) -> None:
    path = tmp_path / "room.log"
    write(path, EVENTS)
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    contents = read_events(path)
    assert contents.events == EVENTS[:-1]
    assert contents.torn is not None and contents.torn.line == len(EVENTS) + 1


def test_open_cuts_a_torn_tail_and_continues_the_chain(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "room.log"
    write(path, EVENTS[:5])
    path.write_bytes(path.read_bytes() + b'{"seq":6,"prev":"ab')

    async def go() -> list[ev.Event]:
        log, found = await EventLog.open(path)
        await log.append(*EVENTS[5:])
        await log.close()
        return found

    found = asyncio.run(go())
    assert found == EVENTS[:5]
    assert "torn by a crash" in caplog.text
    assert read_events(path).events == EVENTS


def test_a_torn_header_is_reported_as_torn_with_no_event(tmp_path: Path) -> None:
    path = tmp_path / "room.log"
    path.write_bytes(b'{"seq":0,"prev"')
    contents = read_events(path)
    assert contents.header is None and contents.events == []
    assert contents.torn is not None and contents.torn.header and contents.torn.size == 15


def test_a_first_line_that_is_no_header_is_a_log_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"shopping list")
    with pytest.raises(LogError, match="not a matchlock log header"):
        read_events(path)


def test_missing_file_is_a_log_error(tmp_path: Path) -> None:
    with pytest.raises(LogError, match="no such log file"):
        read_events(tmp_path / "nope.log")


def test_illegal_event_in_a_well_chained_log_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "room.log"
    write(path, [*EVENTS[:2], ev.MemberDone(at=9, user_id="alice")])
    with pytest.raises(LogCorruptError) as caught:
        replay_file(path)
    assert caught.value.line == 4
    assert "illegal event" in str(caught.value)


def test_until_stops_at_a_sequence_number(tmp_path: Path) -> None:
    path = tmp_path / "room.log"
    write(path, EVENTS)
    assert replay_file(path, until=3).state == replay(EVENTS[:3])


LINES = lines_of(EVENTS)


DATA = b"".join(LINES)


@given(st.integers(0, len(DATA) - 2), st.integers(1, 255))
def test_any_single_byte_change_is_detected(position: int, delta: int) -> None:
    data = bytearray(DATA)
    data[position] = (data[position] + delta) % 256  # any other byte, a newline included
    line_of_change = DATA[:position].count(b"\n") + 1
    with pytest.raises(LogError) as caught:
        decode(bytes(data).splitlines(keepends=True))
    if isinstance(caught.value, LogCorruptError):
        assert caught.value.line <= line_of_change + 1


@given(st.integers(1, len(LINES) - 1))
def test_a_deleted_line_is_detected(index: int) -> None:
    lines = LINES[:index] + LINES[index + 1 :]
    if index == len(LINES) - 1:
        assert decode(lines) == EVENTS[:-1]  # the end of a log has nothing after it to check
        return
    with pytest.raises(LogCorruptError) as caught:
        decode(lines)
    assert caught.value.line == index + 1


@given(st.integers(1, len(LINES) - 1))
def test_a_duplicated_line_is_detected(index: int) -> None:
    lines = LINES[: index + 1] + LINES[index:]
    with pytest.raises(LogCorruptError) as caught:
        decode(lines)
    assert caught.value.line == index + 2


@given(st.integers(1, len(LINES) - 2))
def test_swapped_lines_are_detected(index: int) -> None:
    lines = list(LINES)
    lines[index], lines[index + 1] = lines[index + 1], lines[index]
    with pytest.raises(LogCorruptError) as caught:
        decode(lines)
    assert caught.value.line == index + 1


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, len(LINES) - 1))
def test_every_prefix_of_a_log_replays(tmp_path: Path, end: int) -> None:
    path = tmp_path / f"prefix{end}.log"
    path.write_bytes(b"".join(LINES[: end + 1]))
    assert replay_file(path).state == replay(EVENTS[:end])


def test_durability_policy_fsyncs_only_at_decisions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    synced: list[int] = []
    import os

    real = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)

    async def go() -> None:
        log = await EventLog.create(tmp_path / "d.log", "room/r1")
        synced.clear()
        await log.append(EVENTS[0], EVENTS[1])  # opened + joined: decisions
        assert len(synced) == 1
        await log.append(ev.PieceStarted(at=1, user_id="alice", piece="chars/kfm"))
        assert len(synced) == 1
        await log.close()

    asyncio.run(go())


def test_memory_store_holds_the_same_lines_as_a_file(tmp_path: Path) -> None:
    async def go() -> list[bytes]:
        log = EventLog.in_memory("room/r1")
        await log.append(*EVENTS)
        assert isinstance(log.store, MemoryStore)
        return log.store.lines

    assert asyncio.run(go()) == LINES
    write(tmp_path / "room.log", EVENTS)
    assert (tmp_path / "room.log").read_bytes() == b"".join(LINES)


def test_a_line_replaced_by_another_self_hashed_one_is_caught_by_prev_alone() -> None:
    """The replaced line is whole (its own hash, seq and prev are right): only the next line's
    ``prev`` shows that the line it follows is not the one that was written."""
    index = next(seq for seq, e in enumerate(EVENTS, 1) if isinstance(e, ev.PieceProgress))
    other = EVENTS[index - 1].model_copy(update={"done": 41})  # still legal: a valid replay
    prev = LINES[index - 1][-67:-3].decode()
    lines = [*LINES]
    lines[index] = encode_event(index, prev, other)[0]
    assert list(LogDecoder("t").events(lines[: index + 1]))[-1] == other  # whole on its own
    with pytest.raises(LogCorruptError, match="prev does not match") as caught:
        decode(lines)
    assert caught.value.line == index + 2


_DECISIONS_SEEN: list[ev.Event] = [  # written out, not taken from DECISIONS: it is under test
    *(e for e in EVENTS if e.type not in ("piece_started", "piece_progress", "resolvable_failed")),
    ev.MemberRefused(at=9, user_id="mallory", code="unknown-user", reason="not expected"),
    ev.PieceFailed(at=9, user_id="alice", piece="chars/kfm"),
    ev.RoomAborted(at=9, reason="deadline"),
    ev.DownloadOpened(at=9, sizes={"chars/kfm": 1}),
    ev.DownloadClosed(at=9),
]
DECISION_EVENTS = list({e.type: e for e in _DECISIONS_SEEN}.values())  # one of each type


@pytest.mark.parametrize("decision", DECISION_EVENTS, ids=lambda e: e.type)
async def test_a_decision_survives_a_power_loss_once_appended(decision: ev.Event) -> None:
    """``durability="decisions"``: the append of a batch holding a decision returns only once
    the batch, and every line before it, would survive the machine."""
    store = MemoryStore()
    log = EventLog.new(store, "room/r1")
    await log.append(EVENTS[0])
    progress = ev.PieceProgress(at=2, user_id="alice", piece="chars/kfm", done=40)
    await log.append(progress)
    await log.append(decision)
    store.crash(survive=0)
    assert decode(store.lines) == [EVENTS[0], progress, decision]


async def test_progress_alone_is_not_made_durable() -> None:
    store = MemoryStore()
    log = EventLog.new(store, "room/r1")
    await log.append(EVENTS[0])
    await log.append(ev.PieceProgress(at=2, user_id="alice", piece="chars/kfm", done=40))
    store.crash(survive=0)
    assert decode(store.lines) == [EVENTS[0]]


@pytest.mark.parametrize("cut", [0, 1, 20, len(LINES[0]) - 1])
def test_replay_verify_reports_an_empty_or_torn_header_log_as_torn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cut: int
) -> None:
    """Found by killing ``matchlock serve`` as a room's log appeared: it was exit 2."""
    path = tmp_path / "room.log"
    path.write_bytes(LINES[0][:cut])
    assert main(["replay", str(path), "--verify"]) == 0
    captured = capsys.readouterr()
    assert f"{path}:1: the header was torn by a crash ({cut} bytes survived)" in captured.err
    assert "ok: 0 events" in captured.out


async def test_a_members_own_log_torn_as_it_appeared_is_continued(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What ``join --log`` does with a log that exists (:meth:`EventLog.open`, no stream)."""
    path = tmp_path / "alice.log"
    header, _ = encode_header("client/r1/alice")
    path.write_bytes(header[:-40])  # the stream survived, its hash did not
    log, found = await EventLog.open(path)
    assert found == [] and path.read_bytes() == b""
    await log.append(*EVENTS)
    await log.close()
    contents = read_events(path)
    assert contents.events == EVENTS
    assert contents.header is not None and contents.header.stream == "client/r1/alice"
    assert f"the header was torn by a crash ({len(header) - 40} bytes survived)" in caplog.text


@pytest.mark.parametrize(("durability", "survivors"), [("every", 3), ("decisions", 2), ("none", 0)])
async def test_what_each_durability_keeps_through_a_power_loss(
    durability: Durability, survivors: int
) -> None:
    """The table of docs/durability.md: a decision, then progress, then the power goes."""
    store = MemoryStore()
    log = EventLog.new(store, "room/r1", durability)
    progress = ev.PieceProgress(at=2, user_id="alice", piece="chars/kfm", done=40)
    await log.append(EVENTS[0], EVENTS[1])
    await log.append(progress)
    store.crash(survive=0)
    written = lines_of([*EVENTS[:2], progress])
    assert store.lines == (written[: survivors + 1] if survivors else [])  # events + header
