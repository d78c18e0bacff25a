"""Whole rooms in one process: real keys, real downloads from a real HTTP server on 127.0.0.1,
real logs; the members reach the host through the in-memory transport (the transports' own
contract tests run the same flow over websockets and TCP)."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from matchlock.app.hosting import RoomHost
from matchlock.app.joining import join
from matchlock.core import events as ev
from matchlock.core.config import MatchLockConfig, PinnedPiece, RoomConfig
from matchlock.core.errors import (
    JoinRefusedError,
    LogWriteError,
    RestrictionError,
    RoomIncompleteError,
    UsageError,
)
from matchlock.store.eventlog import EventLog, read_events, replay_file
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport.memory import memory_connector
from tests.app.room_content import DOJO, KFM, content
from tests.downloads.conftest import ContentServer, config, piece, sha256, zip_bytes

USERS = ("alice", "bob", "carol", "dave")


def match_lock(
    server: ContentServer, kfm_routes: tuple[str, ...] = ("missing", "ok")
) -> MatchLockConfig:
    return config(content(server, kfm_routes))


ROOM = signed_room(
    "match1",
    USERS,
    {
        "chars/kfm": PinnedPiece(sha256=sha256(KFM), size=len(KFM)),
        "stages/dojo": PinnedPiece(sha256=sha256(DOJO), size=len(DOJO)),
    },
)


async def member(
    host: RoomHost, tmp: Path, user: str, locks: MatchLockConfig, **options: Any
) -> dict[str, Path]:
    return await join(
        "memory://",
        room=ROOM,
        user_id=user,
        key=insecure_key(user),
        config=locks,
        dest=tmp / user / "cache",
        connect=memory_connector(host),
        retry_delay=0.05,
        **{"log_path": tmp / user / "room.log", **options},
    )


async def test_four_members_complete_a_room_with_real_downloads(
    server: ContentServer, tmp_path: Path
) -> None:
    host = RoomHost(tmp_path / "host")
    await host.start()
    locks = match_lock(server)
    results = await asyncio.gather(*(member(host, tmp_path, u, locks, deadline=30) for u in USERS))
    await host.stop()
    for user, folders in zip(USERS, results, strict=True):
        assert set(folders) == {"chars/kfm", "stages/dojo"}
        assert (folders["chars/kfm"] / "kfm.def").read_bytes().startswith(b"[Info]")
        assert str(folders["chars/kfm"]).startswith(str(tmp_path / user))
    final = replay_file(tmp_path / "host" / "match1.log").state
    assert final.status == "closed"
    assert all(m.status == "goodbye" for m in final.members.values())
    kfm = final.members["alice"].pieces["chars/kfm"]
    assert [f.url for f in kfm.failures] == [server.url("missing", "kfm.zip")]
    for user in USERS:  # every member's own log replays to the host's end state
        assert replay_file(tmp_path / user / "room.log").state == final


async def test_a_piece_failing_for_one_member_is_seen_by_all(
    server: ContentServer, tmp_path: Path
) -> None:
    host = RoomHost(tmp_path / "host")
    await host.start()
    good, broken = match_lock(server), match_lock(server, kfm_routes=("missing",))
    seen: list[str] = []
    runs = [
        member(host, tmp_path, "alice", good, deadline=5, on_event=lambda e: seen.append(e.type)),
        member(host, tmp_path, "bob", broken, deadline=5, retries=0, room_source="never"),
    ]  # bob asks no member: alice would give it (tests/app/test_peers*.py)
    outcomes = await asyncio.gather(*runs, return_exceptions=True)
    await host.stop()
    assert isinstance(
        outcomes[1], RoomIncompleteError
    ) and "bob could not install chars/kfm" in str(outcomes[1])
    assert "/missing/kfm.zip: HTTP 404" in str(outcomes[1])  # what was tried, and why
    assert isinstance(outcomes[0], RoomIncompleteError) and "did not complete within 5" in str(
        outcomes[0]
    )
    alice_view = outcomes[0].state
    assert alice_view.members["bob"].pieces["chars/kfm"].status == "error"
    assert alice_view.members["bob"].pieces["chars/kfm"].failures[0].reason
    assert "piece_failed" in seen


async def test_a_member_whose_config_differs_is_stopped_before_connecting(
    server: ContentServer, tmp_path: Path
) -> None:
    other = config(
        {
            "chars": {
                "mandatory": True,
                "pieces": {"kfm": piece(b"other bytes", server.url("ok", "kfm.zip"))},
            }
        }
    )
    host = RoomHost(None)
    with pytest.raises(RestrictionError) as caught:
        await member(host, tmp_path, "alice", other)
    text = str(caught.value)
    assert (
        "differs from the match-lock config's sha256 of chars/kfm" in text
        and "stages/dojo is not in the match-lock config" in text
    )


async def test_an_unexpected_user_is_refused(server: ContentServer, tmp_path: Path) -> None:
    host = RoomHost(None)
    await host.start()
    forged = ROOM.model_copy(
        update={"signatures": {**ROOM.signatures, "alice": ROOM.signatures["bob"]}}
    )
    with pytest.raises(JoinRefusedError) as caught:
        await join(
            "memory://",
            room=forged,
            user_id="alice",
            key=insecure_key("alice"),
            config=match_lock(server),
            dest=tmp_path,
            connect=memory_connector(host),
        )
    assert caught.value.code == "unsigned-config"
    await host.stop()


async def test_disconnect_and_rejoin_mid_download(server: ContentServer, tmp_path: Path) -> None:
    big = zip_bytes({"big.bin": random.Random(1).randbytes(1 << 20)})  # 1 MiB, served slowly
    server.add("big.zip", big)
    locks = config(
        {
            "chars": {
                "mandatory": True,
                "pieces": {"big": piece(big, server.url("slow", "big.zip"), unpack="zip")},
            }
        }
    )
    room = signed_room(
        "slow", ("alice", "bob"), {"chars/big": PinnedPiece(sha256=sha256(big), size=len(big))}
    )
    host = RoomHost(tmp_path / "host")
    await host.start()
    plain = memory_connector(host)
    cut: list[bool] = []

    class CutAfterProgress:
        """Bob's first connection: lost right after the room relays his first progress."""

        def __init__(self, conn: Any) -> None:
            self.conn = conn
            self.send_nowait, self.close = conn.send_nowait, conn.close

        async def recv(self) -> bytes:
            frame: bytes = await self.conn.recv()
            if b'"piece_progress","user_id":"bob"' in frame:
                await self.conn.close()
            return frame

    async def flaky(url: str) -> Any:
        conn = await plain(url)
        if cut:
            return conn
        cut.append(True)
        return CutAfterProgress(conn)

    async def run(user: str, connect: Any) -> dict[str, Path]:
        return await join(
            "memory://",
            room=room,
            user_id=user,
            key=insecure_key(user),
            config=locks,
            dest=tmp_path / user,
            log_path=tmp_path / f"{user}.log",
            connect=connect,
            retry_delay=0.05,
            deadline=30,
        )

    results = await asyncio.gather(run("bob", flaky), run("alice", plain))
    await host.stop()
    assert all(set(r) == {"chars/big"} for r in results)
    log = replay_file(tmp_path / "host" / "slow.log")
    assert log.state.status == "closed"
    bob_events = [
        (e.type, getattr(e, "reason", ""))
        for e in read_events(tmp_path / "host" / "slow.log").events
        if getattr(e, "user_id", "") == "bob"
    ]
    first_drop = bob_events.index(("member_disconnected", "connection closed"))
    assert ("member_joined", "") in bob_events[first_drop:]
    assert replay_file(tmp_path / "bob.log").state == log.state


async def test_an_embedded_installer_and_an_open_log(tmp_path: Path) -> None:
    """``install`` replaces the download engine; ``log`` is an open log ``join`` leaves open."""
    host = RoomHost(tmp_path / "host")
    await host.start()
    room = signed_room("embedded", ("alice",), {"chars/kfm": PinnedPiece(sha256="0" * 64, size=3)})
    installed: list[list[str]] = []

    async def install(keys: list[str], emit: Callable[[ev.Event], None]) -> dict[str, Path]:
        installed.append(keys)
        for key in keys:
            emit(ev.PieceStarted(at=0.0, user_id="local", piece=key))
            emit(ev.PieceFinished(at=0.0, user_id="local", piece=key, source="embedded"))
        return {key: tmp_path / "folder" for key in keys}

    log = await EventLog.create(tmp_path / "alice.log", "client/embedded/alice")
    locks = config({"chars": {"mandatory": True, "pieces": {"kfm": pinned_piece(room)}}})
    options: dict[str, Any] = dict(
        room=room, user_id="alice", key=insecure_key("alice"), config=locks, dest=tmp_path
    )
    with pytest.raises(UsageError, match="log_path or an open log"):
        await join("memory://", log=(log, []), log_path=tmp_path / "x.log", **options)
    connect = memory_connector(host)
    folders = await join("memory://", log=(log, []), install=install, connect=connect, **options)
    assert folders == {"chars/kfm": tmp_path / "folder"} and installed == [["chars/kfm"]]
    await log.append(ev.DownloadClosed(at=0.0))  # join left it open
    await log.close()
    await host.stop()
    assert replay_file(tmp_path / "host" / "embedded.log").state.status == "closed"


def pinned_piece(room: RoomConfig, key: str = "chars/kfm") -> dict[str, Any]:
    """A match-lock piece of the content ``room`` pins for ``key``, from a mirror never asked
    (the tests that use it install with their own ``install``)."""
    pinned = room.content[key]
    return {
        "sha256": pinned.sha256,
        "size": pinned.size,
        "resolvables": [{"url": "http://127.0.0.1:9/unused.zip"}],
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
async def test_a_member_whose_log_fills_its_disk_stops_with_that_error(
    server: ContentServer, tmp_path: Path
) -> None:
    """A member's own log on a real 8 KiB tmpfs: once the disk refuses a line the member stops
    with :class:`LogWriteError` naming its log (it does not take the disk's error for a lost
    connection and rejoin, appending after a torn line); the log reopens to a prefix of the
    host's."""
    host = RoomHost(tmp_path / "host")
    await host.start()
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(small)], check=True)
    try:
        locks = match_lock(server)
        others = [member(host, tmp_path, user, locks, deadline=30) for user in USERS[1:]]
        with pytest.raises(LogWriteError, match="No space left on device") as failed:
            await asyncio.gather(
                member(host, tmp_path, "alice", locks, deadline=30, log_path=small / "room.log"),
                *others,
            )
        assert failed.value.name.endswith("room.log")
        _, held = await EventLog.open(small / "room.log")
        assert held == read_events(tmp_path / "host" / "match1.log").events[: len(held)]
    finally:
        await host.stop()
        subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc (Linux)")
async def test_the_host_closes_an_ended_rooms_log_file(
    server: ContentServer, tmp_path: Path
) -> None:
    """A host holds a descriptor only for the logs of rooms being played: once a room has
    closed (its history complete and durable), its file is closed, and a late member is still
    welcomed from it."""
    host = RoomHost(tmp_path / "host")
    await host.start()
    log = tmp_path / "host" / "match1.log"

    def held() -> bool:
        links = (os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink())
        return str(log) in set(links)

    locks = match_lock(server)
    await asyncio.gather(*(member(host, tmp_path, u, locks, deadline=30) for u in USERS))
    async with asyncio.timeout(5):
        while held():
            await asyncio.sleep(0.01)
    assert replay_file(log).state.status == "closed"
    late = await member(host, tmp_path / "late", "alice", locks, deadline=30)
    assert set(late) == {"chars/kfm", "stages/dojo"}
    await host.stop()


async def test_a_room_the_host_aborts_ends_the_join_with_its_reason(
    server: ContentServer, tmp_path: Path
) -> None:
    """Found by an outside tester: a member that heard ``room_aborted`` reconnected for ever
    (the host welcomes it to the ended room, read only, and closes; it tried again)."""
    host = RoomHost(None)
    await host.start()
    joining = asyncio.create_task(member(host, tmp_path, "alice", match_lock(server)))
    async with asyncio.timeout(10):
        while "alice" not in getattr(host.core.rooms.get("match1"), "members", {}):
            await asyncio.sleep(0.01)
    host.abort("match1", "the host is shutting down")
    with pytest.raises(RoomIncompleteError, match="the host aborted it: the host is shutting"):
        async with asyncio.timeout(10):
            await joining
    with pytest.raises(RoomIncompleteError, match="the host had aborted it"):  # its log says so
        async with asyncio.timeout(10):
            await member(host, tmp_path, "alice", match_lock(server))
    await host.stop()
