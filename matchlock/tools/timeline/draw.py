"""The timeline picture itself: an SVG of lanes stacked under a time axis, and its legend.

A :class:`Lane` is one row of the picture: the room's, a user's, one user's piece, or (in a
collapsed picture) the summary of all of a user's pieces. Lanes are drawn from what
:class:`~matchlock.tools.timeline.Timeline` gathered: marks (:class:`Mark`: an event drawn as a
symbol with a tooltip) and, per user and piece, a :class:`Track` of status moves that :func:`spans`
turns into bars. :func:`svg` stacks the lanes between the axes of
:mod:`matchlock.tools.timeline.scale`; :func:`legend` explains the bars and the symbols.

The symbols are defined once (``#k-<kind>`` in the SVG's ``<defs>``) and used by every mark and
by the legend, so a kind of mark has one look everywhere. What this module must never do: put a
string from the log on the page without :func:`~matchlock.tools.timeline.page.text`, nor draw one
symbol per event when thousands fall on a few pixels (:func:`draw_marks` merges them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from matchlock.tools.timeline.page import text
from matchlock.tools.timeline.scale import AXIS_H, LABEL_W, PLOT_W, Scale, axis
from matchlock.tools.timeline.transfers import MARKERS, OUTCOMES, Transfer, draw_transfers

__all__ = [
    "Lane",
    "Mark",
    "Track",
    "draw_marks",
    "legend",
    "piece_lane",
    "spans",
    "summary_lane",
    "svg",
    "user_lane",
]

_RIGHT_W = 40
_LANE_H = {"room": 28, "user": 26, "piece": 18, "summary": 44}
_MERGE_PX = {"piece": 4, "user": 4, "room": 4, "summary": 8}
_SUMMARY_BUCKETS = 200
_TITLE_LINES = 3

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


@dataclass(slots=True)
class Mark:
    """One event drawn as a symbol: when, which ``kind`` (a key of the symbols), and the
    tooltip's text (from the log: escaped when drawn)."""

    at: float
    kind: str
    text: str


@dataclass(slots=True)
class Track:
    """One user's piece: its status moves ``(at, new status)`` and its marks."""

    moves: list[tuple[float, str]] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)


@dataclass(slots=True)
class Lane:
    """One row of the picture, drawn but not yet placed."""

    name: str  # what the filter box matches
    label: str
    kind: str  # room, user, piece, summary
    tip: str  # the label's tooltip
    body: list[str]  # SVG drawn relative to the lane's top


def user_lane(user: str, status: str, marks: list[Mark], scale: Scale) -> Lane:
    """The lane of ``user`` (now ``status``) with the ``marks`` of their joins, refusals, etc."""
    body = draw_marks(marks, scale, "user")
    return Lane(user, f"{user} · {status}", "user", f"{user}: {status}", body)


def piece_lane(user: str, key: str, track: Track, scale: Scale) -> Lane:
    """The lane of ``user``'s piece ``key``: its bars, then its marks over them."""
    mid = _LANE_H["piece"] / 2
    body = []
    for start, stop, outcome in spans(track.moves, scale.hi):
        x0, x1 = scale.x(start), scale.x(stop)
        tip = (
            f"{user} {key}: {outcome.replace('_', ' ')} {scale.rel(start)} to {scale.rel(stop)}"
            f" ({stop - start:.3f} s)"
        )
        body.append(
            f'<rect class="s {outcome}" x="{x0:.1f}" y="{mid - 5}" width="{max(x1 - x0, 2):.1f}"'
            f' height="10"><title>{text(tip)}</title></rect>'
        )
    body += draw_marks(track.marks, scale, "piece")
    return Lane(f"{user} {key}", key, "piece", f"{user} {key}", body)


def spans(moves: list[tuple[float, str]], end: float) -> list[tuple[float, float, str]]:
    """Bars ``(start, stop, outcome)`` from a piece's moves; one still in progress ends at
    ``end``. A piece finished or failed without a start (a cache hit) is a bar of no length."""
    bars, start = [], None
    for at, status in moves:
        if status == "in_progress":
            start = at
        elif status in ("finished", "error"):
            bars.append((at if start is None else start, at, status))
            start = None
    if start is not None:
        bars.append((start, end, "in_progress"))
    return bars


def summary_lane(user: str, tracks: dict[str, Track], scale: Scale) -> Lane:
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
    body += draw_marks([m for t in tracks.values() for m in t.marks], scale, "summary")
    label = f"{user}: {final['finished']:,}/{len(tracks):,} finished"
    label += f", {final['error']:,} error" if final["error"] else ""
    return Lane(f"{user} summary", label, "summary", tip, body)


def _shares(tracks: dict[str, Track], scale: Scale) -> list[tuple[float, float, Counter[str]]]:
    """How many pieces are in each status at the end of each of :data:`_SUMMARY_BUCKETS` equal
    slices of the picture's width, as ``(x0, x1, counts)``."""
    moves = sorted(
        (at, index, status) for index, t in enumerate(tracks.values()) for at, status in t.moves
    )
    status = ["not_started"] * len(tracks)
    counts: Counter[str] = Counter(status)
    rows = []
    step, cursor = PLOT_W / _SUMMARY_BUCKETS, 0
    for bucket in range(1, _SUMMARY_BUCKETS + 1):
        x = LABEL_W + step * bucket
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


def draw_marks(marks: list[Mark], scale: Scale, lane: str) -> list[str]:
    """Each mark as its symbol with a tooltip; marks of one kind within a few pixels merge into
    one whose tooltip counts them and shows the first few."""
    px, y = _MERGE_PX[lane], _LANE_H[lane] / 2
    groups: dict[tuple[str, int], list[Mark]] = {}
    for mark in marks:
        groups.setdefault((mark.kind, int(scale.x(mark.at) // px)), []).append(mark)
    drawn = []
    for (kind, _), group in groups.items():
        lines = [f"{scale.rel(mark.at)}  {mark.text}" for mark in group[:_TITLE_LINES]]
        if len(group) > 1:
            lines.insert(0, f"{len(group):,} marks: {_KIND_LABEL[kind]}")
        if len(group) > _TITLE_LINES:
            lines.append(f"… and {len(group) - _TITLE_LINES:,} more")
        tip = "\n".join(text(line) for line in lines)
        x = scale.x(group[0].at)
        drawn.append(f'<use href="#k-{kind}" x="{x:.1f}" y="{y}"><title>{tip}</title></use>')
    return drawn


def svg(lanes: list[Lane], scale: Scale, transfers: list[Transfer] | None = None) -> str:
    """The picture: the axis on top and at the bottom, grid lines, then the lanes stacked, and
    over them an arrow for each of the ``transfers`` between room members."""
    rows, y = [], AXIS_H
    placed: dict[str, tuple[float, float]] = {}
    for lane in lanes:
        height = _LANE_H[lane.kind]
        placed[lane.name] = (y, height)
        indent = 22 if lane.kind == "piece" else 6
        label = lane.label if len(lane.label) <= 36 else lane.label[:35] + "…"
        rows.append(
            f'<g class="lane {lane.kind}" data-name="{text(lane.name)}" data-h="{height}"'
            f' data-always="{int(lane.kind != "piece")}" transform="translate(0,{y})">'
            f'<rect class="row" width="{LABEL_W + PLOT_W}" height="{height}"/>'
            f'<text x="{indent}" y="{height / 2 + 4}">{text(label)}'
            f"<title>{text(lane.tip)}</title></text>{''.join(lane.body)}</g>"
        )
        y += height
    symbols = "".join(f'<g id="k-{kind}">{shape}</g>' for kind, shape in _SYMBOLS.items())
    arrows = "".join(draw_transfers(transfers or [], scale, placed))
    grid, ticks = axis(scale, y)
    top, bottom = (
        "".join(f'<text x="{x:.1f}" y="{at}">{label}</text>' for x, label in ticks)
        for at in (AXIS_H - 10, 18)
    )
    return (
        f'<div class="picture"><svg id="timeline" xmlns="http://www.w3.org/2000/svg"'
        f' width="{LABEL_W + PLOT_W + _RIGHT_W}" height="{y + AXIS_H}" data-top="{AXIS_H}"'
        f' data-bottom="{AXIS_H}" role="img" aria-label="timeline of the log">'
        f'<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse"'
        f' patternTransform="rotate(45)"><rect width="2" height="6" fill="#cfd4dc"/></pattern>'
        f"{symbols}{MARKERS}</defs>{grid}"
        f'<text class="unit" x="6" y="{AXIS_H - 10}">seconds after the first event</text>'
        f'<g class="axis">{top}</g>{"".join(rows)}<g id="transfers">{arrows}</g>'
        f'<g id="axis-bottom" class="axis" transform="translate(0,{y})">{bottom}</g>'
        "</svg></div>"
    )


def legend() -> str:
    """What the bars' colours and the symbols mean, and the filter box for the piece lanes."""
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
    keys += "".join(
        f'<span class="key"><svg width="24" height="10"><g class="xfer {outcome}">'
        f'<line class="arrow" x1="1" y1="5" x2="21" y2="5"'
        f' marker-end="url(#a-{outcome})"/></g></svg>{label}</span>'
        for outcome, label in OUTCOMES.items()
    )
    return (
        f'<div class="legend">{bars}{keys}</div><p class="filter"><label>filter piece lanes'
        ' <input id="filter" type="search" placeholder="user or piece"></label>'
        ' <output id="shown"></output></p>'
    )
