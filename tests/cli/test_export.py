"""``matchlock replay nats://HOST:4222/ROOM_ID`` and ``matchlock export``: a room recorded
through a real ``matchlock serve --store nats://`` (two members, real downloads) is read
straight from a real ``nats-server -js`` stream, verified, drawn, and exported as a log file
that verifies like any other, with the very lines (so the same chain) the stream holds; a file
log exports as a verified copy; a damaged log is refused with nothing written."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from pathlib import Path

import pytest

from matchlock.app.joining import join
from matchlock.cli import main
from matchlock.core.config import PinnedPiece
from matchlock.store.eventlog import replay_file
from matchlock.store.nats import NatsRepository
from matchlock.tools.testing import insecure_key, signed_room
from tests.app.room_content import DOJO, KFM, content
from tests.downloads.conftest import ContentServer, config, sha256
from tests.store.nats_server import NatsServer, free_port, nats_server_fixture
from tests.transport.test_serve import start_serve

__all__ = ["nats_server_fixture"]

REPLAY_LOGS = Path(__file__).resolve().parents[2] / "replay-logs"
USERS = ("alice", "bob")


async def record_room(nats: NatsServer, server: ContentServer, tmp: Path) -> list[bytes]:
    """Two members complete a room over a real ``serve --store nats://``; the stream's lines."""
    pinned = {
        "chars/kfm": PinnedPiece(sha256=sha256(KFM), size=len(KFM)),
        "stages/dojo": PinnedPiece(sha256=sha256(DOJO), size=len(DOJO)),
    }
    room = signed_room("streamed", USERS, pinned)
    lock = config(content(server, ("ok",)))
    process, url = await start_serve("--listen", "127.0.0.1:0", "--store", nats.url)
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(
                *(
                    join(url, room=room, user_id=user, key=insecure_key(user), config=lock,
                         dest=tmp / user, retry_delay=0.05, deadline=25)
                    for user in USERS
                )
            )  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await process.communicate()
    repository = NatsRepository(nats.url)
    try:
        return list(repository.store("streamed").read())
    finally:
        await repository.close()


async def matchlock(*argv: str) -> int:
    """The command line, in a thread (it runs its own event loops)."""
    return await asyncio.to_thread(main, list(argv))


async def test_a_room_in_the_stream_replays_and_exports_as_a_log_file(
    nats_server: NatsServer,
    server: ContentServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    streamed = await record_room(nats_server, server, tmp_path)
    address = f"{nats_server.url}/streamed"
    capsys.readouterr()

    assert await matchlock("replay", address, "--verify") == 0
    verified = capsys.readouterr().out
    assert f"ok: {len(streamed) - 1} events, chain intact" in verified
    assert await matchlock("replay", address) == 0
    timeline = capsys.readouterr().out
    assert "alice joined" in timeline and "closed" in timeline
    page = tmp_path / "streamed.html"
    assert await matchlock("replay", address, "--html", str(page)) == 0
    assert f"{address}" in page.read_text()  # the page names where the log came from

    out = tmp_path / "streamed.log"
    assert await matchlock("export", address, "--out", str(out)) == 0
    assert f"{len(streamed) - 1} events from" in capsys.readouterr().out
    assert out.read_bytes() == b"".join(streamed)  # the very lines: the same chain
    state = replay_file(out).state
    assert state.status == "closed"
    assert {u: m.status for u, m in state.members.items()} == dict.fromkeys(USERS, "goodbye")
    assert await matchlock("replay", str(out), "--verify") == 0
    assert capsys.readouterr().out.split(", last hash")[1] == verified.split(", last hash")[1]

    assert await matchlock("export", address, "--out", str(out)) == 2  # --out exists
    assert "--force replaces it" in capsys.readouterr().err
    assert await matchlock("export", f"{nats_server.url},{nats_server.url}/streamed",
                           "--out", str(out), "--force") == 0  # fmt: skip


async def test_a_room_the_stream_lacks_is_named(
    nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await matchlock("replay", f"{nats_server.url}/nobody", "--verify") == 2
    assert "/nobody: no such log" in capsys.readouterr().err
    out = tmp_path / "x.log"
    assert await matchlock("export", f"{nats_server.url}/nobody", "--out", str(out)) == 2
    assert not out.exists()


async def test_an_unreachable_nats_server_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    assert await matchlock("replay", f"{url}/r1") == 2
    assert f"{url}: cannot reach NATS" in capsys.readouterr().err


@pytest.mark.parametrize(
    "address", ["nats://127.0.0.1:4222", "nats://127.0.0.1:4222/", "nats://h:1/a/b", "nats:///r"]
)
def test_a_nats_address_without_a_room_is_refused(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", address]) == 2
    assert "nats://HOST:4222/ROOM_ID" in capsys.readouterr().err


def test_without_nats_py_a_stream_address_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "matchlock.store.nats", raising=False)
    monkeypatch.setitem(sys.modules, "nats", None)  # as if nats-py were not installed
    assert main(["replay", "nats://127.0.0.1:4222/r1"]) == 2
    assert "needs nats: pip install 'matchlock[nats]'" in capsys.readouterr().err


def test_a_file_log_exports_as_a_verified_copy(tmp_path: Path) -> None:
    source = REPLAY_LOGS / "happy-room.log"
    out = tmp_path / "copy.log"
    assert main(["export", str(source), "--out", str(out)]) == 0
    assert out.read_bytes() == source.read_bytes()


def test_a_torn_last_line_is_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = (REPLAY_LOGS / "happy-room.log").read_bytes()
    lines = whole.splitlines(keepends=True)
    torn = tmp_path / "torn.log"
    torn.write_bytes(b"".join(lines[:-1]) + lines[-1][:30])
    out = tmp_path / "out.log"
    assert main(["export", str(torn), "--out", str(out)]) == 0
    assert f"{torn}:{len(lines)}: torn by a crash (30 bytes)" in capsys.readouterr().err
    assert out.read_bytes() == b"".join(lines[:-1])
    assert main(["replay", str(out), "--verify"]) == 0


def test_a_damaged_log_is_refused_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (REPLAY_LOGS / "happy-room.log").read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"at":', b'"at": ', 1)  # its hash no longer matches
    damaged = tmp_path / "damaged.log"
    damaged.write_bytes(b"".join(lines))
    out = tmp_path / "out.log"
    assert main(["export", str(damaged), "--out", str(out)]) == 1
    assert f"{damaged}:4" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == [damaged]
    shutil.copy(REPLAY_LOGS / "happy-room.log", out)
    assert main(["export", str(damaged), "--out", str(out), "--force"]) == 1
    assert out.read_bytes() == (REPLAY_LOGS / "happy-room.log").read_bytes()  # untouched
