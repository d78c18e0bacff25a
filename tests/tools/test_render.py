"""No control character from a log or a peer reaches a terminal or a page raw: replay's text,
its errors and its HTML page, the download and join outputs all show them escaped."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.progress import Progress

from matchlock.cli import download as download_cli
from matchlock.cli import join as join_cli
from matchlock.cli import main
from matchlock.core import chain
from matchlock.core import events as ev
from matchlock.core.config import PinnedPiece
from matchlock.tools.render import describe, printable
from matchlock.tools.testing import signed_room
from tests.tools.test_timeline import write_log

CONTROLS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + ["\u202e", "\u2028", "\u2066"]
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31m\x85\u202eevil\x00\r\n"
"""An OSC title change, a screen clear, a C1 CSI, NEL, a bidi override, NUL, CR and LF."""


def raw_controls(text: str) -> list[str]:
    """The control characters in ``text``, newlines between lines aside."""
    return [c for c in text if c in CONTROLS and c != "\n"]


def test_printable_escapes_every_control_and_keeps_the_rest() -> None:
    for control in CONTROLS:
        shown = printable(f"a{control}b")
        assert control not in shown
        assert shown.startswith("a\\") and shown.endswith("b")
    assert printable("\x1b") == "\\x1b"
    assert printable("\u202e") == "\\u202e"
    assert printable("kfm.zip é 字 \\x1b") == "kfm.zip é 字 \\x1b"


@given(st.text())
def test_printable_output_holds_no_control_and_is_stable(text: str) -> None:
    shown = printable(text)
    assert not [c for c in shown if c in CONTROLS]
    assert printable(shown) == shown


def hostile_events() -> list[ev.Event]:
    failure = ev.ResolvableFailure(index=0, url=f"https://e.example/{HOSTILE}", reason=HOSTILE)
    where = {"user_id": "local", "piece": "chars/kfm"}
    return [
        ev.DownloadOpened(at=1.0, sizes={"chars/kfm": 10, "chars/ryu": 10}),
        ev.MemberRefused(at=1.1, user_id=f"mallory{HOSTILE}", code="bad-answer", reason=HOSTILE),
        ev.PieceStarted(at=1.2, **where),
        ev.ResolvableFailed(at=1.3, **where, failure=failure),
        ev.FolderRejected(at=1.4, **where, folder=HOSTILE, where="cache", reason=HOSTILE),
        ev.PieceFinished(at=1.5, **where, source=f"https://m.example/{HOSTILE}"),
        ev.PieceStarted(at=1.6, user_id="local", piece="chars/ryu"),
        ev.PieceFailed(at=1.7, user_id="local", piece="chars/ryu", failures=(failure,)),
        ev.DownloadClosed(at=1.8),
    ]


def replay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "matchlock", "replay", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )


def test_replay_shows_hostile_sources_and_reasons_escaped(tmp_path: Path) -> None:
    log = write_log(tmp_path / "hostile.log", "download", hostile_events())
    done = replay(log)
    assert done.returncode == 0, done.stderr
    assert raw_controls(done.stdout) == [] and raw_controls(done.stderr) == []
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\x85\\u202eevil\\x00\\x0d\\x0a" in done.stdout
    assert "from https://m.example/\\x1b" in done.stdout  # the source, on the finished line


def test_replay_errors_show_a_hostile_event_type_escaped(tmp_path: Path) -> None:
    log = write_log(tmp_path / "bad.log", "download", hostile_events()[:1])
    header, first = log.read_bytes().splitlines(keepends=True)
    last = chain.LogDecoder(str(log))
    list(last.events([header, first]))
    body = json.dumps({"v": 1, "at": 2.0, "type": HOSTILE}).encode()
    line, _ = chain._seal(b'{"seq":2,"prev":"%s","event":%s' % (last.last_hash.encode(), body))
    log.write_bytes(header + first + line)
    done = replay(log)
    assert done.returncode == 1
    assert "bad.log:3" in done.stderr and "\\x1b]0;owned" in done.stderr
    assert raw_controls(done.stderr) == []


def test_the_cli_prints_an_input_error_escaped(tmp_path: Path, capsys: object) -> None:
    room = tmp_path / "room.json"
    room.write_text(json.dumps({"room_id": f"r{HOSTILE}"}), encoding="utf-8")
    assert main(["room", "verify", str(room)]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "room_id" in err and raw_controls(err) == []


def test_the_html_timeline_shows_controls_escaped(tmp_path: Path) -> None:
    log = write_log(tmp_path / "hostile.log", "download", hostile_events())
    page = tmp_path / "t.html"
    done = replay(log, "--html", page)
    assert done.returncode == 0, done.stderr
    html = page.read_text(encoding="utf-8")
    assert raw_controls(html) == []
    assert "\\x1b]0;owned" in html


def render(printer: object) -> str:
    """What rich writes for ``printer(console)`` (no styles, so every ESC would be the log's)."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=400)
    printer(console)  # type: ignore[operator]
    return out.getvalue()


def test_the_download_outputs_show_controls_escaped() -> None:
    events = hostile_events()
    failure = events[3].failure  # type: ignore[union-attr]

    def live(console: Console) -> None:
        progress = Progress(console=console, disable=True)
        display = download_cli._LiveDisplay(progress, console)
        for event in events:
            display.on_event(event)

    def summary(console: Console) -> None:
        table = download_cli._summary(
            {"chars/kfm": Path(f"/cache/{HOSTILE}")},
            {"chars/ryu": (failure,)},
            {"chars/kfm": f"https://m.example/{HOSTILE}"},
        )
        console.print(table)

    for printer in (live, summary):
        shown = render(printer)
        assert "\\x1b]0;owned" in shown
        assert raw_controls(shown) == []


def test_the_join_outputs_show_controls_escaped() -> None:
    def lines(console: Console) -> None:
        show, live = join_cli._viewer(False, console)
        assert live is None
        opened = ev.DownloadOpened(at=1.0, user_id="local", sizes={"chars/kfm": 10})
        show(opened)
        show(ev.MemberRefused(at=1.1, user_id="mallory", code="bad-answer", reason=HOSTILE))

    class Args:
        json = False

    def refused(console: Console) -> None:
        join_cli._fail(Args(), console, {"type": "error", "message": f"refused: {HOSTILE}"})  # type: ignore[arg-type]

    for printer in (lines, refused):
        shown = render(printer)
        assert "\\x1b]0;owned" in shown
        assert raw_controls(shown) == []


def test_describe_is_one_inert_line_for_every_hostile_event() -> None:
    for event in hostile_events():
        assert raw_controls(describe(event)) == [] and "\n" not in describe(event)


def test_serve_logs_a_hostile_peer_s_refusal_escaped(tmp_path: Path) -> None:
    command = ["-v", "serve", "--listen", "127.0.0.1:0", "--log-dir", str(tmp_path / "rooms")]
    serve = subprocess.Popen(
        [sys.executable, "-m", "matchlock", *command, "--transport", "tcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        assert serve.stdout is not None
        url = serve.stdout.readline().strip()
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as peer:
            peer.sendall(json.dumps({"type": HOSTILE}).encode() + b"\n")
            reply = peer.makefile("rb").readline()
        assert json.loads(reply)["code"] == "unknown-type"
    finally:
        serve.send_signal(signal.SIGINT)
        _, err = serve.communicate(timeout=30)
    assert "unknown-type" in err and "\\x1b]0;owned" in err, err
    assert raw_controls(err) == []


def test_room_verify_shows_a_hostile_signer_escaped(tmp_path: Path, capsys: object) -> None:
    room = signed_room("r1", ["alice"], {"chars/kfm": PinnedPiece(sha256="9f" * 32, size=10)})
    signatures = {**room.signatures, f"mallory{HOSTILE}": room.signatures["alice"]}
    path = tmp_path / "room.json"
    path.write_text(room.model_copy(update={"signatures": signatures}).model_dump_json())
    assert main(["room", "verify", str(path)]) == 1
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "mallory\\x1b]0;owned" in out and raw_controls(out) == []
