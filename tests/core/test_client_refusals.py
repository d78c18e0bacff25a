"""What the member core does when the host refuses: a fatal refusal ends the connection (and only
``already-connected`` is worth joining again for); a refused report is dropped from what the
member expects the host to believe, which is rebuilt from the host's view and the reports still
on their way, skipping any the host will refuse as well, and only for that piece."""

from __future__ import annotations

import pytest

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol
from matchlock.core.host import HostProtocol
from matchlock.tools.testing import insecure_key, pinned, signed_room

CONFIG = signed_room("r1", ("alice", "bob"), pinned({"chars/kfm": 100, "stages/dojo": 50}))


def joined() -> tuple[HostProtocol, ClientProtocol]:
    """A host and alice's member core, joined over connection 1."""
    host, client = HostProtocol(), ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    host.connect(1, bytes(16))
    frames = [client.hello()]
    while frames:
        out = host.receive(1, frames.pop(0), at=1)
        for _, frame in out.sends:
            frames += client.receive(frame).sends
    assert client.phase == "joined"
    return host, client


def refusal(code: str, fatal: bool) -> bytes:
    return pr.encode(pr.Refused(code=code, reason="test", fatal=fatal))


@pytest.mark.parametrize(
    ("code", "retry", "phase"),
    [("already-connected", True, "new"), ("quarantined", False, "closed")],
)
def test_a_fatal_refusal_ends_the_connection_and_says_whether_to_join_again(
    code: str, retry: bool, phase: str
) -> None:
    _, client = joined()
    out = client.receive(refusal(code, fatal=True))
    assert out.refused is not None and out.refused.code == code
    assert (out.retry, client.phase) == (retry, phase)


def progress(done: int, piece: str = "chars/kfm") -> ev.PieceProgress:
    return ev.PieceProgress(at=2, user_id="alice", piece=piece, done=done)


def start(piece: str) -> ev.PieceStarted:
    return ev.PieceStarted(at=2, user_id="alice", piece=piece)


def test_a_refused_report_is_taken_back_and_the_rest_still_counts() -> None:
    host, client = joined()
    bad = client.report(progress(5))  # kfm has not started: the host will refuse it
    client.report(progress(7))  # refused as well, and skipped
    client.report(start("chars/kfm"))
    assert client.projected("chars/kfm").status == "in_progress"
    for _, frame in host.receive(1, bad, at=2).sends:  # member_refused relayed, then refused
        client.receive(frame)
    assert client.projected("chars/kfm").status == "in_progress"  # the start is still awaited
    assert client.host_view("chars/kfm").status == "not_started"


def test_taking_a_report_back_rebuilds_only_that_piece() -> None:
    host, client = joined()
    bad = client.report(progress(5))
    client.report(start("stages/dojo"))
    for _, frame in host.receive(1, bad, at=2).sends:  # member_refused relayed, then refused
        client.receive(frame)
    assert client.projected("chars/kfm").status == "not_started"
    assert client.projected("stages/dojo").status == "in_progress"


def decoded(frames: list[bytes]) -> list[ev.Event]:
    return [m.event for m in map(pr.decode_client_message, frames) if isinstance(m, pr.Report)]


FAILURE = ev.ResolvableFailure(index=0, url="https://a.example/kfm.zip", reason="404")


def failed(user: str = "local") -> ev.ResolvableFailed:
    return ev.ResolvableFailed(at=3, user_id=user, piece="chars/kfm", failure=FAILURE)


def test_a_failure_is_reported_as_it_happened_as_this_member_s() -> None:
    _, client = joined()
    [started] = decoded(
        client.piece_event(ev.PieceStarted(at=3, user_id="local", piece="chars/kfm"))
    )
    # the downloader's events are this member's, whatever user id the downloader gave them
    assert started == ev.PieceStarted(at=3, user_id="alice", piece="chars/kfm")
    assert decoded(client.piece_event(failed())) == [failed("alice")]


def test_nothing_is_reported_before_the_member_has_joined() -> None:
    client = ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    assert client.piece_event(ev.PieceStarted(at=3, user_id="local", piece="chars/kfm")) == []
    assert client.local.members["alice"].pieces["chars/kfm"].status == "in_progress"


def test_the_projection_is_what_the_host_will_believe_once_it_has_the_reports() -> None:
    host, client = joined()
    reports_and_views: list[tuple[pr.ReportEvent, tuple[str, int]]] = [
        (start("chars/kfm"), ("in_progress", 0)),
        (progress(10), ("in_progress", 10)),
        (progress(40), ("in_progress", 40)),
        (failed("alice"), ("in_progress", 0)),  # the next resolvable starts from nothing
        (progress(20), ("in_progress", 20)),
        (progress(5), ("in_progress", 20)),  # backwards: the host will refuse it
        (ev.PieceFinished(at=4, user_id="alice", piece="chars/kfm", source="m"), ("finished", 100)),
    ]
    frames = []
    for report, view in reports_and_views:
        frames.append(client.report(report))
        projected = client.projected("chars/kfm")
        assert (projected.status, projected.done) == view, report
    for frame in frames:
        for _, sent in host.receive(1, frame, at=5).sends:
            client.receive(sent)
    seen, projected = client.host_view("chars/kfm"), client.projected("chars/kfm")
    assert (seen.status, seen.done) == (projected.status, projected.done) == ("finished", 100)
    assert host.rooms["r1"].room.members["alice"].pieces["chars/kfm"].status == "finished"
