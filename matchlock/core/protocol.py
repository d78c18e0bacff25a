"""The room wire protocol: messages, their encoding, and the join challenge.

Every message is one JSON object with a ``type``; a transport carries each as one frame (a
websocket text message, one line of newline-delimited JSON over TCP, one item in memory). The
exact protocol, with a transcript, is in ``docs/protocol.md``.

Client to host: ``hello`` (the signed room config, who I am, how many room events I already
have, the protocol I speak and whether I serve pieces), ``answer`` (my signature over the
challenge), ``report`` (an event about one of my pieces), ``goodbye``. Host to client:
``challenge`` (a fresh nonce), ``welcome`` (every room event after the ones I have), ``event``
(each new room event, to every member), ``refused`` (a code and a reason; ``fatal`` when the
connection closes after it).

Version 2 adds peer transfers: their JSON messages are :mod:`matchlock.core.transfer_messages`'
(in the unions here); their bytes travel in binary data frames (:func:`data_frame`: a 13-byte
header, the tag ``0x01``, the transfer and the offset, then the payload), told from JSON by
the first byte, since JSON frames always start with ``{``. A host speaks the version each
member said hello with; a version 1 member never sees a field or a message of version 2.

Decoding is strict, because every byte from a peer is hostile until validated: exact JSON
types (no ``"1"`` or ``true`` for 1), finite numbers only, no key twice in one object, every
string and list within its bound (``MAX_*`` here and in :mod:`matchlock.core.events`), events of the
version this code speaks (only a log is upcast). Each failure is a :class:`MessageError` whose
``code`` the host sends back in ``refused``; ``docs/protocol.md`` tables every code and limit.

Pure core: decoding turns any bytes into a message or a :class:`MessageError`, never another
exception; nothing here does IO.
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
import types
import typing
from collections.abc import Sequence
from typing import Annotated, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from matchlock.core import events as ev
from matchlock.core.config import MAX_EXACT_INTEGER, RoomConfig, SafeName, is_safe_name
from matchlock.core.errors import InputError
from matchlock.core.transfer_messages import (
    MAX_CHUNK_BYTES,
    MAX_UPLOADS_PER_MEMBER,
    TRANSFER_WINDOW_BYTES,
    HostTransferMessage,
    MemberTransferMessage,
)

__all__ = [
    "DATA_FRAME_HEADER_BYTES",
    "DATA_FRAME_TAG",
    "DECODE_CODES",
    "MAX_CHUNK_BYTES",
    "MAX_HOST_MESSAGE_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_NONCE_LENGTH",
    "MAX_UPLOADS_PER_MEMBER",
    "PROTOCOL_VERSION",
    "SUPPORTED_PROTOCOLS",
    "TRANSFER_WINDOW_BYTES",
    "Answer",
    "Challenge",
    "ClientMessage",
    "DataChunk",
    "Goodbye",
    "Hello",
    "HostMessage",
    "MessageError",
    "Refused",
    "Relay",
    "Report",
    "ReportEvent",
    "Welcome",
    "answer_frame",
    "challenge_bytes",
    "challenge_frame",
    "data_frame",
    "data_header",
    "decode_client_message",
    "decode_host_message",
    "encode",
    "is_data_frame",
    "parse_data_frame",
    "relay_frame",
    "welcome_head",
]

PROTOCOL_VERSION = 2
"""The protocol version this code speaks (``hello.protocol``): 2 adds peer transfers."""

SUPPORTED_PROTOCOLS = frozenset({1, 2})
"""The versions a host accepts in a hello (it speaks to each member the version it said)."""

MAX_MESSAGE_BYTES = 1 << 20
"""Largest message a host accepts from a member, in bytes."""

MAX_HOST_MESSAGE_BYTES = 64 << 20
"""Largest message a member accepts from its host, in bytes (a welcome carries the history)."""

MAX_NONCE_LENGTH = 256
"""Longest challenge nonce, in hex digits (at least 32: 16 random bytes)."""

MAX_SERVING = 1 << 16
"""Most users a welcome's ``serving`` lists (a room has far fewer: the host's user cap)."""

DECODE_CODES = frozenset(
    {
        "too-large",
        "malformed-json",
        "duplicate-key",
        "wrong-type",
        "not-finite",
        "missing-field",
        "unknown-field",
        "unknown-type",
        "too-long",
        "out-of-range",
        "bad-value",
        "unknown-version",
    }
)
"""Every code a :class:`MessageError` from the decoders can carry (docs/protocol.md says when)."""

JOIN_DOMAIN = b"matchlock-join-v1\n"


class MessageError(InputError):
    """Bytes from a peer are not an acceptable message. ``code`` is sent back in ``refused``."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Hello(_Message):
    """I want to join ``room.room_id`` as ``user_id``; I already hold ``since`` room events.
    ``serve`` (protocol 2, omitted with 1): I serve the pieces I hold to other members."""

    type: Literal["hello"] = "hello"
    protocol: int
    room: RoomConfig
    user_id: SafeName
    since: ev.Count = 0
    serve: bool = False


class Answer(_Message):
    """My Ed25519 signature (base64) over :func:`challenge_bytes` of the challenge I was sent."""

    type: Literal["answer"] = "answer"
    signature: str = Field(max_length=128)


ReportEvent = Annotated[ev.PieceEvent, Field(discriminator="type")]
"""What a member may report: an event about one of its own pieces."""


class Report(_Message):
    """An event about one of my pieces (the host stamps it with its own time)."""

    type: Literal["report"] = "report"
    event: ReportEvent


class Goodbye(_Message):
    """I have everything and everyone is done: goodbye."""

    type: Literal["goodbye"] = "goodbye"


class Challenge(_Message):
    """Prove who you are: sign :func:`challenge_bytes` with this nonce (hex)."""

    type: Literal["challenge"] = "challenge"
    nonce: str = Field(min_length=32, max_length=MAX_NONCE_LENGTH, pattern="^[0-9a-f]+$")


class Welcome(_Message):
    """You are in. ``events`` are the room's events after the ``since`` you sent, in order;
    the first has sequence number ``since + 1``. Only to a member that said protocol 2:
    ``protocol`` (2: transfers may be used) and ``serving``, the members connected now that
    serve pieces (both omitted for protocol 1)."""

    type: Literal["welcome"] = "welcome"
    since: ev.Count
    events: list[ev.Event]
    protocol: Annotated[int, Field(ge=1)] = 1
    serving: Annotated[tuple[SafeName, ...], Field(max_length=MAX_SERVING)] = ()


class Relay(_Message):
    """A new room event, sent to every member (the reporter included) in sequence order."""

    type: Literal["event"] = "event"
    seq: Annotated[ev.Count, Field(ge=1)]
    event: ev.Event


class Refused(_Message):
    """Something you sent was refused. With ``fatal`` the host closes the connection."""

    type: Literal["refused"] = "refused"
    code: str = Field(max_length=ev.MAX_CODE_LENGTH)
    reason: ev.Reason
    fatal: bool


ClientMessage = Annotated[
    Hello | Answer | Report | Goodbye | MemberTransferMessage, Field(discriminator="type")
]
HostMessage = Annotated[
    Challenge | Welcome | Relay | Refused | HostTransferMessage, Field(discriminator="type")
]

_CLIENT: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
_HOST: TypeAdapter[HostMessage] = TypeAdapter(HostMessage)


def encode(message: BaseModel) -> bytes:
    """The message as compact JSON bytes (one frame). A version 1 hello or welcome leaves out
    the fields of version 2, which a version 1 peer would refuse as unknown."""
    if isinstance(message, Hello) and message.protocol == 1:
        return message.model_dump_json(exclude={"serve"}).encode()
    if isinstance(message, Welcome) and message.protocol == 1:
        return message.model_dump_json(exclude={"protocol", "serving"}).encode()
    return message.model_dump_json().encode()


# The frames of a join the host and its members make once per join, written without a model
# (validating the values and encoding them cost several times the formatting). Each writes what
# :func:`encode` writes for the same values (fields in the model's order, compact JSON): every
# value written here is one JSON needs no escape for (hex, base64, safe names, integers); any
# other goes through the model, and is refused as it would be.
_NONCE = re.compile(f"[0-9a-f]{{32,{MAX_NONCE_LENGTH}}}")
_BASE64 = re.compile("[A-Za-z0-9+/=]{0,128}")


def challenge_frame(nonce: str) -> bytes:
    """``encode(Challenge(nonce=nonce))``, the same bytes (the host challenges each peer)."""
    if _NONCE.fullmatch(nonce) is None:
        return encode(Challenge(nonce=nonce))
    return b'{"type":"challenge","nonce":"%s"}' % nonce.encode()


def answer_frame(signature: str) -> bytes:
    """``encode(Answer(signature=signature))``, the same bytes (a member answers each join)."""
    if _BASE64.fullmatch(signature) is None:
        return encode(Answer(signature=signature))
    return b'{"type":"answer","signature":"%s"}' % signature.encode()


def welcome_head(since: int, protocol: int, serving: Sequence[str]) -> bytes:
    """``encode(Welcome(since=since, events=[], protocol=protocol, serving=serving))``, the
    same bytes (the host welcomes each member: :func:`~matchlock.core.hosted.welcome_frame`
    puts the events in)."""
    plain = type(since) is int and type(protocol) is int and 0 <= since <= MAX_EXACT_INTEGER
    names_plain = len(serving) <= MAX_SERVING and all(map(is_safe_name, serving))
    if not plain or protocol < 1 or not names_plain:
        welcome = Welcome(since=since, events=[], protocol=protocol, serving=tuple(serving))
        return encode(welcome)
    if protocol == 1:
        return b'{"type":"welcome","since":%d,"events":[]}' % since
    names = ",".join(f'"{name}"' for name in serving)
    return b'{"type":"welcome","since":%d,"events":[],"protocol":%d,"serving":[%s]}' % (
        since,
        protocol,
        names.encode(),
    )


def relay_frame(seq: int, body: bytes) -> bytes:
    """The :class:`Relay` frame of the event whose JSON is ``body``, as :func:`encode` would
    make it, without building the message again (the host relays every event)."""
    return b'{"type":"event","seq":%d,"event":%s}' % (seq, body)


def decode_client_message(data: bytes, limit: int = MAX_MESSAGE_BYTES) -> ClientMessage:
    """A client's message from its bytes, or :class:`MessageError` (its ``code`` says what was
    wrong, its ``reason`` which field; see ``docs/protocol.md``, "Refusal codes")."""
    known = _known_hello(data) if len(data) <= limit else None
    if known is not None:
        return known
    message = _decode(_CLIENT, data, limit)
    if isinstance(message, Report):
        _known_version(message.event, "report.event")
    elif isinstance(message, Hello):
        _remember_room(data, message.room)
    return message


# Hellos for a room whose config was decoded before. Every member of a room sends the same
# signed config, byte for byte, in its hello: the config's bytes are decoded once, and the
# rooms decoded are remembered by those exact bytes. A hello is split only when it is written
# as this module encodes one: the fixed head, the room's bytes, then the user, since and serve
# in their fixed compact form (anything else is decoded the long way). Only bytes that were the
# room of a hello which decoded strictly (no key twice, none unknown) are remembered, and such
# bytes are one JSON value holding no key twice: another hello holding them in the same frame
# is the same room, with its user, since and serve checked by the model as ever.
_HELLO_HEAD = re.compile(rb'\{"type":"hello","protocol":(0|[1-9][0-9]{0,8}),"room":')
_HELLO_TAIL = re.compile(
    rb',"user_id":"([\x20\x21\x23-\x5b\x5d-\x7e]{1,64})","since":(0|[1-9][0-9]{0,15})'
    rb'(,"serve":(?:true|false))?\}'
)
_ROOMS: dict[bytes, RoomConfig] = {}
_ROOMS_KEPT = 128
"""Room configs remembered by their bytes (each of at most :data:`_ROOM_BYTES_KEPT`): a host
decodes the config of each room it opens once, not once per member."""
_ROOM_BYTES_KEPT = 32 << 10


def _hello_parts(data: bytes) -> tuple[re.Match[bytes], bytes, re.Match[bytes]] | None:
    """The head, the room's bytes and the tail of a hello written in the compact form."""
    head = _HELLO_HEAD.match(data)
    tail_at = data.rfind(b',"user_id":"')
    if head is None or tail_at < head.end():
        return None
    tail = _HELLO_TAIL.fullmatch(data, tail_at)
    return None if tail is None else (head, data[head.end() : tail_at], tail)


def _known_hello(data: bytes) -> Hello | None:
    """The hello ``data`` holds when its room's bytes were decoded before, else None (then
    the long way decodes it, and refuses it with the reason it always gave)."""
    parts = _hello_parts(data) if _ROOMS else None
    room = None if parts is None else _ROOMS.get(parts[1])
    if parts is None or room is None:
        return None
    head, _, tail = parts
    fields = {"type": "hello", "protocol": int(head[1]), "room": room, "user_id": tail[1].decode()}
    fields["since"] = int(tail[2])
    if tail[3] is not None:
        fields["serve"] = tail[3] == b',"serve":true'
    try:
        return Hello.model_validate(fields, strict=True)
    except ValidationError:
        return None


def _remember_room(data: bytes, room: RoomConfig) -> None:
    parts = _hello_parts(data)
    if parts is not None and len(parts[1]) <= _ROOM_BYTES_KEPT:
        if len(_ROOMS) >= _ROOMS_KEPT:
            del _ROOMS[next(iter(_ROOMS))]  # the oldest
        _ROOMS[parts[1]] = room


def decode_host_message(data: bytes, limit: int = MAX_HOST_MESSAGE_BYTES) -> HostMessage:
    """A host's message from its bytes, or :class:`MessageError`, as for a client's."""
    message = _decode(_HOST, data, limit)
    if isinstance(message, Relay):
        _known_version(message.event, "event.event")
    elif isinstance(message, Welcome):
        for index, event in enumerate(message.events):
            _known_version(event, f"welcome.events.{index}")
    return message


_T = TypeVar("_T")


def _decode(adapter: TypeAdapter[_T], data: bytes, limit: int) -> _T:
    if len(data) > limit:
        raise MessageError("too-large", f"message of {len(data)} bytes exceeds {limit}")
    try:
        message = adapter.validate_json(data, strict=True)
    except ValidationError as error:
        raise _refusal(error) from None
    if not _surely_no_duplicates(data, message):
        _find_duplicate(data)
    return message


def _known_version(event: ev.Event, where: str) -> None:
    if isinstance(event, ev.MEMBER_LOCAL):  # in a member's own log only, never on the wire
        raise MessageError("unknown-type", f"{where}: {event.type!r} is never sent by a host")
    if event.v != ev.EVENT_SCHEMA_VERSION:
        why = f"{where}.v: event version {event.v} is not {ev.EVENT_SCHEMA_VERSION}, the one spoken"
        raise MessageError("unknown-version", why)


_CODES = {
    "json_invalid": "malformed-json",
    "finite_number": "not-finite",
    "missing": "missing-field",
    "union_tag_not_found": "missing-field",
    "extra_forbidden": "unknown-field",
    "union_tag_invalid": "unknown-type",
    "string_too_long": "too-long",
    "too_long": "too-long",
    "greater_than": "out-of-range",
    "greater_than_equal": "out-of-range",
    "less_than": "out-of-range",
    "less_than_equal": "out-of-range",
}
"""Pydantic's error type -> our refusal code; any ``*_type`` error is ``wrong-type``, any other
error ``bad-value`` (a value of the right type that is not acceptable: a pattern, a literal)."""

_JSON_TYPES = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"))


def _refusal(error: ValidationError) -> MessageError:
    """The refusal for pydantic's first complaint: a code, and a reason naming the field."""
    first = error.errors(include_url=False)[0]
    kind, value = first["type"], first.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        code = "not-finite"  # NaN or Infinity where a string or an integer was expected, too
    else:
        code = _CODES.get(kind) or ("wrong-type" if kind.endswith("_type") else "bad-value")
    why = first["msg"]
    if code == "wrong-type":
        why += f" (got {_json_type(value)})"
    elif code == "not-finite" and kind != "finite_number":
        why += " (got NaN or Infinity)"
    where = ".".join(_field(part) for part in first["loc"])
    return MessageError(code, ev.clip(f"{where}: {why}" if where else why))


_SHOWN_KEY_LENGTH = 64
"""A key a peer chose is quoted in a reason, clipped to this many characters."""


def _field(part: str | int) -> str:
    if isinstance(part, int) or part.isidentifier():
        return str(part)
    return json.dumps(ev.clip(part, _SHOWN_KEY_LENGTH))


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), "another type")


# Duplicate keys. Pydantic's parser silently keeps the last of two equal keys; Python's hands
# them all to ``object_pairs_hook``, but at twice the cost of the whole decode. So first a cheap
# proof that ``data`` holds no key twice, and only when it fails, the exact search. The proof:
# the validated message holds P distinct keys (its fields set and its dicts' entries: unknown
# keys are refused, omitted defaults are not counted), and ``data`` holds K >= P keys, K == P
# exactly when none is repeated. Each key is followed by a ':' of its own, so count(':') >= K,
# and count(':') == P proves K == P: the common case, a report whose strings hold no ':'. When
# no whitespace precedes a ':', each key's closing quote is followed by one, so count('":') >= K
# too, and count('":') == P proves K == P: a report with a URL in it.
_LOOSE_COLON = re.compile(rb"[ \t\n\r]:")


def _surely_no_duplicates(data: bytes, message: object) -> bool:
    keys = _parsed_keys(message)
    if data.count(b":") == keys:
        return True
    return _LOOSE_COLON.search(data) is None and data.count(b'":') == keys


def _parsed_keys(value: object) -> int:
    """How many keys the JSON of ``value`` had (the fields set, the entries of dicts)."""
    counter = _MODEL_COUNTERS.get(type(value))
    if counter is not None:
        return counter(value)
    if isinstance(value, BaseModel):
        counter = _MODEL_COUNTERS[type(value)] = _model_counter(type(value))
        return counter(value)
    if isinstance(value, dict):
        return len(value) + sum(map(_parsed_keys, value.values()))
    if isinstance(value, list | tuple):
        return sum(map(_parsed_keys, value))
    return 0


_Counter = typing.Callable[[typing.Any], int]
_MODEL_COUNTERS: dict[type, _Counter] = {}
"""Each model's key counter, made once from its fields (:func:`_model_counter`)."""

_SCALARS = (str, int, float, bool, bytes, type(None))


def _model_counter(model: type[BaseModel]) -> _Counter:
    """What :func:`_parsed_keys` counts for a ``model``: its fields set, and the keys inside
    those that may hold any (a field of strings, numbers, or lists of them, holds none: it is
    not walked). Counting less than there are is safe (the quick proof fails and the exact
    search runs); this never counts more, since it walks what the generic walk would."""
    inner = [
        (name, counter)
        for name, info in model.model_fields.items()
        if (counter := _annotation_counter(info.annotation)) is not None
    ]

    def count(value: BaseModel) -> int:
        fields = value.__pydantic_fields_set__
        keys = len(fields)
        for name, counter in inner:
            if name in fields:
                keys += counter(getattr(value, name))
        return keys

    return count


def _annotation_counter(annotation: object) -> _Counter | None:
    """How to count the keys of a value of type ``annotation``; None when it holds none."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _annotation_counter(args[0])
    if origin is dict and len(args) == 2:
        values = _annotation_counter(args[1])
        if values is None:
            return len
        return lambda value: len(value) + sum(map(values, value.values()))
    if _holds_no_keys(annotation, origin, args):
        return None
    return _parsed_keys  # a model, a union of them, anything else: by the value's own type


def _holds_no_keys(annotation: object, origin: object, args: tuple[object, ...]) -> bool:
    """Whether a value of type ``annotation`` is surely no object and holds none: a scalar, a
    literal, an enum, or a tuple, list or union of such."""
    if annotation in _SCALARS or origin is Literal:
        return True
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return True
    return (
        origin in (tuple, list, frozenset, typing.Union, types.UnionType)
        and bool(args)
        and all(_annotation_counter(arg) is None for arg in args if arg is not Ellipsis)
    )


def _find_duplicate(data: bytes) -> None:
    """Refuse ``data`` (``duplicate-key``) when one of its objects has a key twice."""

    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = json.dumps(ev.clip(key, _SHOWN_KEY_LENGTH))
                raise MessageError("duplicate-key", f"the key {shown} appears twice in one object")
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(data, object_pairs_hook=unique)
    except (ValueError, RecursionError):  # pydantic read it: Python's reader is stricter
        raise MessageError("malformed-json", "not JSON that every reader reads alike") from None


DATA_FRAME_TAG = 0x01
"""The first byte of a data frame (a JSON frame's is ``{``)."""

_DATA_HEADER = struct.Struct(">BIQ")

DATA_FRAME_HEADER_BYTES = _DATA_HEADER.size
"""A data frame's header: the tag, the transfer (u32 big-endian), the offset (u64 big-endian)."""


class DataChunk(NamedTuple):
    """The bytes of ``transfer`` from ``offset`` on, as one data frame carried them."""

    transfer: int
    offset: int
    payload: bytes | memoryview
    """A view of the frame's bytes after its header (no copy of a chunk of up to 512 KiB)."""


def data_frame(transfer: int, offset: int, payload: bytes) -> bytes:
    """The data frame carrying ``payload`` (1 .. :data:`MAX_CHUNK_BYTES` bytes) of
    ``transfer`` at ``offset``."""
    if not 1 <= len(payload) <= MAX_CHUNK_BYTES:
        raise ValueError(f"a data frame carries 1 to {MAX_CHUNK_BYTES} bytes, not {len(payload)}")
    return _DATA_HEADER.pack(DATA_FRAME_TAG, transfer, offset) + payload


def is_data_frame(data: bytes) -> bool:
    """Whether ``data`` is a data frame rather than JSON (only its first byte is looked at)."""
    return data[:1] == b"\x01"


def data_header(data: bytes) -> tuple[int, int, int]:
    """``(transfer, offset, payload length)`` of a data frame, reading only its header (a host
    forwards the frame's bytes as they are), or :class:`MessageError`: ``bad-value`` for a frame
    too short to hold a byte, of transfer 0 or another tag, ``too-large`` for a payload over
    :data:`MAX_CHUNK_BYTES`."""
    size = len(data) - DATA_FRAME_HEADER_BYTES
    if size < 1:
        why = f"a data frame of {len(data)} bytes: its {DATA_FRAME_HEADER_BYTES}-byte header and"
        raise MessageError("bad-value", f"{why} at least one byte are needed")
    tag, transfer, offset = _DATA_HEADER.unpack_from(data)
    if tag != DATA_FRAME_TAG or transfer == 0:
        raise MessageError("bad-value", f"a data frame's tag {tag} or transfer {transfer}")
    if size > MAX_CHUNK_BYTES:
        why = f"a data frame of {size} payload bytes exceeds {MAX_CHUNK_BYTES}"
        raise MessageError("too-large", why)
    return transfer, offset, size


def parse_data_frame(data: bytes) -> DataChunk:
    """The :class:`DataChunk` of a data frame, or :class:`MessageError` as for
    :func:`data_header`."""
    transfer, offset, _ = data_header(data)
    return DataChunk(transfer, offset, memoryview(data)[DATA_FRAME_HEADER_BYTES:])


def challenge_bytes(room_id: str, user_id: str, nonce: str) -> bytes:
    """What a joining user signs: the join domain line, then room id, user id and nonce, each on
    its own line (ids are safe names, so this is unambiguous)."""
    return JOIN_DOMAIN + f"{room_id}\n{user_id}\n{nonce}".encode()
