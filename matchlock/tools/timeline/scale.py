"""The time axis of the timeline picture: where each moment is drawn, and its ticks.

Time runs left to right across the plot, :data:`PLOT_W` pixels wide after the lanes' labels. A
:class:`Scale` maps an event's time to x piecewise linearly: a long idle stretch (no event, and
no piece in progress, so that no bar is distorted) is drawn narrow and hatched, the rest to
scale. :func:`axis` draws the grid lines, the hatched gaps and the tick labels for a scale.

This module only measures time and draws the axis: it knows nothing of lanes, marks or the log,
and it never puts a string from the log on the page (every label it draws is a number it made).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["AXIS_H", "GAP_SHARE", "LABEL_W", "PLOT_W", "Scale", "axis"]

LABEL_W = 250
"""Width of the lanes' labels, left of the plot (the plot starts at this x)."""

PLOT_W = 1000
"""Width of the plot: the first event is drawn at its left edge, the last at its right."""

AXIS_H = 30
"""Height of the axis above the lanes (and of the one below them)."""

_GAP_PX = 36
_TICK_PX = 90  # ticks are about this far apart, never closer than 70% of it

GAP_SHARE = 0.2
"""An idle stretch (no event, no piece in progress) longer than this share of the log may be
drawn narrow, :data:`_GAP_PX` wide."""


@dataclass(frozen=True, slots=True)
class Scale:
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
    ) -> Scale:
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
        per_s = (PLOT_W - _GAP_PX * len(gaps)) / active
        segments, t, x = [], lo, float(LABEL_W)
        for a, b in gaps:
            end = x + (a - t) * per_s
            segments += [(t, a, x, end), (a, b, end, end + _GAP_PX)]
            t, x = b, end + _GAP_PX
        segments.append((t, hi, x, x + (hi - t) * per_s))
        return cls(first, tuple(segments), frozenset(range(1, 2 * len(gaps), 2)), per_s)

    @property
    def hi(self) -> float:
        """The last time on the axis (drawn at the plot's right edge)."""
        return self.segments[-1][1]

    def x(self, at: float) -> float:
        """Where the time ``at`` is drawn (times before the first are drawn at the first)."""
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
        """The time ``at`` as the axis labels it: seconds after the first event."""
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


def axis(scale: Scale, bottom: float) -> tuple[str, list[tuple[float, str]]]:
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
                f'<rect class="gap" x="{x0:.1f}" y="{AXIS_H}" width="{x1 - x0:.1f}"'
                f' height="{bottom - AXIS_H}"><title>{tip}</title></rect>'
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
        grid.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{AXIS_H}" y2="{bottom}"/>')
    return "".join(grid), kept
