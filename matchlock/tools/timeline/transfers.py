"""Pieces given by one room member to another, as arrows across the timeline's lanes.

A piece obtained from a peer is told in a room's log as a ``piece_finished`` whose ``source`` is
``room:<holder>``, and a transfer that failed as a ``resolvable_failed`` whose ``failure.url`` is
``room:<holder>`` (its reason says what arrived). A member's own log adds what only that member
saw: ``transfer_received`` (the requester's side: which holder, how many bytes, and the outcome,
``verified`` or why not) and ``transfer_served`` (the holder's side: ``sent`` or why not).
:class:`Transfers` gathers every one of them into :class:`Transfer` records, one per transfer:
what two records tell of the same transfer (the room's ``piece_finished`` and the receiver's
``transfer_received``, the holder's ``transfer_served``) merge into one arrow whose tooltip
holds them all. :func:`draw_transfers` draws each as a line from the holder's lane, where the
transfer began, to the receiver's, where it ended: solid with an arrowhead when the piece
arrived verified, dashed red when it failed, grey when only the holder's log tells of it (it
sent every byte; whether they arrived, no log given says), its tooltip saying who, which piece
and why.

An arrow names the lanes it joins (``data-from``, ``data-to``: the piece lanes, with the users'
lanes as fallbacks): the page's script moves its ends when the filter box restacks the lanes.

What it must never do: put a string from the log on the page without
:func:`~matchlock.tools.timeline.page.text`, or draw more than :data:`ARROW_LIMIT` arrows (the
page says how many it left out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from matchlock.core import events as ev
from matchlock.tools.render import describe
from matchlock.tools.timeline.page import text
from matchlock.tools.timeline.scale import Scale

__all__ = [
    "ARROW_LIMIT",
    "MERGE_S",
    "ROOM_SOURCE",
    "Transfer",
    "Transfers",
    "draw_transfers",
    "holder_of",
]

ROOM_SOURCE = "room:"
"""How a piece event names a room member as the source of a piece (``room:<holder>``)."""

ARROW_LIMIT = 500
"""At most this many transfers are drawn as arrows (the first ones)."""

MERGE_S = 10.0
"""Two records of one transfer (from two logs, by two members' clocks) are at most this many
seconds apart."""

RECEIVED_OK = "verified"
SERVED_OK = "sent"

# The symbols an arrow ends on (in the picture's <defs>), and the tooltips' first words.
MARKERS = (
    '<marker id="a-ok" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7"'
    ' orient="auto-start-reverse"><path d="M0 0L10 5 0 10Z" fill="#1f6fd1"/></marker>'
    '<marker id="a-failed" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="8"'
    ' markerHeight="8"><path d="M1 1L9 9M9 1L1 9" stroke="#b3261e" stroke-width="2.5"/></marker>'
    '<marker id="a-sent" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7"'
    ' orient="auto-start-reverse"><path d="M0 0L10 5 0 10Z" fill="#8a93a3"/></marker>'
)

OUTCOMES = {
    "ok": "from a room member",
    "failed": "transfer failed",
    "sent": "sent, not known to have arrived",
}
"""How an arrow is drawn (its class, ``xfer <outcome>``), and what the legend says of it."""


def holder_of(url: str) -> str | None:
    """The holder a source or resolvable URL names (``room:bob`` -> ``bob``), else None."""
    return url[len(ROOM_SOURCE) :] or None if url.startswith(ROOM_SOURCE) else None


@dataclass(slots=True)
class Transfer:
    """One transfer of ``piece`` from ``holder`` to ``receiver``: when it began (``start``: the
    receiver's previous event about the piece) and ended, how (``outcome``: ``ok``, the piece
    arrived verified; ``failed``; ``sent``, the holder sent it all but no record says it
    arrived), what each record said (``lines``, the tooltip) and which records told of it
    (``told``: ``room``, ``received``, ``served``)."""

    holder: str
    receiver: str
    piece: str
    start: float
    end: float
    outcome: str
    lines: list[str] = field(default_factory=list)
    told: set[str] = field(default_factory=set)


class Transfers:
    """Every transfer a log tells of, in the order it ended."""

    def __init__(self) -> None:
        self.found: list[Transfer] = []

    def add(self, label: str, event: ev.Event, at: float, began: float) -> None:
        """Take ``event`` (``label``: where it is in which log, drawn at ``at``) if it tells of
        a transfer; ``began`` is when the receiver's previous event about the piece was.

        Records of one transfer merge, the nearest in time within :data:`MERGE_S`: the room's
        and the receiver's when they agree on the outcome, the holder's (``transfer_served``)
        with either, whatever the receiver made of what it sent."""
        told = _told(event)
        if told is None:
            return
        record, holder, receiver, outcome = told
        piece: str = getattr(event, "piece", "")
        line = f"{label} {describe(event)}"
        same = [
            t
            for t in self.found
            if (t.holder, t.receiver, t.piece) == (holder, receiver, piece)
            and record not in t.told
            and abs(t.end - at) <= MERGE_S
            and (record == "served" or t.told == {"served"} or t.outcome == outcome)
        ]
        if not same:
            found = Transfer(holder, receiver, piece, min(began, at), at, outcome, [line], {record})
            self.found.append(found)
            return
        transfer = min(same, key=lambda t: abs(t.end - at))
        if record != "served":  # the receiver's side says how it ended
            transfer.outcome = outcome
        transfer.told.add(record)
        transfer.lines.append(line)
        transfer.start = min(transfer.start, began)
        transfer.end = max(transfer.end, at)


def _told(event: ev.Event) -> tuple[str, str, str, str] | None:
    """``(record, holder, receiver, outcome)`` when ``event`` tells of a transfer."""
    if isinstance(event, ev.PieceFinished):
        holder = holder_of(event.source)
        return None if holder is None else ("room", holder, event.user_id, "ok")
    if isinstance(event, ev.ResolvableFailed):
        holder = holder_of(event.failure.url)
        return None if holder is None else ("room", holder, event.user_id, "failed")
    if isinstance(event, ev.TransferReceived):  # no holder: nobody could serve it
        outcome = "ok" if event.outcome == RECEIVED_OK else "failed"
        return ("received", event.holder, event.user_id, outcome) if event.holder else None
    if isinstance(event, ev.TransferServed):
        outcome = "sent" if event.outcome == SERVED_OK else "failed"
        return ("served", event.user_id, event.requester, outcome)
    return None


def draw_transfers(
    found: list[Transfer], scale: Scale, lanes: Mapping[str, tuple[float, float]]
) -> list[str]:
    """Each transfer (at most :data:`ARROW_LIMIT`) as an arrow between the lanes it joins;
    ``lanes`` gives each drawn lane's top and height by name. A transfer whose users have no
    lane is not drawn."""
    drawn = []
    for transfer in found[:ARROW_LIMIT]:
        ends = [_lane(lanes, user, transfer.piece) for user in (transfer.holder, transfer.receiver)]
        if ends[0] is None or ends[1] is None:
            continue
        (source, y0), (target, y1) = ends[0], ends[1]
        x0, x1 = scale.x(transfer.start), scale.x(transfer.end)
        outcome = transfer.outcome
        what = {"ok": "gave", "sent": "sent", "failed": "failed to give"}[outcome]
        head = f"{transfer.holder} {what} {transfer.receiver} {transfer.piece}"
        tip = "\n".join(text(line) for line in [head, *transfer.lines[:4]])
        coords = f'x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}"'
        drawn.append(
            f'<g class="xfer {outcome}" data-from="{text(source)}" data-from-user='
            f'"{text(transfer.holder)}" data-to="{text(target)}" data-to-user='
            f'"{text(transfer.receiver)}"><line class="hit" {coords}/><line class="arrow"'
            f' {coords} marker-end="url(#a-{outcome})"/><title>{tip}</title></g>'
        )
    return drawn


def _lane(
    lanes: Mapping[str, tuple[float, float]], user: str, piece: str
) -> tuple[str, float] | None:
    """The lane an arrow ends on for ``user``'s ``piece`` and the y of its middle: the piece's
    lane, else the user's summary lane (a collapsed picture), else the user's lane."""
    for name in (f"{user} {piece}", f"{user} summary", user):
        if name in lanes:
            top, height = lanes[name]
            return name, top + height / 2
    return None
