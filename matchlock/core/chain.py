"""The event log's line format: JSON Lines, sequence-numbered and hash-chained.

Every line is one JSON object, written in exactly this key order::

    {"seq":0,"prev":"000…000","header":{"format":1,"schema":1,"stream":"room/r1"},"hash":"…"}
    {"seq":1,"prev":"<hash of line 0>","event":{…},"hash":"…"}
    {"seq":2,"prev":"<hash of line 1>","event":{…},"hash":"…"}

``hash`` is the lowercase hex sha256 of the line's bytes up to (not including) ``,"hash":"``, and
``prev`` is the ``hash`` of the line before (64 zeros for the header). So a changed byte breaks
that line's own hash; a removed, duplicated or reordered line breaks ``seq`` and ``prev``; and
only the last line can be torn by a crash, which shows as a final line without its newline.
The header names the log format version, the event schema version (older events are upcast,
see :mod:`matchlock.core.events`) and the stream (``room/<room_id>``, ``client/<room_id>/<user>``,
``download``).

The chain makes a log tamper-evident, not forgery-proof: anyone can recompute the hashes of a
rewritten log. Comparing the last hash with a copy kept elsewhere (the host's, a peer's) anchors it.

Why both, when ``prev`` repeats the line before's ``hash`` (together ~150 of a progress line's
~270 bytes): ``hash`` lets any one line be checked alone, so a damaged line is named exactly, a
torn tail is told from damage, and a reader may start anywhere (a room host reads a welcome's
older events from line ``since`` on: :func:`decode_after`); ``prev`` chains the lines in order,
so removing, duplicating or reordering whole lines, each still self-consistent, is caught, and a
writer continues the chain from the last line alone. Folding ``prev`` into ``hash`` (hashing the
predecessor's hash with the line) would save the ~75 bytes of ``prev``, but no line could then
be checked without reading the one before it, and it would change the format every existing
log and every other reader use; replay stays within 2x a bare ``json.loads`` of the same lines
with both (``benchmarks/bench_replay.py``).

Pure core: encoding and checking bytes, no files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from matchlock.core.errors import LogCorruptError, LogError
from matchlock.core.events import EVENT_SCHEMA_VERSION, UPCASTERS, Event, EventAdapter

__all__ = [
    "FORMAT_VERSION",
    "GENESIS",
    "LogDecoder",
    "LogHeader",
    "TornTail",
    "decode_after",
    "decode_line",
    "encode_event",
    "encode_header",
]

FORMAT_VERSION = 1
"""The version of the line format this code reads and writes."""

GENESIS = "0" * 64
"""The ``prev`` of the header line."""

_HASH_KEY = b',"hash":"'
_sha256 = hashlib.sha256
_HEADER_START = b'{"seq":0,"prev":"%s","header":{' % GENESIS.encode()
_STREAM = re.compile(rb'"stream":"([A-Za-z0-9_./-]*)"')
_TAIL = len(_HASH_KEY) + 64 + 3  # ,"hash":"<64 hex>"}\n


class LogHeader(BaseModel):
    """The first line's payload."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    format: int
    schema_version: int = Field(alias="schema")
    stream: str


class _HeaderLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int
    prev: str
    header: LogHeader
    hash: str


class _EventLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int
    prev: str
    event: Event
    hash: str


@dataclass(frozen=True)
class TornTail:
    """A last line cut short by a crash: its 1-based line number and how many bytes it had.

    Line 1 is the header: a log whose header was torn (any prefix of a header, 0 bytes
    included) holds no event; ``stream`` is then the stream its surviving bytes name, if they
    got that far."""

    line: int
    size: int
    stream: str | None = None

    @property
    def header(self) -> bool:
        """Whether the torn line is the header (so the log holds no event)."""
        return self.line == 1


def _seal(prefix: bytes) -> tuple[bytes, str]:
    digest = hashlib.sha256(prefix).hexdigest()
    return b'%s%s%s"}\n' % (prefix, _HASH_KEY, digest.encode()), digest


def encode_header(stream: str) -> tuple[bytes, str]:
    """The header line of a new log of ``stream``, and its hash."""
    header = LogHeader(format=FORMAT_VERSION, schema_version=EVENT_SCHEMA_VERSION, stream=stream)
    body = header.model_dump_json(by_alias=True).encode()
    return _seal(b'{"seq":0,"prev":"%s","header":%s' % (GENESIS.encode(), body))


def encode_event(seq: int, prev: str, event: Event, body: bytes | None = None) -> tuple[bytes, str]:
    """The line for ``event`` at ``seq`` after the line hashed ``prev``, and its own hash.
    ``body`` is the event's JSON when the caller already has it (``EventAdapter.dump_json``)."""
    if body is None:
        body = EventAdapter.dump_json(event)
    prefix = b'{"seq":%d,"prev":"%s","event":%s' % (seq, prev.encode(), body)
    digest = _sha256(prefix).hexdigest()  # _seal's, inlined: a room host seals every event
    return b'%s,"hash":"%s"}\n' % (prefix, digest.encode()), digest


def _own_hash(line: bytes, source: str, lineno: int) -> str:
    if len(line) < _TAIL or line[-_TAIL : -_TAIL + len(_HASH_KEY)] != _HASH_KEY:
        raise LogCorruptError(source, lineno, "the line does not end with its hash")
    stated = line[-67:-3]
    if hashlib.sha256(line[:-_TAIL]).hexdigest().encode() != stated:
        raise LogCorruptError(source, lineno, "the line's hash does not match its content")
    return stated.decode()


def _header(line: bytes, source: str) -> tuple[LogHeader, str]:
    digest = _own_hash(line, source, 1)
    try:
        parsed = _HeaderLine.model_validate_json(line)
    except ValidationError:
        raise LogCorruptError(source, 1, "the first line is not a matchlock log header") from None
    if parsed.seq != 0 or parsed.prev != GENESIS:
        raise LogCorruptError(source, 1, "the header must have seq 0 and an all-zero prev")
    if parsed.header.format != FORMAT_VERSION:
        raise LogError(f"{source}: log format {parsed.header.format} is not supported")
    if parsed.header.schema_version > EVENT_SCHEMA_VERSION:
        raise LogError(
            f"{source}: event schema {parsed.header.schema_version} is newer than this matchlock"
        )
    return parsed.header, digest


class _NoUpcaster(Exception):
    """An event is older than any upcaster this code has."""


def _upcast_line(line: bytes, schema: int) -> _EventLine:
    raw = json.loads(line)
    event = raw["event"]
    for version in range(event.get("v", schema), EVENT_SCHEMA_VERSION):
        if version not in UPCASTERS:
            raise _NoUpcaster(f"no upcaster from event schema {version}")
        event = UPCASTERS[version](event)
    raw["event"] = event
    return _EventLine.model_validate(raw)


def _why(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"not a valid event: {where}: {first['msg']}" if where else f"not valid: {first['msg']}"


class LogDecoder:
    """Checks and decodes one log's lines (each ending in ``\\n``) into events.

    After (or during) :meth:`events`, ``header`` is the log's header (None if it was torn),
    ``seq`` the sequence number of the last good line, ``last_hash`` its hash (what the next
    appended line must carry as ``prev``), and ``torn`` the torn tail, if the last line (or the
    header) was cut short by a crash.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.header: LogHeader | None = None
        self.seq = -1
        self.last_hash = GENESIS
        self.torn: TornTail | None = None

    def events(self, lines: Iterable[bytes]) -> Iterator[Event]:
        """Yield every event, header checked first; raise :class:`LogCorruptError` naming the
        first bad line. A final line without its newline is a torn tail: recorded in ``torn``,
        not decoded; so is a torn header (any prefix of one, nothing at all included), after
        which ``header`` stays None and nothing is yielded. Any other damage raises."""
        source, it = self.source, iter(lines)
        first = next(it, b"")
        if not first.endswith(b"\n"):
            self._torn_header(first, next(it, None) is not None)
            return
        self.header, prev = _header(first, source)
        self.seq, self.last_hash = 0, prev
        fast = self.header.schema_version == EVENT_SCHEMA_VERSION
        for seq, line in enumerate(it, start=1):
            if not line.endswith(b"\n"):
                if next(it, None) is not None:
                    raise LogCorruptError(source, seq + 1, "the line is cut short")
                self.torn = TornTail(line=seq + 1, size=len(line))
                return
            digest = _own_hash(line, source, seq + 1)
            record = _record(line, fast, self.header.schema_version, source, seq + 1)
            if record.seq != seq:
                why = (
                    f"expected seq {seq}, found {record.seq} (a line removed, duplicated or moved)"
                )
                raise LogCorruptError(source, seq + 1, why)
            if record.prev != prev:
                why = "prev does not match the line before (a line removed, duplicated or moved)"
                raise LogCorruptError(source, seq + 1, why)
            prev = self.last_hash = digest
            self.seq = seq
            yield record.event

    def _torn_header(self, first: bytes, more: bool) -> None:
        """An empty log, or one whose header a crash cut short: recorded in ``torn``."""
        if more:
            raise LogCorruptError(self.source, 1, "the header line is cut short")
        if first[: len(_HEADER_START)] != _HEADER_START[: len(first)]:
            raise LogError(f"{self.source}: the first line is not a matchlock log header")
        found = _STREAM.search(first)
        stream = None if found is None else found.group(1).decode()
        self.torn = TornTail(line=1, size=len(first), stream=stream)


def decode_line(line: bytes, seq: int, prev: str, source: str) -> tuple[Event, str]:
    """Check one whole event line of the current schema that must be event ``seq`` chained
    to the line hashed ``prev`` (a line another writer appended to a log this process holds
    open); its event and its own hash. Raises :class:`LogCorruptError` naming line ``seq + 1``."""
    digest = _own_hash(line, source, seq + 1)
    record = _record(line, True, EVENT_SCHEMA_VERSION, source, seq + 1)
    if record.seq != seq or record.prev != prev:
        why = f"expected event {seq} chained to the log's last line, found event {record.seq}"
        raise LogCorruptError(source, seq + 1, why)
    return record.event, digest


def decode_after(lines: Iterable[bytes], since: int, source: str) -> Iterator[Event]:
    """The events after event ``since`` (0: the header) of a log this process wrote, from its
    lines starting with line ``since``: that line's own hash is checked, and each next line's
    own hash, its ``seq`` and its ``prev`` (chained to the line before). A room host reads a
    welcome's older events so. Raises :class:`LogCorruptError` naming the line; stops at the
    end of ``lines`` or at a line without its newline."""
    it = iter(lines)
    first = next(it, None)
    if first is None:
        raise LogCorruptError(source, since + 1, "the log ends before this line")
    prev = _own_hash(first, source, since + 1)
    for seq, line in enumerate(it, start=since + 1):
        if not line.endswith(b"\n"):
            return
        digest = _own_hash(line, source, seq + 1)
        record = _record(line, True, EVENT_SCHEMA_VERSION, source, seq + 1)
        if record.seq != seq or record.prev != prev:
            why = f"expected event {seq} chained to the line before, found event {record.seq}"
            raise LogCorruptError(source, seq + 1, why)
        prev = digest
        yield record.event


def _record(line: bytes, fast: bool, schema: int, source: str, lineno: int) -> _EventLine:
    try:
        return _EventLine.model_validate_json(line) if fast else _upcast_line(line, schema)
    except ValidationError as error:
        raise LogCorruptError(source, lineno, _why(error)) from None
    except _NoUpcaster as missing:
        raise LogCorruptError(source, lineno, str(missing)) from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise LogCorruptError(source, lineno, "not a valid event") from None
