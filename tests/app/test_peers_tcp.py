"""Pieces from room members over direct TCP on 127.0.0.1: the holder hosting the room in its own
process (``matchlock join --host``, its member reaching the room in memory) and giving the piece
to a member that joined over TCP; the holder not hosting (a room host of its own, both members
over TCP); and a holder killed (SIGKILL, mid-transfer, slowed by ``--upload-limit``) whose
receiver resumes from the bytes it holds once the holder is back; and a hosting player started
with ``--no-serve``, whose piece nobody else can then get."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from matchlock.app.hosting import RoomHost
from matchlock.app.keys import save_keypair
from matchlock.core import events as ev
from matchlock.core.config import MatchLockConfig, PinnedPiece
from matchlock.core.errors import RoomIncompleteError, UsageError
from matchlock.store.eventlog import read_events
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport.connect import listen
from tests.app.content_files import free_port
from tests.app.peer_rooms import lock, member, room_of, sources, transfers
from tests.app.room_content import KFM_DEF
from tests.downloads.conftest import ContentServer, config, piece, sha256

REPO = Path(__file__).resolve().parents[2]


def write_player(folder: Path, user: str, room_json: str, lock_json: str) -> list[str]:
    """The files ``matchlock join`` needs for ``user``; its flags for them."""
    folder.mkdir(parents=True, exist_ok=True)
    save_keypair(insecure_key(user), folder / f"{user}.key")
    (folder / "room.json").write_text(room_json)
    (folder / "matchlock.json").write_text(lock_json)
    return [
        *(
            "--room",
            str(folder / "room.json"),
            "--user",
            user,
            "--key",
            str(folder / f"{user}.key"),
        ),
        *("--config", str(folder / "matchlock.json"), "--dest", str(folder / "cache")),
        *("--log", str(folder / "room.log"), "--json", "--retry-delay", "0.1"),
    ]


async def start(*args: str) -> asyncio.subprocess.Process:
    """``python -m matchlock ARGS``, as a player runs it."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "matchlock", *args, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def lock_json(lock: MatchLockConfig) -> str:
    return lock.model_dump_json()


async def test_the_hosting_player_gives_a_piece_over_direct_tcp(
    server: ContentServer, tmp_path: Path
) -> None:
    room = room_of("tcp-hosting", ("alice", "bob"))
    url = f"tcp://127.0.0.1:{free_port()}"
    flags = write_player(
        tmp_path / "alice", "alice", room.model_dump_json(), lock_json(lock(server, "ok"))
    )
    alice = await start("join", url, "--host", "--deadline", "40", *flags)
    try:
        async with asyncio.timeout(45):
            bob = await member(url, room, "bob", lock(server, "missing"), tmp_path)
            _, err = await alice.communicate()
    finally:
        if alice.returncode is None:
            alice.kill()
            await alice.wait()
    assert alice.returncode == 0, err.decode()
    assert (bob["chars/kfm"] / "kfm.def").read_bytes() == KFM_DEF
    assert sources(tmp_path / "bob" / "room.log")["chars/kfm"] == "room:alice"
    served = transfers(tmp_path / "alice" / "room.log")
    assert [(e.type, e.outcome) for e in served] == [("transfer_served", "sent")]


async def test_a_holder_that_does_not_host_gives_a_piece_over_tcp(
    server: ContentServer, tmp_path: Path
) -> None:
    room = room_of("tcp-member", ("alice", "bob"))
    host = RoomHost(tmp_path / "host")
    await host.start()
    listener = await listen("tcp://127.0.0.1:0", host)
    try:
        async with asyncio.timeout(40):
            await asyncio.gather(
                member(listener.url, room, "alice", lock(server, "ok"), tmp_path),
                member(listener.url, room, "bob", lock(server, "missing"), tmp_path),
            )
    finally:
        await listener.close()
        await host.stop()
    assert sources(tmp_path / "bob" / "room.log")["chars/kfm"] == "room:alice"


async def test_a_holder_killed_mid_transfer_is_resumed_from_the_bytes_held(
    server: ContentServer, tmp_path: Path
) -> None:
    big = os.urandom(3 * 1024 * 1024)
    server.add("big.bin", big)
    pinned = {"blobs/big": PinnedPiece(sha256=sha256(big), size=len(big))}
    room = signed_room("tcp-kill", ("alice", "bob"), pinned)

    def blob_lock(route: str) -> MatchLockConfig:
        pieces = {"big": piece(big, server.url(route, "big.bin"))}
        return config({"blobs": {"mandatory": True, "pieces": pieces}})

    host = RoomHost(tmp_path / "host")
    await host.start()
    listener = await listen("tcp://127.0.0.1:0", host)
    flags = write_player(
        tmp_path / "alice", "alice", room.model_dump_json(), lock_json(blob_lock("ok"))
    )
    slow = ("--upload-limit", str(1024 * 1024), "--deadline", "60")
    alice = await start("join", listener.url, *slow, *flags)
    try:
        async with asyncio.timeout(60):
            bob = asyncio.create_task(
                member(listener.url, room, "bob", blob_lock("missing"), tmp_path)
            )
            while not _bob_has_bytes(tmp_path / "bob" / "room.log"):
                await asyncio.sleep(0.05)
            alice.send_signal(signal.SIGKILL)
            await alice.wait()
            alice = await start("join", listener.url, *slow, *flags)  # alice comes back
            folders = await bob
            await alice.wait()
    finally:
        if alice.returncode is None:
            alice.kill()
            await alice.wait()
        await listener.close()
        await host.stop()
    assert (folders["blobs/big"] / "big.bin").read_bytes() == big
    received = [
        e for e in transfers(tmp_path / "bob" / "room.log") if isinstance(e, ev.TransferReceived)
    ]
    assert received[0].outcome == "cut" and received[0].bytes > 0
    assert received[-1].outcome == "verified"
    assert received[-1].offset > 0  # the last transfer went on from the bytes bob held
    assert sources(tmp_path / "bob" / "room.log")["blobs/big"] == "room:alice"


def _bob_has_bytes(log: Path) -> bool:
    if not log.exists():
        return False
    return any(
        isinstance(e, ev.PieceProgress) and e.user_id == "bob" and e.done > 0
        for e in read_events(log).events
    )


async def test_the_hosting_player_started_with_no_serve_gives_nothing(
    server: ContentServer, tmp_path: Path
) -> None:
    room = room_of("tcp-no-serve", ("alice", "bob"))
    url = f"tcp://127.0.0.1:{free_port()}"
    config = lock_json(lock(server, "ok"))
    flags = write_player(tmp_path / "alice", "alice", room.model_dump_json(), config)
    alice = await start("join", url, "--host", "--no-serve", "--deadline", "40", *flags)
    try:
        async with asyncio.timeout(45):
            with pytest.raises(RoomIncompleteError, match="no other member of the room holds"):
                await member(url, room, "bob", lock(server, "missing"), tmp_path)
    finally:
        alice.kill()
        await alice.wait()
    assert transfers(tmp_path / "alice" / "room.log") == []  # asked nothing, served nothing


async def test_an_upload_limit_that_is_not_above_zero_is_refused(
    server: ContentServer, tmp_path: Path
) -> None:
    room = room_of("tcp-limit", ("alice", "bob"))
    flags = write_player(tmp_path / "alice", "alice", room.model_dump_json(), '{"collections": {}}')
    url = f"tcp://127.0.0.1:{free_port()}"
    alice = await start("join", url, "--upload-limit", "0", "--deadline", "5", *flags)
    _, err = await alice.communicate()
    assert alice.returncode == 2, err.decode()
    assert "--upload-limit: a number of bytes a second above 0, not '0'" in err.decode()
    with pytest.raises(UsageError, match="an upload limit is a number of bytes a second above 0"):
        await member(url, room, "bob", lock(server, "ok"), tmp_path, upload_limit=0)
