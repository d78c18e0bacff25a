"""The room wire protocol: messages, their encoding, and the join challenge.

Every message is one JSON object with a ``type``; a transport carries each as one frame (a
websocket text message, one line of newline-delimited JSON over TCP, one item in memory). The
exact protocol, with a transcript, is in ``docs/protocol.md``.

Client to host: ``hello`` (the signed room config, who I am, how many room events I already
have), ``answer`` (my signature over the challenge), ``report`` (an event about one of my
pieces), ``goodbye``. Host to client: ``challenge`` (a fresh nonce), ``welcome`` (every room
event after the ones I have), ``event`` (each new room event, to every member), ``refused``
(a code and a reason; ``fatal`` when the connection closes after it).

Pure core: decoding turns any bytes into a message or a :class:`MessageError`; nothing here
does IO.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from matchlock import events as ev
from matchlock.config import RoomConfig, SafeName
from matchlock.errors import InputError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "Answer",
    "Challenge",
    "ClientMessage",
    "Goodbye",
    "Hello",
    "HostMessage",
    "MessageError",
    "Refused",
    "Relay",
    "Report",
    "ReportEvent",
    "Welcome",
    "challenge_bytes",
    "decode_client_message",
    "decode_host_message",
    "encode",
    "relay_frame",
]

PROTOCOL_VERSION = 1
"""The protocol version this code speaks (``hello.protocol``)."""

MAX_MESSAGE_BYTES = 1 << 20
"""Largest message accepted from a peer, in bytes (a welcome may be larger: it is the host's)."""

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
    """I want to join ``room.room_id`` as ``user_id``; I already hold ``since`` room events."""

    type: Literal["hello"] = "hello"
    protocol: int
    room: RoomConfig
    user_id: SafeName
    since: int = Field(default=0, ge=0)


class Answer(_Message):
    """My Ed25519 signature (base64) over :func:`challenge_bytes` of the challenge I was sent."""

    type: Literal["answer"] = "answer"
    signature: str = Field(max_length=128)


ReportEvent = Annotated[
    ev.PieceStarted
    | ev.PieceProgress
    | ev.ResolvableFailed
    | ev.FolderRejected
    | ev.PieceFinished
    | ev.PieceFailed
    | ev.PieceRetried,
    Field(discriminator="type"),
]
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
    nonce: str


class Welcome(_Message):
    """You are in. ``events`` are the room's events after the ``since`` you sent, in order;
    the first has sequence number ``since + 1``."""

    type: Literal["welcome"] = "welcome"
    since: int
    events: list[ev.Event]


class Relay(_Message):
    """A new room event, sent to every member (the reporter included) in sequence order."""

    type: Literal["event"] = "event"
    seq: int
    event: ev.Event


class Refused(_Message):
    """Something you sent was refused. With ``fatal`` the host closes the connection."""

    type: Literal["refused"] = "refused"
    code: str
    reason: str
    fatal: bool


ClientMessage = Annotated[Hello | Answer | Report | Goodbye, Field(discriminator="type")]
HostMessage = Annotated[Challenge | Welcome | Relay | Refused, Field(discriminator="type")]

_CLIENT: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
_HOST: TypeAdapter[HostMessage] = TypeAdapter(HostMessage)


def encode(message: _Message) -> bytes:
    """The message as compact JSON bytes (one frame)."""
    return message.model_dump_json().encode()


def relay_frame(seq: int, body: bytes) -> bytes:
    """The :class:`Relay` frame of the event whose JSON is ``body``, as :func:`encode` would
    make it, without building the message again (the host relays every event)."""
    return b'{"type":"event","seq":%d,"event":%s}' % (seq, body)


def _reason(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def decode_client_message(data: bytes, limit: int = MAX_MESSAGE_BYTES) -> ClientMessage:
    """A client's message from its bytes, or :class:`MessageError` (too large, malformed)."""
    if len(data) > limit:
        raise MessageError("too-large", f"message of {len(data)} bytes exceeds {limit}")
    try:
        return _CLIENT.validate_json(data)
    except ValidationError as error:
        raise MessageError("malformed", _reason(error)) from None


def decode_host_message(data: bytes) -> HostMessage:
    """A host's message from its bytes, or :class:`MessageError`."""
    try:
        return _HOST.validate_json(data)
    except ValidationError as error:
        raise MessageError("malformed", _reason(error)) from None


def challenge_bytes(room_id: str, user_id: str, nonce: str) -> bytes:
    """What a joining user signs: the join domain line, then room id, user id and nonce, each on
    its own line (ids are safe names, so this is unambiguous)."""
    return JOIN_DOMAIN + f"{room_id}\n{user_id}\n{nonce}".encode()
