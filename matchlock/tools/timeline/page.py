"""The HTML page around the timeline picture, and the one way a string from the log enters it.

:func:`document` wraps a body in the page: its inline stylesheet and script, and the
Content-Security-Policy that lets only those two apply (by their SHA-256 hashes) and forbids
every fetch. :func:`header`, :func:`table` and :func:`refusals` draw what surrounds the
picture: the title and facts of the log, the final users x pieces table, and the refusals.

:func:`text` clips and escapes a string (markup and control characters): everything from the
log passes through it before it reaches the page, in this module and in
:mod:`matchlock.tools.timeline.draw`.

What this module must never do: change :data:`_STYLE` or :data:`_SCRIPT` without knowing that
their hashes change with them (the policy is computed from them here, so it stays in step);
add anything that loads (a font, an image, a stylesheet); let the table or the refusals list
grow without bound.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from html import escape

from matchlock.core.room import PieceState, RoomState
from matchlock.core.safe_text import printable

__all__ = [
    "REFUSAL_LIMIT",
    "TABLE_LIMIT",
    "TEXT_LIMIT",
    "document",
    "header",
    "refusals",
    "table",
    "text",
]

TABLE_LIMIT = 200
"""Above this many pieces, the table shows counts per user and only unfinished pieces."""

REFUSAL_LIMIT = 500
"""The refusals list shows at most this many (and says how many more there were)."""

TEXT_LIMIT = 400
"""Strings from the log are clipped to about this many characters (a hostile log may be huge)."""


def text(value: str) -> str:
    """A string from the log, clipped and escaped: safe as element text and attribute value, its
    control characters shown as escapes (:func:`~matchlock.tools.render.printable`). Clipped in the
    middle, so that both what it is about and (last) why are kept."""
    if len(value) > TEXT_LIMIT:
        value = value[: TEXT_LIMIT // 2] + " … " + value[-TEXT_LIMIT // 2 :]
    return escape(printable(value), quote=True)


def _utc(at: float) -> str:
    try:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    except (OverflowError, OSError, ValueError):
        return f"{at} (not a date)"


def header(state: RoomState, first: float | None, last: float, source: str) -> str:
    """The page's title (the room or download and its status) and the log's facts: how many
    events, when the ``first`` and the ``last`` were (none when ``first`` is None), which log."""
    what = f"room {state.room_id}" if state.kind == "room" else state.kind
    facts = [f"{state.events:,} events"]
    if first is not None:
        facts.append(f"first event at {_utc(first)}")
        facts.append(f"last event at +{last - first:.3f} s")
    if source:
        facts.append(f"log {source}")
    status = state.status or "no events"
    return (
        f'<header><h1>{text(what)}: <span class="st">{text(status)}</span></h1>'
        f'<p class="meta">{" · ".join(text(fact) for fact in facts)}</p></header>'
    )


def table(state: RoomState) -> str:
    """The final users x pieces table; above :data:`TABLE_LIMIT` pieces, counts per user and
    only the pieces someone has not finished."""
    users = list(state.members)
    keys = list(dict.fromkeys(key for m in state.members.values() for key in m.pieces))
    head = "".join(
        f'<th>{text(user)}<br><span class="st">{text(state.members[user].status)}</span></th>'
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
        rows.append(f"<tr><th>{text(key)}</th>{cells}</tr>")
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
    parts = [f"<b>{text(piece.status.replace('_', ' '))}</b> {piece.done:,}/{piece.size:,} B"]
    if piece.source:
        parts.append(f'<span class="src">from {text(piece.source)}</span>')
    if piece.failures:
        items = [f"<li>#{f.index} {text(f.url)}: {text(f.reason)}</li>" for f in piece.failures]
        if len(items) > 10:
            items[10:] = [f"<li>… and {len(items) - 10:,} more</li>"]
        parts.append(f'<ol class="fails">{"".join(items)}</ol>')
    return f'<td class="{text(piece.status)}">{"<br>".join(parts)}</td>'


def refusals(state: RoomState, first: float) -> str:
    """The refusals (at most :data:`REFUSAL_LIMIT`), each at its time after ``first``."""
    items = [
        f'<li><span class="t">+{r.at - first:.3f} s</span> claimed <code>{text(r.user_id)}</code>'
        f" [<code>{text(r.code)}</code>]: {text(r.reason)}</li>"
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
.xfer .arrow{stroke:#1f6fd1;stroke-width:1.6}
.xfer.failed .arrow{stroke:#b3261e;stroke-dasharray:4 3}
.xfer.sent .arrow{stroke:#8a93a3;stroke-dasharray:2 2}
.xfer .hit{stroke:transparent;stroke-width:9}
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
  const arrows = Array.from(svg.querySelectorAll("g.xfer"));
  const bottom = document.getElementById("axis-bottom");
  const restack = () => {
    const query = box.value.trim().toLowerCase();
    const middle = new Map();
    let y = Number(svg.dataset.top), pieces = 0, kept = 0;
    for (const lane of lanes) {
      const always = lane.dataset.always === "1";
      const keep = always || lane.dataset.name.toLowerCase().includes(query);
      lane.setAttribute("display", keep ? "inline" : "none");
      if (!always) { pieces += 1; kept += keep ? 1 : 0; }
      if (keep) {
        lane.setAttribute("transform", `translate(0,${y})`);
        middle.set(lane.dataset.name, y + Number(lane.dataset.h) / 2);
        y += Number(lane.dataset.h);
      }
    }
    for (const arrow of arrows) {  // from the holder's lane to the receiver's, wherever they are
      const from = middle.get(arrow.dataset.from) ?? middle.get(arrow.dataset.fromUser);
      const to = middle.get(arrow.dataset.to) ?? middle.get(arrow.dataset.toUser);
      for (const line of arrow.querySelectorAll("line")) {
        line.setAttribute("y1", String(from));
        line.setAttribute("y2", String(to));
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


def _digest(inline: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode() + "'"


_POLICY = f"default-src 'none'; style-src {_digest(_STYLE)}; script-src {_digest(_SCRIPT)}"


def document(title: str, body: str) -> str:
    """The whole page: ``title`` (escaped here) and ``body`` (markup, already safe), with
    the inline style and script and the policy that admits only them."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
        f"<title>{text(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}<script>{_SCRIPT}</script></body></html>\n"
    )
