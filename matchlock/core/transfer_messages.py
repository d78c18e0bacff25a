"""The messages of peer transfers (protocol version 2): a member asks the room for a piece, the
host picks a member that holds it, and the holder's bytes reach the requester through the host.

Member to host: ``want`` (send me this piece in this form from this offset), ``ack`` (the
requester holds every byte before ``offset``), ``end`` (the holder sent every byte),
``unheld`` (the holder cannot serve it), ``cancel`` (either side stops). Host to member:
``sending`` (to the requester: this holder will send it, this transfer id), ``unavailable`` (no
member can serve it now), ``serve`` (to the holder), ``ack`` and ``end`` forwarded, ``cut`` (the
transfer ended early, and why), and ``peer`` (whether a member that joined serves; the welcome
of a version 2 member lists those already connected that do). The bytes themselves travel in
binary data frames (:func:`matchlock.core.protocol.data_frame`), never in these messages.

Only members that said hello with protocol 2 send or receive these messages (a version 1 member
is refused ``unknown-type`` for any of them, as before they existed). They are decoded as
strictly as every other message (:mod:`matchlock.core.protocol`); nothing here does IO, and none
of these messages is ever recorded in a room's log.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from matchlock.core import events as ev
from matchlock.core.config import SafeName

__all__ = [
    "MAX_AVOIDED",
    "MAX_CHUNK_BYTES",
    "MAX_TRANSFER_ID",
    "MAX_UPLOADS_PER_MEMBER",
    "TRANSFER_WINDOW_BYTES",
    "Ack",
    "Cancel",
    "Cut",
    "End",
    "Form",
    "HostTransferMessage",
    "MemberTransferMessage",
    "Peer",
    "Sending",
    "Serve",
    "TransferId",
    "Unavailable",
    "Unheld",
    "Want",
]

MAX_CHUNK_BYTES = 512 << 10
"""Most payload bytes in one data frame."""

TRANSFER_WINDOW_BYTES = 4 << 20
"""Most bytes of one transfer sent by its holder and not yet acknowledged by its requester: what
a host buffers per transfer at most, whatever the piece's size."""

MAX_UPLOADS_PER_MEMBER = 2
"""Most transfers one member serves at once; the host chooses another holder beyond it."""

MAX_TRANSFER_ID = 2**32 - 1
"""Transfer ids are 1 .. 2**32 - 1 (a u32 in a data frame's header)."""

MAX_AVOIDED = 64
"""Most users one ``want`` may ask the host to avoid."""

TransferId = Annotated[int, Field(ge=1, le=MAX_TRANSFER_ID)]
"""A host-chosen transfer id, unique per host connection lifetime."""

Form = Literal["archive", "folder"]
"""What is sent: ``archive``, the bytes pinned by ``sha256`` and ``size``; ``folder``, the folder
stream (:mod:`matchlock.core.folderstream`) pinned by ``folder_sha256`` and ``folder_size``."""


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Want(_Message):
    """Send me ``piece`` in ``form`` from byte ``offset``, from anyone but the users in
    ``avoid``. A new ``want`` for a piece cuts this member's running transfer of it."""

    type: Literal["want"] = "want"
    piece: ev.PieceAddress
    form: Form
    offset: ev.Count = 0
    avoid: Annotated[tuple[SafeName, ...], Field(max_length=MAX_AVOIDED)] = ()


class Ack(_Message):
    """The requester holds every byte of ``transfer`` before ``offset`` (forwarded by the host
    to the holder, which may then send up to :data:`TRANSFER_WINDOW_BYTES` beyond it)."""

    type: Literal["ack"] = "ack"
    transfer: TransferId
    offset: ev.Count


class End(_Message):
    """The holder sent every byte of ``transfer`` (forwarded by the host to the requester)."""

    type: Literal["end"] = "end"
    transfer: TransferId


class Unheld(_Message):
    """The holder cannot serve ``transfer`` (it no longer holds the piece, a folder was
    edited ...): the host cuts it."""

    type: Literal["unheld"] = "unheld"
    transfer: TransferId
    reason: ev.Reason = ""


class Cancel(_Message):
    """Either side stops ``transfer``: the host cuts it and tells the other side."""

    type: Literal["cancel"] = "cancel"
    transfer: TransferId
    reason: ev.Reason = ""


class Sending(_Message):
    """To the requester: ``holder`` will send ``piece`` in ``form`` from ``offset``, in data
    frames of ``transfer``."""

    type: Literal["sending"] = "sending"
    transfer: TransferId
    piece: ev.PieceAddress
    form: Form
    offset: ev.Count
    holder: SafeName


class Unavailable(_Message):
    """To the requester: no member can serve ``piece`` in ``form`` now (``reason`` says why);
    ask again once the room changes."""

    type: Literal["unavailable"] = "unavailable"
    piece: ev.PieceAddress
    form: Form
    reason: ev.Reason


class Serve(_Message):
    """To the holder: send ``piece`` in ``form`` from ``offset`` to ``requester``, in data
    frames of ``transfer``, at most :data:`TRANSFER_WINDOW_BYTES` beyond its last ``ack``."""

    type: Literal["serve"] = "serve"
    transfer: TransferId
    piece: ev.PieceAddress
    form: Form
    offset: ev.Count
    requester: SafeName


class Cut(_Message):
    """To one side: ``transfer`` ended early (the other side disconnected, cancelled, said
    ``unheld``, or broke the window or the bound); ``reason`` says which."""

    type: Literal["cut"] = "cut"
    transfer: TransferId
    reason: ev.Reason


class Peer(_Message):
    """To every version 2 member when a member joins: whether ``user_id`` serves pieces (the
    welcome's ``serving`` lists the members already connected that do)."""

    type: Literal["peer"] = "peer"
    user_id: SafeName
    serve: bool


MemberTransferMessage = Want | Ack | End | Unheld | Cancel
"""A transfer message a member sends."""

HostTransferMessage = Sending | Unavailable | Serve | Ack | End | Cut | Peer
"""A transfer message a host sends."""
