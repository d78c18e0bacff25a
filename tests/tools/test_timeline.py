"""The HTML timeline of a log (``matchlock replay LOG --html OUT``): what the page shows for the
recorded logs, that strings from the log never become markup, that a large room stays small,
and that a real headless browser (Debian's chromium) loads the page without a console message."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from matchlock.cli import main
from matchlock.core import events as ev
from matchlock.store.eventlog import EventLog, replay_file
from matchlock.tools.testing import pinned, signed_room
from matchlock.tools.timeline import (
    DETAIL_LIMIT,
    TABLE_LIMIT,
    TEXT_LIMIT,
    UNFINISHED_LIMIT,
    timeline_html,
)

LOGS = Path(__file__).resolve().parents[2] / "replay-logs"
T0 = 1_800_000_000.0


def recorded(name: str) -> Path:
    return LOGS / f"{name}.log"


def write_log(path: Path, stream: str, events: Iterable[ev.Event]) -> Path:
    log = EventLog.start(path, stream, durability="none")
    log.buffer(*events)
    asyncio.run(log.close())
    return path


# -- reading the page back -------------------------------------------------------------------


@dataclass
class Drawn:
    """One element of the page: its tag, attributes, text (its descendants' too), and the text
    of its <title> (the tooltip)."""

    tag: str
    attrs: dict[str, str]
    text: str = ""
    title: str = ""


@dataclass
class Lane:
    kind: str
    elements: list[Drawn] = field(default_factory=list)

    @property
    def label(self) -> str:
        return next(e.text for e in self.elements if e.tag == "text")

    def marks(self, kind: str) -> list[str]:
        return [e.title for e in self.elements if e.attrs.get("href") == f"#k-{kind}"]

    def bars(self, outcome: str) -> list[Drawn]:
        return [e for e in self.elements if e.attrs.get("class") == f"s {outcome}"]


class Page(HTMLParser):
    """The page parsed as a browser's tokenizer would: elements, texts, and the timeline lanes
    by their ``data-name``."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Drawn] = []
        self.lanes: dict[str, Lane] = {}
        self._lane: Lane | None = None
        self._depth = 0
        self._open: list[Drawn] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        drawn = Drawn(tag, {k: v or "" for k, v in attrs})
        self.elements.append(drawn)
        if tag == "g" and drawn.attrs.get("class", "").startswith("lane "):
            self._lane, self._depth = Lane(drawn.attrs["class"].split()[1]), 0
            self.lanes[drawn.attrs["data-name"]] = self._lane
        elif self._lane is not None:
            self._depth += tag == "g"
            self._lane.elements.append(drawn)
        self._open.append(drawn)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._open.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag == "g" and self._lane is not None:
            self._depth -= 1
            if self._depth < 0:
                self._lane = None
        while self._open and self._open.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        if not self._open:
            return
        titles = [i for i, e in enumerate(self._open) if e.tag == "title"]
        if titles and titles[0] > 0:
            self._open[titles[0] - 1].title += data
        elif not titles:
            for element in self._open:
                element.text += data

    def tags(self, tag: str) -> list[Drawn]:
        return [e for e in self.elements if e.tag == tag]

    def text(self) -> str:
        return "\n".join(e.text + "\n" + e.title for e in self.elements if e.tag != "html")


# -- what the page shows for the recorded logs -----------------------------------------------


@pytest.mark.parametrize("log", sorted(LOGS.glob("*.log")), ids=lambda p: p.stem)
def test_every_user_and_piece_of_a_recorded_log_has_a_lane_and_a_cell(log: Path) -> None:
    state = replay_file(log).state
    page = Page(timeline_html(log))
    if state.events == 0:  # a log torn before its first event: nothing to draw, no table
        assert "This log holds no events" in page.text() and not page.tags("table")
        return
    headers = " ".join(th.text for th in page.tags("th"))
    for user, member in state.members.items():
        assert page.lanes[user].label == f"{user} · {member.status}"
        assert user in headers
        for key, piece in member.pieces.items():
            lane = page.lanes[f"{user} {key}"]
            assert lane.kind == "piece" and lane.label == key
            if piece.status in ("finished", "error"):
                assert lane.bars(piece.status), f"{user} {key} has no {piece.status} bar"
    assert [th.text for th in page.tags("th")].count("piece") == 1
    assert sum(lane.kind == "piece" for lane in page.lanes.values()) == sum(
        len(m.pieces) for m in state.members.values()
    )


def test_failed_resolvables_show_their_url_and_reason() -> None:
    page = Page(timeline_html(recorded("download-failed")))
    lane = page.lanes["local chars/kfm"]
    failed = lane.marks("failed")
    assert len(failed) == 2
    assert "missing/kfm.zip failed: HTTP 404 Not Found" in failed[0]
    assert "wrong/kfm.zip failed: sha256 is" in failed[1]
    assert len(lane.bars("error")) == 1 and not page.lanes["local chars/ryu"].bars("error")
    cell = next(td for td in page.tags("td") if td.attrs.get("class") == "error")
    assert cell.text.startswith("error") and "0/40,237 B" in cell.text
    items = " ".join(li.text for li in page.tags("li"))
    assert "#0 http://127.0.0.1:52773/missing/kfm.zip: HTTP 404 Not Found" in items


def test_retries_and_the_abort_are_marked() -> None:
    page = Page(timeline_html(recorded("cannot-complete")))
    bob = page.lanes["bob chars/kfm"]
    assert len(bob.bars("error")) == 2 and len(bob.marks("failed")) == 4
    assert len(bob.marks("retried")) == 1
    assert "no member made progress before the deadline" in page.lanes[""].marks("aborted")[0]
    assert len(page.lanes["bob"].marks("disconnect")) == 1


def test_refusals_are_on_the_users_lane_and_listed() -> None:
    page = Page(timeline_html(recorded("impostor-refused")))
    refused = page.lanes["bob"].marks("refused")
    assert len(refused) == 1 and "[bad-answer]" in refused[0]
    assert not page.lanes["alice"].marks("refused")
    listed = [li for li in page.tags("li") if "claimed" in li.text]
    assert len(listed) == 1 and "signature over this connection's challenge" in listed[0].text


def test_joins_disconnects_and_goodbyes_are_on_each_users_lane() -> None:
    page = Page(timeline_html(recorded("disconnect-rejoin")))
    bob, alice = page.lanes["bob"], page.lanes["alice"]
    assert len(bob.marks("join")) == 2 and len(bob.marks("disconnect")) == 1
    assert "bob disconnected: connection closed" in bob.marks("disconnect")[0]
    assert len(alice.marks("join")) == 1 and not alice.marks("disconnect")
    assert len(alice.marks("goodbye")) == 1 and len(alice.marks("done")) == 1
    room = page.lanes[""]
    assert [len(room.marks(k)) for k in ("open", "alldone", "closed")] == [1, 1, 1]


def test_a_download_log_has_one_member_local() -> None:
    page = Page(timeline_html(recorded("mirror-fallback")))
    users = [lane.label for lane in page.lanes.values() if lane.kind == "user"]
    assert users == ["local · connected"]
    assert page.lanes[""].label == "download"
    assert "download opened for local: 3 pieces" in page.lanes[""].marks("open")[0]
    assert len(page.lanes[""].marks("closed")) == 1
    assert len(page.lanes["local chars/kfm"].marks("failed")) == 1


def test_time_axis_starts_at_the_first_event_and_gives_its_utc_time() -> None:
    page = Page(timeline_html(recorded("disconnect-rejoin")))
    meta = next(p for p in page.tags("p") if p.attrs.get("class") == "meta")
    assert "first event at 2026-11-26 06:29:06.533 UTC" in meta.text
    assert "last event at +0.388 s" in meta.text
    ticks = [t.text for t in page.tags("text") if t.text.endswith(" s")]
    assert ticks[0] == "0.00 s" and "0.35 s" in ticks


def test_in_progress_bars_end_at_the_last_event() -> None:
    log = recorded("disconnect-rejoin")
    page = Page(timeline_html(log, until=12))
    assert "Replayed up to event 12 only" in page.text()
    bars = page.lanes["alice chars/big"].bars("in_progress")
    assert len(bars) == 1
    end = float(bars[0].attrs["x"]) + float(bars[0].attrs["width"])
    assert end == pytest.approx(250 + 1000, abs=0.2)  # the plot's right edge: the last event


def test_an_idle_stretch_is_shortened_but_never_under_a_bar(tmp_path: Path) -> None:
    def gaps(page: Page) -> list[str]:
        return [r.title for r in page.tags("rect") if r.attrs.get("class") == "gap" and r.title]

    # 2.9 s waiting for the deadline, after the last piece failed
    assert gaps(Page(timeline_html(recorded("cannot-complete")))) == [
        "2.890 s without events, drawn shortened"
    ]
    busy: list[ev.Event] = [
        ev.DownloadOpened(at=T0, sizes={"chars/big": 100}),
        ev.PieceStarted(at=T0 + 0.01, user_id="local", piece="chars/big"),
        ev.PieceFinished(at=T0 + 60, user_id="local", piece="chars/big"),
        ev.DownloadClosed(at=T0 + 60.01),
    ]
    page = Page(timeline_html(write_log(tmp_path / "slow.log", "download", busy)))
    assert gaps(page) == []
    bar = page.lanes["local chars/big"].bars("finished")[0]
    assert float(bar.attrs["width"]) > 900  # drawn to scale: a minute of downloading


@pytest.mark.parametrize(
    "times",
    [(1.7e308, T0, T0 + 1), (-1.7e308, 1.7e308, T0), (T0, T0 - 5, T0 + 1), (0.0, 1e-9, 2e-9)],
    ids=["damaged-first", "damaged", "out-of-order", "one-instant"],
)
def test_odd_clocks_still_draw_every_bar(tmp_path: Path, times: tuple[float, ...]) -> None:
    events: list[ev.Event] = [
        ev.DownloadOpened(at=times[0], sizes={"chars/kfm": 5}),
        ev.PieceStarted(at=times[1], user_id="local", piece="chars/kfm"),
        ev.PieceFinished(at=times[2], user_id="local", piece="chars/kfm"),
    ]
    page = Page(timeline_html(write_log(tmp_path / "clock.log", "download", events)))
    assert len(page.lanes["local chars/kfm"].bars("finished")) == 1
    drawn = [e for lane in page.lanes.values() for e in lane.elements]
    numbers = [float(e.attrs[a]) for e in drawn for a in ("x", "width") if a in e.attrs]
    assert all(0 <= n <= 1300 for n in numbers), numbers
    assert len(page.lanes[""].marks("open")) == 1


# -- untrusted strings -----------------------------------------------------------------------

HOSTILE = '</title></text></svg><script>alert("x")</script><img src=x onerror=alert(1)>'


def hostile_log(path: Path) -> Path:
    failure = ev.ResolvableFailure(
        index=0, url='https://e.example/"><script>alert(2)</script>' + "a" * 4000, reason=HOSTILE
    )
    return write_log(
        path,
        "download",
        [
            ev.DownloadOpened(at=T0, sizes={"chars/kfm": 10}),
            ev.MemberRefused(at=T0 + 0.1, user_id=HOSTILE, code="<b>bold</b>", reason=HOSTILE),
            ev.MemberRefused(at=T0 + 0.2, user_id="local", code="dup", reason=HOSTILE),
            ev.PieceStarted(at=T0 + 0.3, user_id="local", piece="chars/kfm"),
            ev.ResolvableFailed(at=T0 + 0.4, user_id="local", piece="chars/kfm", failure=failure),
            ev.PieceFailed(at=T0 + 0.5, user_id="local", piece="chars/kfm", failures=(failure,)),
            ev.DownloadClosed(at=T0 + 0.6),
        ],
    )


def test_strings_from_the_log_never_become_markup(tmp_path: Path) -> None:
    html = timeline_html(hostile_log(tmp_path / "hostile.log"))
    page = Page(html)
    assert len(page.tags("script")) == 1 and not page.tags("img")
    assert not [e for e in page.elements if any(name.startswith("on") for name in e.attrs)]
    assert "<script>alert" not in html and "<b>bold" not in html
    assert HOSTILE in page.lanes[""].marks("refused")[0]  # shown as text, exactly
    assert HOSTILE in page.lanes["local"].marks("refused")[0]
    assert HOSTILE in page.lanes["local chars/kfm"].marks("failed")[0]
    listed = [li.text for li in page.tags("li") if "claimed" in li.text]
    assert f"claimed {HOSTILE} [<b>bold</b>]: {HOSTILE}" in listed[0]
    assert "a" * TEXT_LIMIT not in html  # a huge URL is clipped


def test_the_page_loads_nothing_and_runs_only_its_own_script(tmp_path: Path) -> None:
    html = timeline_html(hostile_log(tmp_path / "hostile.log"))
    page = Page(html)
    policy = next(m for m in page.tags("meta") if m.attrs.get("http-equiv"))
    rules = dict(rule.strip().split(" ", 1) for rule in policy.attrs["content"].split(";"))
    assert rules["default-src"] == "'none'"
    for tag, rule in (("script", "script-src"), ("style", "style-src")):
        (element,) = page.tags(tag)
        digest = base64.b64encode(hashlib.sha256(element.text.encode()).digest()).decode()
        assert rules[rule] == f"'sha256-{digest}'"
    assert all(e.attrs["href"].startswith("#") for e in page.elements if "href" in e.attrs)
    assert not [e for e in page.elements if "src" in e.attrs]
    assert set(re.findall(r"url\(([^)]*)\)", html)) == {"#hatch", "#a-ok", "#a-failed", "#a-sent"}
    assert "@import" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )


# -- bounded size ----------------------------------------------------------------------------

USERS, PIECES = 8, 2000


def large_room_events() -> list[ev.Event]:
    """8 users x 2,000 pieces: some resolvables fail, three pieces end in error for u3, two are
    still in progress for u5; everyone else finishes."""
    keys = [f"chars/p{i:04}" for i in range(PIECES)]
    users = [f"u{u}" for u in range(USERS)]
    config = signed_room("big", users, pinned(dict.fromkeys(keys, 1000)))
    events: list[ev.Event] = [ev.RoomOpened(at=T0, config=config)]
    for u, user in enumerate(users):
        events.append(ev.MemberJoined(at=T0 + 0.01 * u, user_id=user))
    for i, key in enumerate(keys):
        for u, user in enumerate(users):
            at = T0 + 1 + i * 0.01 + u * 0.001
            events.append(ev.PieceStarted(at=at, user_id=user, piece=key))
            if i % 50 == u:
                failure = ev.ResolvableFailure(
                    index=0, url=f"https://a.example/{key}", reason="404"
                )
                events.append(
                    ev.ResolvableFailed(at=at + 0.2, user_id=user, piece=key, failure=failure)
                )
            if user == "u5" and i in (10, 1999):
                continue
            done = ev.PieceFailed if user == "u3" and i in (7, 700, 1500) else ev.PieceFinished
            events.append(done(at=at + 0.5, user_id=user, piece=key))
    return events


@pytest.fixture(scope="module")
def large_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_log(tmp_path_factory.mktemp("large") / "big.log", "room/big", large_room_events())


def test_a_large_room_collapses_into_summary_lanes_and_stays_small(large_log: Path) -> None:
    assert USERS * PIECES > DETAIL_LIMIT
    html = timeline_html(large_log)
    assert len(html) < 400_000, f"{len(html):,} bytes"
    page = Page(html)
    summaries = [lane for lane in page.lanes.values() if lane.kind == "summary"]
    assert [lane.label for lane in summaries] == [
        "u0: 2,000/2,000 finished",
        "u1: 2,000/2,000 finished",
        "u2: 2,000/2,000 finished",
        "u3: 1,997/2,000 finished, 3 error",
        "u4: 2,000/2,000 finished",
        "u5: 1,998/2,000 finished",
        "u6: 2,000/2,000 finished",
        "u7: 2,000/2,000 finished",
    ]
    pieces = sorted(name for name, lane in page.lanes.items() if lane.kind == "piece")
    assert pieces == [
        "u3 chars/p0007",
        "u3 chars/p0700",
        "u3 chars/p1500",
        "u5 chars/p0010",
        "u5 chars/p1999",
    ]
    assert "16,000 piece lanes are more than 400" in page.text()
    failed = [t for lane in summaries for t in lane.marks("failed")]
    assert sum(int(t.split(" marks")[0]) if " marks" in t else 1 for t in failed) == 320
    rows = page.tags("tr")
    assert len(rows) == 1 + 4 + 5  # header, counts per status, the unfinished pieces
    assert len(rows) < TABLE_LIMIT and UNFINISHED_LIMIT >= 5


def test_marks_at_one_moment_merge_and_count(tmp_path: Path) -> None:
    refusals = [
        ev.MemberRefused(at=T0 + 1, user_id=f"stranger{i}", code="unknown-user", reason="who?")
        for i in range(50)
    ]
    events: list[ev.Event] = [ev.DownloadOpened(at=T0, sizes={}), *refusals]
    events.append(ev.DownloadClosed(at=T0 + 2))
    page = Page(timeline_html(write_log(tmp_path / "many.log", "download", events)))
    (merged,) = page.lanes[""].marks("refused")
    assert merged.startswith("50 marks: refused") and merged.endswith("… and 47 more")
    assert len([li for li in page.tags("li") if "claimed" in li.text]) == 50


def test_an_empty_log_says_so(tmp_path: Path) -> None:
    page = Page(timeline_html(write_log(tmp_path / "empty.log", "room/nothing", [])))
    assert "This log holds no events" in page.text() and not page.tags("svg")
    opened_only = [ev.RoomOpened(at=T0, config=signed_room("quiet", ["ann"], {}))]
    page = Page(timeline_html(write_log(tmp_path / "quiet.log", "room/quiet", opened_only)))
    assert page.lanes["ann"].label == "ann · expected" and len(page.tags("svg")) > 1


# -- the command line ------------------------------------------------------------------------


def test_replay_html_writes_the_page_and_prints_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.html"
    assert main(["replay", str(recorded("happy-room")), "--html", str(out)]) == 0
    assert f"wrote {out} (30 events)" in capsys.readouterr().out
    assert set(Page(out.read_text()).lanes) >= {"alice", "bob", "carol", "carol chars/kfm"}
    assert main(["replay", str(recorded("happy-room")), "--html", str(out), "--until", "4"]) == 0
    assert "(4 events)" in capsys.readouterr().out
    assert "Replayed up to event 4 only" in out.read_text()


def test_replay_html_refuses_other_modes_and_damaged_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.html"
    assert main(["replay", str(recorded("happy-room")), "--html", str(out), "--json"]) == 2
    assert "does not combine" in capsys.readouterr().err
    damaged = tmp_path / "damaged.log"
    lines = recorded("happy-room").read_bytes().splitlines(keepends=True)
    damaged.write_bytes(b"".join(lines[:3] + lines[4:]))
    assert main(["replay", str(damaged), "--html", str(out)]) == 1
    assert "damaged.log" in capsys.readouterr().err and not out.exists()


# -- a real browser --------------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs it, so in CI this must run")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return found


def load(page: Path, profile: Path, fragment: str = "") -> tuple[str, list[str]]:
    """Load ``page`` in headless chromium: the DOM after scripts ran, and every console line."""
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        page.as_uri() + fragment,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_the_browser_check_catches_script_errors_and_blocked_loads(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><meta http-equiv='Content-Security-Policy' content=\"default-src 'none';"
        " script-src 'unsafe-inline'\"><p id=p>before</p><img src='http://198.51.100.1/x.png'>"
        "<script>document.getElementById('p').textContent = 'ran'; notDefined();</script>"
    )
    dom, console = load(broken, tmp_path / "profile")
    assert ">ran</p>" in dom
    assert any("Uncaught ReferenceError: notDefined" in line for line in console), console
    assert any("violates the following Content Security Policy" in line for line in console)


@pytest.mark.parametrize("name", ["disconnect-rejoin", "download-failed", "hostile", "large"])
def test_a_real_browser_loads_the_page_cleanly_and_shows_every_user(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if name == "hostile":
        log = hostile_log(tmp_path / "hostile.log")
    elif name == "large":
        log = request.getfixturevalue("large_log")
    else:
        log = recorded(name)
    out = tmp_path / "page.html"
    assert main(["replay", str(log), "--html", str(out)]) == 0
    dom, console = load(out, tmp_path / "profile")
    assert console == []
    page = Page(dom)
    state = replay_file(log).state
    labels = {lane.label for lane in page.lanes.values() if lane.kind == "user"}
    assert labels == {f"{user} · {m.status}" for user, m in state.members.items()}
    pieces = sum(lane.kind == "piece" for lane in page.lanes.values())
    (shown,) = page.tags("output")
    assert shown.text == f"showing {pieces} of {pieces} piece lanes"  # the script ran to its end
    assert len(page.tags("script")) == 1 and not page.tags("img")


def test_the_filter_in_the_url_restacks_the_lanes_in_a_browser(tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    assert main(["replay", str(recorded("disconnect-rejoin")), "--html", str(out)]) == 0
    dom, console = load(out, tmp_path / "profile", fragment="#bob")
    assert console == []
    page = Page(dom)
    (shown,) = page.tags("output")
    assert shown.text == "showing 2 of 4 piece lanes"
    lanes = {e.attrs["data-name"]: e.attrs for e in page.tags("g") if "data-name" in e.attrs}
    assert lanes["alice chars/big"]["display"] == "none"
    assert lanes["bob chars/big"]["display"] == "inline"
    # room 30..58, alice 58..84, her pieces hidden, then bob at 84 and his two pieces
    assert lanes["bob"]["transform"] == "translate(0,84)"
    assert lanes["bob chars/kfm"]["transform"] == "translate(0,128)"
    (svg,) = [e for e in page.tags("svg") if e.attrs.get("id") == "timeline"]
    assert svg.attrs["height"] == str(146 + 30)
