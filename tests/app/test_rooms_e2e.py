"""Whole rooms over real sockets on 127.0.0.1, end to end: four members joining a room host over
websockets with :func:`matchlock.app.joining.join`, and four players over direct TCP driven through
the command line exactly as the README tells a user to, one of them hosting the room in its own
process. Real Ed25519 keys, real zip downloads from a real HTTP server (one mirror answering 404
before the good one), real logs that replay to the room's end state.

``tests/app/test_join.py`` plays the same rooms over the in-memory transport; these prove the real
transports and the command line carry them the whole way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from matchlock.app.configfile import load_room_config
from matchlock.app.hosting import RoomHost
from matchlock.app.joining import join
from matchlock.core.config import MatchLockConfig, PinnedPiece
from matchlock.core.fingerprint import content_fingerprint
from matchlock.core.room import RoomState
from matchlock.store.eventlog import replay_file
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport.connect import listen
from tests.app.room_content import DOJO, DOJO_DEF, KFM, KFM_DEF, content
from tests.downloads.conftest import ContentServer, config, sha256

REPO = Path(__file__).resolve().parents[2]
USERS = ("alice", "bob", "carol", "dave")
PIECES = {"chars/kfm", "stages/dojo"}
UNREACHABLE_KFM = ("missing", "ok")
"""Some members' kfm resolvables: a mirror answering 404 first, then a good one."""


def assert_installed(folders: dict[str, Path], under: Path) -> None:
    """Every room piece unpacked with its real content, inside this member's own folder."""
    assert set(folders) == PIECES
    assert (folders["chars/kfm"] / "kfm.def").read_bytes() == KFM_DEF
    assert (folders["stages/dojo"] / "dojo.def").read_bytes() == DOJO_DEF
    for folder in folders.values():
        assert folder.resolve().is_relative_to(under.resolve()), (folder, under)


def assert_closed_with_everyone(
    state: RoomState, server: ContentServer, failed_first: set[str]
) -> None:
    """The room closed after every member said goodbye with both pieces from the good mirror;
    the 404 is recorded for exactly the members whose configs listed it first."""
    assert state.status == "closed"
    assert set(state.members) == set(USERS)
    for user, member in state.members.items():
        assert member.status == "goodbye", user
        assert {k: p.status for k, p in member.pieces.items()} == dict.fromkeys(PIECES, "finished")
        kfm = member.pieces["chars/kfm"]
        assert kfm.source == server.url("ok", "kfm.zip")
        missed = [server.url("missing", "kfm.zip")] if user in failed_first else []
        assert [f.url for f in kfm.failures] == missed, user


# -- four members over websockets ---------------------------------------------------------------


async def test_four_members_complete_a_room_over_websockets(
    server: ContentServer, tmp_path: Path
) -> None:
    pinned = {
        "chars/kfm": PinnedPiece(sha256=sha256(KFM), size=len(KFM)),
        "stages/dojo": PinnedPiece(sha256=sha256(DOJO), size=len(DOJO)),
    }
    room = signed_room("ws-room", USERS, pinned)
    failed_first = {"alice", "carol"}
    locks: dict[str, MatchLockConfig] = {
        user: config(content(server, UNREACHABLE_KFM if user in failed_first else ("ok",)))
        for user in USERS
    }
    host = RoomHost(tmp_path / "host")
    await host.start()
    listener = await listen("ws://127.0.0.1:0", host)
    try:
        assert listener.url.startswith("ws://127.0.0.1:")
        async with asyncio.timeout(20):
            results = await asyncio.gather(
                *(
                    join(
                        listener.url,
                        room=room,
                        user_id=user,
                        key=insecure_key(user),
                        config=locks[user],
                        dest=tmp_path / user / "cache",
                        log_path=tmp_path / user / "room.log",
                        retry_delay=0.05,
                        deadline=15,
                    )
                    for user in USERS
                )
            )
    finally:
        await listener.close()
        await host.stop()

    for user, folders in zip(USERS, results, strict=True):
        assert_installed(folders, tmp_path / user)
    assert len(server.asked("kfm.zip")) == len(USERS) + len(failed_first)
    final = replay_file(tmp_path / "host" / "ws-room.log").state
    assert_closed_with_everyone(final, server, failed_first)
    for user in USERS:  # what each member saw is what the host decided
        assert replay_file(tmp_path / user / "room.log").state == final


# -- four players over direct TCP, through the command line, one of them hosting ----------------


def free_port() -> int:
    """A port of 127.0.0.1 nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def start_matchlock(folder: Path, *args: str) -> asyncio.subprocess.Process:
    """``python -m matchlock ARGS`` run in ``folder``, as a player would from a terminal."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "matchlock", *args,
        cwd=folder, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def finish(process: asyncio.subprocess.Process, timeout: float) -> tuple[str, str]:
    """Wait for ``process`` to exit; its stdout and stderr."""
    async with asyncio.timeout(timeout):
        out, err = await process.communicate()
    return out.decode(), err.decode()


async def matchlock_ok(folder: Path, *args: str) -> None:
    """Run one short ``matchlock`` command to completion; it must succeed."""
    process = await start_matchlock(folder, *args)
    try:
        out, err = await finish(process, 20)
    finally:
        await stop(process)
    assert process.returncode == 0, (args, out, err)


async def stop(process: asyncio.subprocess.Process) -> None:
    """Kill ``process`` if it is still running, and reap it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def write_signed_room(folder: Path, server: ContentServer) -> None:
    """The README's steps: a key pair per player, the shared match-lock config, the room config
    with every player, and each player's signature on it, in turn."""
    await asyncio.gather(*(matchlock_ok(folder, "keygen", "--out", f"{u}.key") for u in USERS))
    (folder / "matchlock.json").write_text(
        json.dumps({"collections": content(server, UNREACHABLE_KFM)})
    )
    players = [arg for user in USERS for arg in ("--user", f"{user}={user}.key.pub")]
    await matchlock_ok(
        folder, "room", "new", "--room-id", "tcp-room", "--config", "matchlock.json", *players,
        "--out", "room.json",
    )  # fmt: skip
    for user in USERS:
        await matchlock_ok(
            folder, "room", "sign", "room.json", "--user", user, "--key", f"{user}.key"
        )


def json_lines(out: str, user: str) -> list[dict[str, Any]]:
    """Every stdout line of a ``--json`` join, parsed (any other line fails the test)."""
    lines = out.splitlines()
    assert lines, f"{user} printed nothing"
    parsed: list[dict[str, Any]] = [json.loads(line) for line in lines]
    return parsed


async def test_four_players_complete_a_room_over_tcp_one_hosting_from_the_command_line(
    server: ContentServer, tmp_path: Path
) -> None:
    await write_signed_room(tmp_path, server)
    url = f"tcp://127.0.0.1:{free_port()}"
    common: tuple[str, ...] = ("--room", "room.json", "--config", "matchlock.json", "--json")
    common += ("--deadline", "20", "--retry-delay", "0.2")

    def player(user: str) -> tuple[str, ...]:
        mine = ("--user", user, "--key", f"{user}.key", "--dest", f"{user}/cache")
        return ("join", url, *common, *mine, "--log", f"{user}/room.log")

    hosting, *others = USERS
    processes: dict[str, asyncio.subprocess.Process] = {}
    try:
        for user in others:  # launched first: they retry until the host listens
            processes[user] = await start_matchlock(tmp_path, *player(user))
        host_args = ("--host", "--host-log-dir", "host-logs")
        processes[hosting] = await start_matchlock(tmp_path, *player(hosting), *host_args)
        outputs = await asyncio.gather(*(finish(processes[u], 25) for u in USERS))
    finally:
        for process in processes.values():
            await stop(process)

    fingerprint = content_fingerprint(load_room_config(tmp_path / "room.json")).as_json()
    for user, (out, err) in zip(USERS, outputs, strict=True):
        assert processes[user].returncode == 0, (user, out, err)
        *events, result = json_lines(out, user)
        assert result["type"] == "result" and set(result) == {"type", "folders", "fingerprint"}
        assert result["fingerprint"] == fingerprint, user  # the same content for everyone
        assert_installed({k: Path(v) for k, v in result["folders"].items()}, tmp_path / user)
        assert {line["type"] for line in events} == {"event"}
        joined = {e["event"]["user_id"] for e in events if e["event"]["type"] == "member_joined"}
        assert joined == set(USERS), user  # everyone saw everyone
        assert events[-1]["event"]["type"] == "room_closed"
    final = replay_file(tmp_path / "host-logs" / "tcp-room.log").state
    assert_closed_with_everyone(final, server, failed_first=set(USERS))
    for user in USERS:
        assert replay_file(tmp_path / user / "room.log").state == final
