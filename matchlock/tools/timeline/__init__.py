"""The timeline picture of a room or download log, as one self-contained HTML page.

``matchlock replay LOG --html OUT.html`` writes it (:func:`replay_timeline`); a game or launcher
can also feed a :class:`Timeline` the events it folds and render the page itself.

The page holds a time axis (seconds after the first event, whose UTC time the header gives), a top
lane for the room's own events (opened, all done, closed, aborted, and refusals of ids that are
not expected users), then for each user a lane of their joins, refusals, disconnects, done and
goodbye, followed by one lane per piece: a bar from its start to its finish (green) or error (red);
a piece still in progress is amber and ends at the last event. Each resolvable that failed is a
cross on its piece's bar. A piece one member gave another (``piece_finished`` from
``room:<holder>``, and a member's own ``transfer_received`` / ``transfer_served``) is an arrow
from the holder's lane to the receiver's, a failed transfer a dashed red one. Every mark, bar
and arrow has a tooltip (the event's number and what it means,
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

The package, imports pointing one way (each module's prose says more):

- :mod:`~matchlock.tools.timeline.gather`: :class:`Timeline`, which takes the events and puts the
  page together;
- :mod:`~matchlock.tools.timeline.draw`: the SVG picture, its lanes, marks, bars and legend;
- :mod:`~matchlock.tools.timeline.transfers`: the transfers between room members, as arrows;
- :mod:`~matchlock.tools.timeline.scale`: the time axis, idle gaps shortened, and its ticks;
- :mod:`~matchlock.tools.timeline.page`: the page around the picture (header, final table,
  refusals), its inline style and script and their Content-Security-Policy, and the clipping
  and escaping every string from the log goes through.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from matchlock.store import LogStore
from matchlock.store.eventlog import Replayed, replay_file
from matchlock.tools.timeline.gather import DETAIL_LIMIT, MAX_TIME, UNFINISHED_LIMIT, Timeline
from matchlock.tools.timeline.page import REFUSAL_LIMIT, TABLE_LIMIT, TEXT_LIMIT
from matchlock.tools.timeline.scale import GAP_SHARE

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


def replay_timeline(
    path: Path | str | LogStore, until: int | None = None, members: Sequence[Path | str] = ()
) -> tuple[Replayed, str]:
    """Replay the log at ``path`` (a file, or any store's log) once (up to event ``until``, when
    given) and return the replay and the page; the transfers told in the members' own logs
    ``members`` are drawn too. Raises what :func:`~matchlock.store.eventlog.replay_file` raises
    for a damaged log."""
    timeline = Timeline()
    replayed = replay_file(path, until=until, on_event=timeline.add)
    for member in members:
        replay_file(member, on_event=functools.partial(timeline.add_member_log, Path(member).name))
    notes = []
    if until is not None and replayed.state.events == until:
        notes.append(f"Replayed up to event {until} only (--until): later events are not shown.")
    if replayed.torn is not None:
        notes.append(
            f"Line {replayed.torn.line} was torn by a crash ({replayed.torn.size} bytes): "
            "replayed to the last whole event."
        )
    name = str(path) if isinstance(path, str | Path) else path.name
    return replayed, timeline.html(replayed.state, name, notes)


def timeline_html(path: Path | str, until: int | None = None) -> str:
    """The timeline page of the log at ``path`` (up to event ``until``, when given)."""
    return replay_timeline(path, until)[1]
