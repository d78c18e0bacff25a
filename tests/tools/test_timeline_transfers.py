"""The HTML timeline's arrows between room members: a piece given by a peer is an arrow from the
holder's lane to the receiver's, a failed transfer a dashed one whose tooltip says why, and the
page's script moves the arrows' ends with the lanes when the filter restacks them."""

from __future__ import annotations

from pathlib import Path

from matchlock.cli import main
from matchlock.core import events as ev
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
    assert len(legend) == 2  # the legend's two keys only


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
