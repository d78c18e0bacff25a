"""The timeline picture of a room or download log, as one self-contained HTML page.

``matchlock replay LOG --html OUT.html`` writes it (:func:`replay_timeline`); a game or launcher
can also feed a :class:`Timeline` the events it folds and render the page itself.

The page holds a time axis (seconds after the first event, whose UTC time the header gives), a top
lane for the room's own events (opened, all done, closed, aborted, and refusals of ids that are
not expected users), then for each user a lane of their joins, refusals, disconnects, done and
goodbye, followed by one lane per piece: a bar from its start to its finish (green) or error (red);
a piece still in progress is amber and ends at the last event. Each resolvable that failed is a
cross on its piece's bar. Every mark and bar has a tooltip (the event's number and what it means,
URLs and reasons included). A filter box (or the page's ``#fragment``: ``OUT.html#chars/kfm``)
narrows the piece lanes to a user or a piece. Below the picture: the final users x pieces table
and the refusals.

What it must never do:

- load anything: no network, CDN, font or image. A Content-Security-Policy forbids every fetch
  and lets only this page's own stylesheet and script (by their hashes) apply;
- let a string from the log become markup. The log is untrusted input (a refused peer chooses
  the id and reason recorded about it), so every string is escaped, and clipped (in the middle)
  to about :data:`TEXT_LIMIT` characters;
- grow without bound. Above :data:`DETAIL_LIMIT` piece lanes each user's pieces collapse into
  one summary lane (the share of their pieces finished, in error and in progress over time), and
  only pieces that did not finish keep a lane of their own (at most :data:`UNFINISHED_LIMIT`);
  marks of a kind closer than a few pixels merge into one that counts them; the table and the
  refusals list are capped too. The page says so whenever it leaves something out.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from matchlock import events as ev
from matchlock.eventlog import Replayed, replay_file
from matchlock.render import describe
from matchlock.room import PieceState, RoomState

__all__ = [
    "DETAIL_LIMIT",
    "GAP_SHARE",
    "MAX_TIME",
    "REFUSAL_LIMIT",
    "TABLE_LIMIT",
    "TEXT_LIMIT",
    "UNFINISHED_LIMIT",
    "Timeline",
    "replay_timeline",
    "timeline_html",
]

DETAIL_LIMIT = 400
"""Above this many piece lanes (users x pieces), each user's pieces collapse into a summary lane."""

UNFINISHED_LIMIT = 100
"""In a collapsed picture, at most this many unfinished pieces keep a lane of their own."""

TABLE_LIMIT = 200
"""Above this many pieces, the table shows counts per user and only unfinished pieces."""

REFUSAL_LIMIT = 500
"""The refusals list shows at most this many (and says how many more there were)."""

MAX_TIME = 1e11
"""Times beyond this (the year 5138, in seconds since the epoch) are a damaged clock: an event
with one is drawn where the one before it was."""

TEXT_LIMIT = 400
"""Strings from the log are clipped to about this many characters (a hostile log may be huge)."""


_LABEL_W, _PLOT_W, _RIGHT_W, _AXIS_H, _GAP_PX, _TICK_PX = 250, 1000, 40, 30, 36, 90
GAP_SHARE = 0.2
"""An idle stretch (no event, no piece in progress) longer than this share of the log may be
drawn narrow, :data:`_GAP_PX` wide."""
_LANE_H = {"room": 28, "user": 26, "piece": 18, "summary": 44}
_MERGE_PX = {"piece": 4, "user": 4, "room": 4, "summary": 8}
_SUMMARY_BUCKETS = 200
_TITLE_LINES = 3

_MARK_KIND = {
    "room_opened": "open",
    "download_opened": "open",
    "room_all_done": "alldone",
    "room_closed": "closed",
    "download_closed": "closed",
    "room_aborted": "aborted",
    "member_joined": "join",
    "member_refused": "refused",
    "member_disconnected": "disconnect",
    "member_done": "done",
    "member_goodbye": "goodbye",
    "resolvable_failed": "failed",
    "piece_retried": "retried",
}
_KIND_LABEL = {
    "open": "opened",
    "alldone": "everyone has everything",
    "closed": "closed",
    "aborted": "aborted",
    "join": "joined",
    "refused": "refused",
    "disconnect": "disconnected",
    "done": "has every piece",
    "goodbye": "said goodbye",
    "failed": "resolvable failed",
    "retried": "piece retried",
}
_PIECE_MOVE = {
    "piece_started": "in_progress",
    "piece_finished": "finished",
    "piece_failed": "error",
    "piece_retried": "not_started",
}
_SYMBOLS = {
    "open": '<path d="M-4-5L5 0-4 5Z" fill="#2b3a55"/>',
    "alldone": '<path d="M0-6L6 0 0 6-6 0Z" fill="#2e9d4f"/>',
    "closed": '<rect x="-4" y="-4" width="8" height="8" fill="#5b6270"/>',
    "aborted": '<path d="M-5-5L5 5M5-5L-5 5" stroke="#b3261e" stroke-width="3"/>',
    "join": '<circle r="4.5" fill="#1f6fd1"/>',
    "refused": '<circle r="5.5" fill="#b3261e"/><path d="M-3 0H3" stroke="#fff" stroke-width="2"/>',
    "disconnect": '<circle r="4" fill="#fff" stroke="#a0309a" stroke-width="2.5"/>',
    "done": '<path d="M-5 0L-1.5 4 5-5" fill="none" stroke="#1d7a3a" stroke-width="2.5"/>',
    "goodbye": '<rect x="-4" y="-4" width="8" height="8" fill="#2747a8"/>',
    "failed": '<path d="M-4-4L4 4M4-4L-4 4" stroke="#fff" stroke-width="5"/>'
    '<path d="M-4-4L4 4M4-4L-4 4" stroke="#6d0c0c" stroke-width="2.4"/>',
    "retried": '<circle r="6" fill="#fff"/><path d="M-4 0A4 4 0 1 0 0-4" fill="none"'
    ' stroke="#c66a00" stroke-width="2"/><path d="M0-7L3-4 0-1Z" fill="#c66a00"/>',
}
_ROOM_KINDS = frozenset({"open", "alldone", "closed", "aborted"})


@dataclass(slots=True)
class _Mark:
    at: float
    kind: str
    text: str


@dataclass(slots=True)
class _Track:
    """One user's piece: its status moves ``(at, new status)`` and its marks."""

    moves: list[tuple[float, str]] = field(default_factory=list)
    marks: list[_Mark] = field(default_factory=list)


class Timeline:
    """What the picture needs from a log, gathered one event at a time.

    Pass :meth:`add` as ``on_event`` to :func:`~matchlock.eventlog.replay_file` (or call it with
    each event a live room folds: it expects events the fold accepted), then call :meth:`html`
    with the state they led to.
    """

    def __init__(self) -> None:
        self.first: float | None = None
        self.times: list[float] = []  # when something happened, thinned to one per millisecond
        self.lo = math.inf
        self.hi = -math.inf
        self.room_marks: list[_Mark] = []
        self.user_marks: dict[str, list[_Mark]] = {}
        self.tracks: dict[str, dict[str, _Track]] = {}

    def add(self, seq: int, event: ev.Event) -> None:
        """Take one event (``seq`` is its sequence number in the log)."""
        at = self._clock(event.at)
        if isinstance(event, ev.RoomOpened):
            self._expect(event.config.users, event.config.piece_keys())
        elif isinstance(event, ev.DownloadOpened):
            self._expect([event.user_id], event.sizes)
            self.user_marks[event.user_id].append(_Mark(at, "join", f"#{seq} {describe(event)}"))
        user: str | None = getattr(event, "user_id", None)
        piece: str | None = getattr(event, "piece", None)
        track = self._track(user, piece) if user is not None and piece is not None else None
        if track is not None and event.type in _PIECE_MOVE:
            track.moves.append((at, _PIECE_MOVE[event.type]))
        kind = _MARK_KIND.get(event.type)
        if kind is None:
            return
        mark = _Mark(at, kind, f"#{seq} {describe(event)}")
        if kind in _ROOM_KINDS:
            self.room_marks.append(mark)
        elif track is not None:
            track.marks.append(mark)
        elif user is not None and user in self.user_marks:
            self.user_marks[user].append(mark)
        else:
            self.room_marks.append(mark)

    def _clock(self, at: float) -> float:
        if not abs(at) < MAX_TIME:  # a damaged clock: draw the event where the last one was
            return self.hi if math.isfinite(self.hi) else 0.0
        if self.first is None:
            self.first = at
        self.lo, self.hi = min(self.lo, at), max(self.hi, at)
        if not self.times or abs(at - self.times[-1]) > 1e-3:
            self.times.append(at)
        return at

    def _expect(self, users: Iterable[str], pieces: Iterable[str]) -> None:
        keys = list(pieces)
        for user in users:
            self.user_marks.setdefault(user, [])
            self.tracks[user] = {key: _Track() for key in keys}

    def _track(self, user: str, piece: str) -> _Track:
        self.user_marks.setdefault(user, [])
        return self.tracks.setdefault(user, {}).setdefault(piece, _Track())

    def html(self, state: RoomState, source: str = "", notes: Sequence[str] = ()) -> str:
        """The whole page for ``state`` (what the events added led to). ``source`` names the log
        in the header; ``notes`` are shown under it (plain text, escaped here)."""
        notes = list(notes)
        body = [_header(state, self, source)]
        if self.first is None:
            body.append('<p class="empty">This log holds no events: there is nothing to draw.</p>')
        else:
            busy = [
                (start, stop)
                for tracks in self.tracks.values()
                for track in tracks.values()
                for start, stop, _ in _spans(track.moves, self.hi)
            ]
            scale = _Scale.fit(self.first, [self.lo, *self.times, self.hi], busy)
            lanes, collapsed = self._lanes(state, scale)
            notes.extend(collapsed)
            body += [_legend(), _svg(lanes, scale)]
            body += [_table(state), _refusals(state, self.first)]
        body.insert(1, "".join(f'<p class="note">{_text(note)}</p>' for note in notes))
        return _page(f"matchlock {state.kind} {state.room_id}", "".join(body))

    def _lanes(self, state: RoomState, scale: _Scale) -> tuple[list[_Lane], list[str]]:
        count = sum(len(tracks) for tracks in self.tracks.values())
        collapse = count > DETAIL_LIMIT
        label = f"room {state.room_id}" if state.kind == "room" else state.kind
        tip = f"{label}: {state.status}"
        lanes = [_Lane("", label, "room", tip, _marks(self.room_marks, scale, "room"))]
        budget, left_out = (UNFINISHED_LIMIT if collapse else count), 0
        for user, tracks in self.tracks.items():
            member = state.members.get(user)
            lanes.append(_user_lane(user, member.status if member else "unknown", self, scale))
            if collapse:
                lanes.append(_summary_lane(user, tracks, scale))
            for key, track in tracks.items():
                piece = member.pieces.get(key) if member else None
                if collapse and piece is not None and piece.status == "finished":
                    continue
                if budget == 0:
                    left_out += 1
                    continue
                budget -= 1
                lanes.append(_piece_lane(user, key, track, scale))
        notes = []
        if collapse:
            notes.append(
                f"{count:,} piece lanes are more than {DETAIL_LIMIT}: each user's pieces are drawn "
                "as one summary lane (the share finished, in error and in progress over time), and "
                "only pieces that did not finish keep a lane of their own."
            )
        if left_out:
            notes.append(
                f"{left_out:,} unfinished piece lanes beyond the first {UNFINISHED_LIMIT} "
                "are left out of the picture (the table below lists them)."
            )
        return lanes, notes


@dataclass(frozen=True, slots=True)
class _Scale:
    """Maps event times to x, piecewise linearly over ``segments`` ``(t0, t1, x0, x1)``: every
    stretch without events longer than :data:`GAP_SHARE` of the log (the segments numbered in
    ``gaps``) is drawn :data:`_GAP_PX` wide, the rest at ``per_s`` pixels a second."""

    first: float  # time 0 on the axis
    segments: tuple[tuple[float, float, float, float], ...]
    gaps: frozenset[int]
    per_s: float

    @classmethod
    def fit(
        cls, first: float, times: Iterable[float], busy: Iterable[tuple[float, float]]
    ) -> _Scale:
        """The scale for events at ``times`` while pieces were in progress over the ``busy``
        stretches. Idle gaps are shortened only when together they take more than half of the
        log's length (else a linear axis reads well) and leave more than 1% of it (else what
        is left would be squeezed to nothing)."""
        ordered = sorted(times)
        lo, hi = ordered[0], ordered[-1]
        span = max(hi - lo, 1e-3)
        gaps = _idle_gaps(ordered, busy, GAP_SHARE * span)
        active = span - sum(b - a for a, b in gaps)
        if not span / 100 < active < span / 2:
            gaps, active = [], span
        per_s = (_PLOT_W - _GAP_PX * len(gaps)) / active
        segments, t, x = [], lo, float(_LABEL_W)
        for a, b in gaps:
            end = x + (a - t) * per_s
            segments += [(t, a, x, end), (a, b, end, end + _GAP_PX)]
            t, x = b, end + _GAP_PX
        segments.append((t, hi, x, x + (hi - t) * per_s))
        return cls(first, tuple(segments), frozenset(range(1, 2 * len(gaps), 2)), per_s)

    @property
    def hi(self) -> float:
        return self.segments[-1][1]

    def x(self, at: float) -> float:
        at = max(at, self.segments[0][0])
        for t0, t1, x0, x1 in self.segments:
            if at <= t1:
                return x0 + (at - t0) / (t1 - t0) * (x1 - x0) if t1 > t0 else x0
        return self.segments[-1][3]

    def at(self, x: float) -> float:
        """The time drawn at ``x`` (the inverse of :meth:`x`)."""
        for t0, t1, x0, x1 in self.segments:
            if x <= x1:
                return t0 + (x - x0) / (x1 - x0) * (t1 - t0) if x1 > x0 else t1
        return self.hi

    def rel(self, at: float) -> str:
        return f"+{at - self.first:.3f} s"


def _idle_gaps(
    ordered: list[float], busy: Iterable[tuple[float, float]], longer_than: float
) -> list[tuple[float, float]]:
    """The stretches between consecutive event times longer than ``longer_than`` during which
    no piece was in progress (so shortening them distorts no bar)."""
    merged: list[list[float]] = []
    for start, stop in sorted(busy):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    stops = [stop for _, stop in merged]
    gaps = []
    for a, b in itertools.pairwise(ordered):
        first_after = bisect.bisect_right(stops, a)  # the first busy stretch ending after a
        if b - a > longer_than and (first_after == len(merged) or merged[first_after][0] >= b):
            gaps.append((a, b))
    return gaps


@dataclass(slots=True)
class _Lane:
    name: str  # what the filter box matches
    label: str
    kind: str  # room, user, piece, summary
    tip: str  # the label's tooltip
    body: list[str]  # SVG drawn relative to the lane's top


def _text(value: str) -> str:
    """A string from the log, clipped and escaped: safe as element text and attribute value.
    Clipped in the middle, so that both what it is about and (last) why are kept."""
    if len(value) > TEXT_LIMIT:
        value = value[: TEXT_LIMIT // 2] + " … " + value[-TEXT_LIMIT // 2 :]
    return escape(value, quote=True)


def _user_lane(user: str, status: str, timeline: Timeline, scale: _Scale) -> _Lane:
    body = _marks(timeline.user_marks[user], scale, "user")
    return _Lane(user, f"{user} · {status}", "user", f"{user}: {status}", body)


def _piece_lane(user: str, key: str, track: _Track, scale: _Scale) -> _Lane:
    mid = _LANE_H["piece"] / 2
    body = []
    for start, stop, outcome in _spans(track.moves, scale.hi):
        x0, x1 = scale.x(start), scale.x(stop)
        tip = (
            f"{user} {key}: {outcome.replace('_', ' ')} {scale.rel(start)} to {scale.rel(stop)}"
            f" ({stop - start:.3f} s)"
        )
        body.append(
            f'<rect class="s {outcome}" x="{x0:.1f}" y="{mid - 5}" width="{max(x1 - x0, 2):.1f}"'
            f' height="10"><title>{_text(tip)}</title></rect>'
        )
    body += _marks(track.marks, scale, "piece")
    return _Lane(f"{user} {key}", key, "piece", f"{user} {key}", body)


def _spans(moves: list[tuple[float, str]], end: float) -> list[tuple[float, float, str]]:
    """Bars ``(start, stop, outcome)`` from a piece's moves; one still in progress ends at
    ``end``. A piece finished or failed without a start (a cache hit) is a bar of no length."""
    spans, start = [], None
    for at, status in moves:
        if status == "in_progress":
            start = at
        elif status in ("finished", "error"):
            spans.append((at if start is None else start, at, status))
            start = None
    if start is not None:
        spans.append((start, end, "in_progress"))
    return spans


def _summary_lane(user: str, tracks: dict[str, _Track], scale: _Scale) -> _Lane:
    """One lane for all of ``user``'s pieces: stacked bands of the share finished, in error and
    in progress at each of :data:`_SUMMARY_BUCKETS` moments, and their failure marks merged."""
    height, total = _LANE_H["summary"] - 6, max(len(tracks), 1)
    rows = _shares(tracks, scale)
    body, below = [], [0.0] * len(rows)
    for outcome in ("finished", "error", "in_progress"):
        runs = []
        for i, (x0, x1, counts) in enumerate(rows):
            share = counts[outcome] / total * height
            runs.append((x0, x1, 3 + height - below[i], 3 + height - below[i] - share))
            below[i] += share
        body.append(f'<path class="band {outcome}" d="{_band(runs)}"/>')
    final = rows[-1][2]
    outcomes = ("finished", "error", "in_progress", "not_started")
    tip = f"{user}: {len(tracks):,} pieces; at the last event " + ", ".join(
        f"{final[s]:,} {s.replace('_', ' ')}" for s in outcomes
    )
    body += _marks([m for t in tracks.values() for m in t.marks], scale, "summary")
    label = f"{user}: {final['finished']:,}/{len(tracks):,} finished"
    label += f", {final['error']:,} error" if final["error"] else ""
    return _Lane(f"{user} summary", label, "summary", tip, body)


def _shares(tracks: dict[str, _Track], scale: _Scale) -> list[tuple[float, float, Counter[str]]]:
    """How many pieces are in each status at the end of each of :data:`_SUMMARY_BUCKETS` equal
    slices of the picture's width, as ``(x0, x1, counts)``."""
    moves = sorted(
        (at, index, status) for index, t in enumerate(tracks.values()) for at, status in t.moves
    )
    status = ["not_started"] * len(tracks)
    counts: Counter[str] = Counter(status)
    rows = []
    step, cursor = _PLOT_W / _SUMMARY_BUCKETS, 0
    for bucket in range(1, _SUMMARY_BUCKETS + 1):
        x = _LABEL_W + step * bucket
        until = scale.hi if bucket == _SUMMARY_BUCKETS else scale.at(x)
        while cursor < len(moves) and moves[cursor][0] <= until:
            _, index, new = moves[cursor]
            counts[status[index]] -= 1
            counts[new] += 1
            status[index], cursor = new, cursor + 1
        rows.append((x - step, x, Counter(counts)))
    return rows


def _band(runs: list[tuple[float, float, float, float]]) -> str:
    """A step-shaped area between ``low`` and ``high`` over consecutive ``(x0, x1, low, high)``."""
    merged: list[list[float]] = []
    for x0, x1, low, high in runs:
        if merged and merged[-1][2:] == [low, high]:
            merged[-1][1] = x1
        else:
            merged.append([x0, x1, low, high])
    top = "".join(f"L{x0:.1f} {high:.1f}H{x1:.1f}" for x0, x1, _, high in merged)
    bottom = "".join(f"L{x1:.1f} {low:.1f}H{x0:.1f}" for x0, x1, low, _ in reversed(merged))
    return "M" + (top + bottom)[1:] + "Z"


def _marks(marks: list[_Mark], scale: _Scale, lane: str) -> list[str]:
    """Each mark as its symbol with a tooltip; marks of one kind within a few pixels merge into
    one whose tooltip counts them and shows the first few."""
    px, y = _MERGE_PX[lane], _LANE_H[lane] / 2
    groups: dict[tuple[str, int], list[_Mark]] = {}
    for mark in marks:
        groups.setdefault((mark.kind, int(scale.x(mark.at) // px)), []).append(mark)
    drawn = []
    for (kind, _), group in groups.items():
        lines = [f"{scale.rel(mark.at)}  {mark.text}" for mark in group[:_TITLE_LINES]]
        if len(group) > 1:
            lines.insert(0, f"{len(group):,} marks: {_KIND_LABEL[kind]}")
        if len(group) > _TITLE_LINES:
            lines.append(f"… and {len(group) - _TITLE_LINES:,} more")
        tip = "\n".join(_text(line) for line in lines)
        x = scale.x(group[0].at)
        drawn.append(f'<use href="#k-{kind}" x="{x:.1f}" y="{y}"><title>{tip}</title></use>')
    return drawn


def _svg(lanes: list[_Lane], scale: _Scale) -> str:
    """The picture: the axis on top and at the bottom, grid lines, then the lanes stacked."""
    rows, y = [], _AXIS_H
    for lane in lanes:
        height = _LANE_H[lane.kind]
        indent = 22 if lane.kind == "piece" else 6
        label = lane.label if len(lane.label) <= 36 else lane.label[:35] + "…"
        rows.append(
            f'<g class="lane {lane.kind}" data-name="{_text(lane.name)}" data-h="{height}"'
            f' data-always="{int(lane.kind != "piece")}" transform="translate(0,{y})">'
            f'<rect class="row" width="{_LABEL_W + _PLOT_W}" height="{height}"/>'
            f'<text x="{indent}" y="{height / 2 + 4}">{_text(label)}'
            f"<title>{_text(lane.tip)}</title></text>{''.join(lane.body)}</g>"
        )
        y += height
    symbols = "".join(f'<g id="k-{kind}">{shape}</g>' for kind, shape in _SYMBOLS.items())
    grid, ticks = _axis(scale, y)
    top, bottom = (
        "".join(f'<text x="{x:.1f}" y="{at}">{label}</text>' for x, label in ticks)
        for at in (_AXIS_H - 10, 18)
    )
    return (
        f'<div class="picture"><svg id="timeline" xmlns="http://www.w3.org/2000/svg"'
        f' width="{_LABEL_W + _PLOT_W + _RIGHT_W}" height="{y + _AXIS_H}" data-top="{_AXIS_H}"'
        f' data-bottom="{_AXIS_H}" role="img" aria-label="timeline of the log">'
        f'<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse"'
        f' patternTransform="rotate(45)"><rect width="2" height="6" fill="#cfd4dc"/></pattern>'
        f"{symbols}</defs>{grid}"
        f'<text class="unit" x="6" y="{_AXIS_H - 10}">seconds after the first event</text>'
        f'<g class="axis">{top}</g>{"".join(rows)}'
        f'<g id="axis-bottom" class="axis" transform="translate(0,{y})">{bottom}</g>'
        "</svg></div>"
    )


def _axis(scale: _Scale, bottom: float) -> tuple[str, list[tuple[float, str]]]:
    """Grid lines and shortened gaps, and the ticks ``(x, label)``: round numbers of seconds,
    and the exact time where the picture resumes after a gap."""
    rough = _TICK_PX / scale.per_s
    magnitude = 10 ** math.floor(math.log10(rough))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= rough)
    decimals = max(0, -math.floor(math.log10(step)))
    ticks: list[tuple[int, float, str]] = []  # (priority, x, label)
    grid = []
    for index, (t0, t1, x0, x1) in enumerate(scale.segments):
        if index in scale.gaps:
            tip = f"{t1 - t0:.3f} s without events, drawn shortened"
            grid.append(
                f'<rect class="gap" x="{x0:.1f}" y="{_AXIS_H}" width="{x1 - x0:.1f}"'
                f' height="{bottom - _AXIS_H}"><title>{tip}</title></rect>'
            )
            continue
        if index > 0:
            ticks.append((0, x0, f"{t0 - scale.first:.3f} s"))
        lo, hi = (t0 - scale.first) / step, (t1 - scale.first) / step
        for n in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1):
            seconds = round(n * step, 9) + 0.0
            ticks.append((1, scale.x(scale.first + seconds), f"{seconds:.{decimals}f} s"))
    kept: list[tuple[float, str]] = []
    for _, x, label in sorted(ticks, key=lambda tick: tick[0]):
        if all(abs(x - other) >= _TICK_PX * 0.7 for other, _ in kept):
            kept.append((x, label))
    for x, _ in kept:
        grid.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{_AXIS_H}" y2="{bottom}"/>')
    return "".join(grid), kept


def _legend() -> str:
    bars = "".join(
        f'<span class="key"><i class="{outcome}"></i>{outcome.replace("_", " ")}</span>'
        for outcome in ("finished", "error", "in_progress")
    )
    bars += (
        '<span class="key"><svg width="20" height="10"><rect class="gap" width="20" height="10"/>'
        "</svg>idle, drawn shortened</span>"
    )
    keys = "".join(
        f'<span class="key"><svg width="14" height="14" viewBox="-7 -7 14 14">'
        f'<use href="#k-{kind}"/></svg>{label}</span>'
        for kind, label in _KIND_LABEL.items()
    )
    return (
        f'<div class="legend">{bars}{keys}</div><p class="filter"><label>filter piece lanes'
        ' <input id="filter" type="search" placeholder="user or piece"></label>'
        ' <output id="shown"></output></p>'
    )


def _utc(at: float) -> str:
    try:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    except (OverflowError, OSError, ValueError):
        return f"{at} (not a date)"


def _header(state: RoomState, timeline: Timeline, source: str) -> str:
    what = f"room {state.room_id}" if state.kind == "room" else state.kind
    facts = [f"{state.events:,} events"]
    if timeline.first is not None:
        facts.append(f"first event at {_utc(timeline.first)}")
        facts.append(f"last event at +{timeline.hi - timeline.first:.3f} s")
    if source:
        facts.append(f"log {source}")
    status = state.status or "no events"
    return (
        f'<header><h1>{_text(what)}: <span class="st">{_text(status)}</span></h1>'
        f'<p class="meta">{" · ".join(_text(fact) for fact in facts)}</p></header>'
    )


def _table(state: RoomState) -> str:
    """The final users x pieces table; above :data:`TABLE_LIMIT` pieces, counts per user and
    only the pieces someone has not finished."""
    users = list(state.members)
    keys = list(dict.fromkeys(key for m in state.members.values() for key in m.pieces))
    head = "".join(
        f'<th>{_text(user)}<br><span class="st">{_text(state.members[user].status)}</span></th>'
        for user in users
    )
    rows, note = [], ""
    if len(keys) > TABLE_LIMIT:
        for status in ("finished", "error", "in_progress", "not_started"):
            counts = [
                sum(p.status == status for p in state.members[user].pieces.values())
                for user in users
            ]
            cells = "".join(f'<td class="{status}">{count:,}</td>' for count in counts)
            rows.append(f"<tr><th>({status.replace('_', ' ')})</th>{cells}</tr>")
        keys = [k for k in keys if any(_status(state, u, k) != "finished" for u in users)]
        first = f" (the first {TABLE_LIMIT})" if len(keys) > TABLE_LIMIT else ""
        note = (
            f'<p class="note">{len(state.members[users[0]].pieces):,} pieces are more than '
            f"{TABLE_LIMIT}: the table counts each user's pieces by status, then lists the "
            f"{len(keys):,} pieces someone has not finished{first}.</p>"
        )
        keys = keys[:TABLE_LIMIT]
    for key in keys:
        cells = "".join(_cell(state.members[user].pieces.get(key)) for user in users)
        rows.append(f"<tr><th>{_text(key)}</th>{cells}</tr>")
    return (
        f'<section><h2>Final state</h2>{note}<table class="final"><tr><th>piece</th>{head}</tr>'
        f"{''.join(rows)}</table></section>"
    )


def _status(state: RoomState, user: str, key: str) -> str:
    piece = state.members[user].pieces.get(key)
    return piece.status if piece is not None else "none"


def _cell(piece: PieceState | None) -> str:
    if piece is None:
        return '<td class="none">not expected</td>'
    parts = [f"<b>{_text(piece.status.replace('_', ' '))}</b> {piece.done:,}/{piece.size:,} B"]
    if piece.source:
        parts.append(f'<span class="src">from {_text(piece.source)}</span>')
    if piece.failures:
        items = [f"<li>#{f.index} {_text(f.url)}: {_text(f.reason)}</li>" for f in piece.failures]
        if len(items) > 10:
            items[10:] = [f"<li>… and {len(items) - 10:,} more</li>"]
        parts.append(f'<ol class="fails">{"".join(items)}</ol>')
    return f'<td class="{_text(piece.status)}">{"<br>".join(parts)}</td>'


def _refusals(state: RoomState, first: float) -> str:
    items = [
        f'<li><span class="t">+{r.at - first:.3f} s</span> claimed <code>{_text(r.user_id)}</code>'
        f" [<code>{_text(r.code)}</code>]: {_text(r.reason)}</li>"
        for r in state.refusals[:REFUSAL_LIMIT]
    ]
    if len(state.refusals) > REFUSAL_LIMIT:
        items.append(f"<li>… and {len(state.refusals) - REFUSAL_LIMIT:,} more</li>")
    listed = f'<ol class="refusals">{"".join(items)}</ol>' if items else "<p>None.</p>"
    return f"<section><h2>Refusals</h2>{listed}</section>"


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;color:#1d2330;margin:20px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.meta{color:#555;margin:0 0 8px}
.note{background:#fff6d6;border-left:4px solid #e7a92b;padding:4px 8px;margin:4px 0}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;margin:10px 0 6px;font-size:12px}
.key{display:inline-flex;align-items:center;gap:5px}.key i{width:20px;height:10px}
.filter{font-size:12px;color:#444;margin:0 0 6px}.filter input{font:inherit;width:14em}
.picture{overflow-x:auto;border:1px solid #d8dce3}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}
.lane .row{fill:none;stroke:#eef0f4}.lane.user .row{fill:rgba(31,90,170,.09);stroke:#fff}
.lane.room .row{fill:rgba(31,60,110,.15);stroke:#fff}.lane.summary .row{fill:rgba(0,0,0,.02)}
.gap{fill:url(#hatch)}
.lane.room text,.lane.user text{font-weight:600}.lane.summary text{fill:#555}
.grid{stroke:#b9c0cc;stroke-dasharray:2 4}
.axis text{fill:#555;text-anchor:middle;font-size:11px}.unit{fill:#555;font-size:11px}
.finished{fill:#2e9d4f;background:#2e9d4f}.error{fill:#d0392b;background:#d0392b}
.in_progress{fill:#f0b43c;background:#f0b43c}
.band{fill-opacity:.85}
table.final{border-collapse:collapse;font-size:12px}
.final th,.final td{border:1px solid #d8dce3;padding:3px 6px;vertical-align:top;text-align:left}
.final td{max-width:28em}.final td.finished{background:#eaf6ee}
.final td.error{background:#fdecea}.final td.in_progress{background:#fff3d1}
.final td.not_started,.final td.none{background:#fff;color:#777}
.st{font-weight:400;color:#555}
.src{color:#555;word-break:break-all}
.fails{margin:2px 0 0;padding-left:18px;color:#8a1f17;word-break:break-all}
.refusals code{background:#f1f3f6;padding:0 3px}.t{color:#777}
"""

# Restacks the lanes when the filter box (filled from the URL's #fragment, so a filtered view
# can be linked) changes; needs nothing else, loads nothing.
_SCRIPT = """
"use strict";
(() => {
  const svg = document.getElementById("timeline");
  const box = document.getElementById("filter");
  const shown = document.getElementById("shown");
  if (!svg || !box || !shown) return;
  try {
    box.value = decodeURIComponent(location.hash.slice(1));
  } catch {
    box.value = "";
  }
  const lanes = Array.from(svg.querySelectorAll("g.lane"));
  const bottom = document.getElementById("axis-bottom");
  const restack = () => {
    const query = box.value.trim().toLowerCase();
    let y = Number(svg.dataset.top), pieces = 0, kept = 0;
    for (const lane of lanes) {
      const always = lane.dataset.always === "1";
      const keep = always || lane.dataset.name.toLowerCase().includes(query);
      lane.setAttribute("display", keep ? "inline" : "none");
      if (!always) { pieces += 1; kept += keep ? 1 : 0; }
      if (keep) {
        lane.setAttribute("transform", `translate(0,${y})`);
        y += Number(lane.dataset.h);
      }
    }
    for (const line of svg.querySelectorAll("line.grid")) line.setAttribute("y2", String(y));
    for (const gap of svg.querySelectorAll("rect.gap")) {
      gap.setAttribute("height", String(y - Number(svg.dataset.top)));
    }
    bottom.setAttribute("transform", `translate(0,${y})`);
    svg.setAttribute("height", String(y + Number(svg.dataset.bottom)));
    shown.textContent = `showing ${kept} of ${pieces} piece lanes`;
  };
  box.addEventListener("input", restack);
  restack();
})();
"""


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_POLICY = f"default-src 'none'; style-src {_digest(_STYLE)}; script-src {_digest(_SCRIPT)}"


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
        f"<title>{_text(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}<script>{_SCRIPT}</script></body></html>\n"
    )


def replay_timeline(path: Path | str, until: int | None = None) -> tuple[Replayed, str]:
    """Replay the log at ``path`` once (up to event ``until``, when given) and return the replay
    and the page. Raises what :func:`~matchlock.eventlog.replay_file` raises for a damaged log."""
    timeline = Timeline()
    replayed = replay_file(path, until=until, on_event=timeline.add)
    notes = []
    if until is not None and replayed.state.events == until:
        notes.append(f"Replayed up to event {until} only (--until): later events are not shown.")
    if replayed.torn is not None:
        notes.append(
            f"Line {replayed.torn.line} was torn by a crash ({replayed.torn.size} bytes): "
            "replayed to the last whole event."
        )
    return replayed, timeline.html(replayed.state, str(path), notes)


def timeline_html(path: Path | str, until: int | None = None) -> str:
    """The timeline page of the log at ``path`` (up to event ``until``, when given)."""
    return replay_timeline(path, until)[1]
