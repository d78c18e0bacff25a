"""The HTML timeline's arrows between room members: a piece given by a peer is an arrow from the
holder's lane to the receiver's, a failed transfer a dashed one whose tooltip says why, and the
page's script moves the arrows' ends with the lanes when the filter restacks them."""

from __future__ import annotations

from pathlib import Path

import pytest

from matchlock.cli import main
from matchlock.core import events as ev
from matchlock.store.eventlog import replay_file
from matchlock.tools.sim.peer_run import simulate_transfers
from matchlock.tools.testing import pinned, signed_room
from matchlock.tools.timeline import timeline_html
from tests.tools.test_timeline import T0, Drawn, Page, load, write_log

KFM, RYU = "chars/kfm", "chars/ryu"
CORRUPT = "carol sent 1,000 bytes whose sha256 is ab12…, not the pinned cd34…"


def failure(index: int, url: str, reason: str) -> ev.ResolvableFailure:
    return ev.ResolvableFailure(index=index, url=url, reason=reason)


def room_events() -> list[ev.Event]:
    """alice holds kfm and ryu; bob's mirror fails, carol lies about kfm, alice gives it; carol
    gets ryu from alice too; alice installs her own from her mirror."""
    room = signed_room("peers", ["alice", "bob", "carol"], pinned({KFM: 1000, RYU: 500}))
    events: list[ev.Event] = [ev.RoomOpened(at=T0, config=room)]
    events += [ev.MemberJoined(at=T0 + 0.01 * i, user_id=u) for i, u in enumerate(room.users)]
    for key in (KFM, RYU):
        events.append(ev.PieceStarted(at=T0 + 0.1, user_id="alice", piece=key))
        events.append(ev.PieceFinished(at=T0 + 0.2, user_id="alice", piece=key, source="engine"))
    events.append(ev.PieceFinished(at=T0 + 0.2, user_id="carol", piece=KFM, source="cache"))
    events += [
        ev.PieceStarted(at=T0 + 0.3, user_id="bob", piece=KFM),
        ev.ResolvableFailed(
            at=T0 + 0.4, user_id="bob", piece=KFM, failure=failure(0, "https://m/kfm", "404")
        ),
        ev.ResolvableFailed(
            at=T0 + 0.6, user_id="bob", piece=KFM, failure=failure(1, "room:carol", CORRUPT)
        ),
        ev.PieceFinished(at=T0 + 0.9, user_id="bob", piece=KFM, source="room:alice"),
        ev.PieceStarted(at=T0 + 0.5, user_id="carol", piece=RYU),
        ev.PieceFinished(at=T0 + 1.0, user_id="carol", piece=RYU, source="room:alice"),
    ]
    events.append(ev.PieceStarted(at=T0 + 0.9, user_id="bob", piece=RYU))
    events.append(ev.PieceFinished(at=T0 + 1.1, user_id="bob", piece=RYU, source="https://m/ryu"))
    events += [ev.MemberDone(at=T0 + 1.2, user_id=u) for u in room.users]
    events.append(ev.RoomAllDone(at=T0 + 1.2))
    return events


def arrows(page: Page) -> list[Drawn]:
    """The arrows of the picture (the legend's keys name no lanes)."""
    return [g for g in page.tags("g") if "data-from" in g.attrs]


def lines(page: Page, arrow: Drawn) -> list[Drawn]:
    """The <line>s of ``arrow`` (the elements that follow its <g> up to the next arrow)."""
    start = page.elements.index(arrow)
    return [e for e in page.elements[start + 1 : start + 3] if e.tag == "line"]


def lane_middle(page: Page, name: str) -> float:
    (lane,) = [g for g in page.tags("g") if g.attrs.get("data-name") == name]
    top = float(lane.attrs["transform"].removeprefix("translate(0,").removesuffix(")"))
    return top + float(lane.attrs["data-h"]) / 2


def test_a_piece_from_a_peer_is_an_arrow_from_holder_to_receiver(tmp_path: Path) -> None:
    page = Page(timeline_html(write_log(tmp_path / "peers.log", "room/peers", room_events())))
    drawn = arrows(page)
    ends = [(a.attrs["data-from"], a.attrs["data-to"], a.attrs["class"]) for a in drawn]
    assert ends == [
        (f"carol {KFM}", f"bob {KFM}", "xfer failed"),
        (f"alice {KFM}", f"bob {KFM}", "xfer ok"),
        (f"alice {RYU}", f"carol {RYU}", "xfer ok"),
    ]
    failed, given, _ = drawn
    assert "carol failed to give bob chars/kfm" in failed.title and CORRUPT in failed.title
    assert "bob chars/kfm: finished from room:alice" in given.title
    for line in lines(page, given):  # from alice's kfm lane to bob's, over his last attempt
        assert float(line.attrs["y1"]) == lane_middle(page, f"alice {KFM}")
        assert float(line.attrs["y2"]) == lane_middle(page, f"bob {KFM}")
        assert float(line.attrs["x1"]) < float(line.attrs["x2"])
    (head,) = [e for e in lines(page, given) if e.attrs.get("class") == "arrow"]
    assert head.attrs["marker-end"] == "url(#a-ok)"
    assert any(e.attrs.get("id") == "a-ok" for e in page.tags("marker"))
    # the cross on bob's bar still says why carol's bytes were refused
    assert CORRUPT in page.lanes[f"bob {KFM}"].marks("failed")[1]


def test_a_room_without_peers_draws_no_arrow(tmp_path: Path) -> None:
    events = [
        e.model_copy(update={"source": "https://m/x"}) if isinstance(e, ev.PieceFinished) else e
        for e in room_events()
        if not isinstance(e, ev.ResolvableFailed) or e.failure.index == 0
    ]
    page = Page(timeline_html(write_log(tmp_path / "plain.log", "room/peers", events)))
    assert arrows(page) == []
    legend = [g for g in page.tags("g") if g.attrs.get("class", "").startswith("xfer ")]
    assert len(legend) == 3  # the legend's keys only


def test_the_filter_moves_an_arrow_to_the_holders_own_lane_in_a_browser(tmp_path: Path) -> None:
    log = write_log(tmp_path / "peers.log", "room/peers", room_events())
    out = tmp_path / "page.html"
    assert main(["replay", str(log), "--html", str(out)]) == 0
    dom, console = load(out, tmp_path / "profile", fragment="#bob")
    assert console == []
    page = Page(dom)
    given = next(a for a in arrows(page) if a.attrs["data-from"] == f"alice {KFM}")
    for line in lines(page, given):  # alice's kfm lane is hidden: the arrow starts at hers
        assert float(line.attrs["y1"]) == lane_middle(page, "alice")
        assert float(line.attrs["y2"]) == lane_middle(page, f"bob {KFM}")


# -- members' own logs: a simulated room of peers -------------------------------------------


@pytest.fixture(scope="module")
def peer_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The logs of a seeded room whose members got their pieces from each other, a holder
    lying once (seed 156: a lie, a stall, a holder and two requesters gone, the host killed
    once mid-transfer). The seed is chosen for what the tests read off it: when the host or the
    members change how frames are timed, the room plays differently; pick another seed that
    deals one lie and has these transfers."""
    logs = tmp_path_factory.mktemp("peers")
    result = simulate_transfers(156, log_dir=logs)
    assert result.dealt["peer-lie"] == 1
    return logs


def test_a_members_own_transfers_are_drawn_on_the_rooms_arrows(
    peer_logs: Path, tmp_path: Path
) -> None:
    host = peer_logs / "host.log"
    history: list[ev.Event] = []
    replay_file(host, on_event=lambda seq, event: history.append(event))
    given = [e for e in history if isinstance(e, ev.PieceFinished) and e.source.startswith("room:")]
    failed = [e for e in history if isinstance(e, ev.ResolvableFailed)]  # lies and cuts
    assert sum("sha256 is" in e.failure.reason for e in failed) == 1
    alone = arrows(Page(timeline_html(host)))
    assert [a.attrs["class"] for a in alone].count("xfer ok") == len(given)
    assert [a.attrs["class"] for a in alone].count("xfer failed") == len(failed)
    out = tmp_path / "page.html"
    members = [str(peer_logs / f"u{i}.log") for i in range(4)]
    args = ["replay", str(host), "--html", str(out)]
    assert main(args + [arg for log in members for arg in ("--member-log", log)]) == 0
    drawn = arrows(Page(out.read_text()))
    ok = [a for a in drawn if a.attrs["class"] == "xfer ok"]
    assert len(ok) == len(given)  # the receiver's and the holder's records joined the room's
    assert all("got" in a.title and "served" in a.title and "finished from" in a.title for a in ok)
    sent = [a for a in drawn if a.attrs["class"] == "xfer sent"]  # the holder's word alone
    assert sent and all("served" in a.title and "got" not in a.title for a in sent)
    (lie,) = [a for a in drawn if "corrupt" in a.title]  # the room's, the liar's, the receiver's
    assert lie.attrs["class"] == "xfer failed" and "resolvable 0 room:" in lie.title
    assert "sha256 is" in lie.title and ": sent" in lie.title
    cuts = [a for a in drawn if a.attrs["class"] == "xfer failed" and ": cut" in a.title]
    assert cuts and all(".log #" in a.title for a in cuts)  # the members' own record of it
    assert any("was cut at byte" in a.title for a in cuts)  # with the room's, when it got there


def test_replay_shows_a_members_transfers(
    peer_logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(peer_logs / "u2.log")]) == 0
    out = capsys.readouterr().out
    assert "u2 got 5,600 bytes of chars/p0 (archive, from byte 0) from u0: verified" in out
    assert "u2 served 5,600 bytes of chars/p0 (archive, from byte 0) to u3: sent" in out
    assert "u2 chars/p0: finished from room:u0" in out


def test_member_logs_go_with_the_page_only(
    peer_logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host, member = str(peer_logs / "host.log"), str(peer_logs / "u2.log")
    assert main(["replay", host, "--member-log", member]) == 2
    assert "--html page only" in capsys.readouterr().err


def test_a_real_browser_loads_a_page_of_peers_cleanly(peer_logs: Path, tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    members = [arg for i in range(4) for arg in ("--member-log", str(peer_logs / f"u{i}.log"))]
    assert main(["replay", str(peer_logs / "host.log"), "--html", str(out), *members]) == 0
    dom, console = load(out, tmp_path / "profile", fragment="#u3")
    assert console == []
    page = Page(dom)
    lanes = [g for g in page.tags("g") if g.attrs.get("class", "").startswith("lane ")]
    shown = {g.attrs["data-name"] for g in lanes if g.attrs["display"] != "none"}
    assert "u0 chars/p0" not in shown and "u3 chars/p0" in shown
    for arrow in arrows(page):  # each end on its piece's lane if shown, else on its user's
        ends = [
            arrow.attrs[f"data-{side}"]
            if arrow.attrs[f"data-{side}"] in shown
            else arrow.attrs[f"data-{side}-user"]
            for side in ("from", "to")
        ]
        for line in lines(page, arrow):
            assert float(line.attrs["y1"]) == lane_middle(page, ends[0])
            assert float(line.attrs["y2"]) == lane_middle(page, ends[1])
