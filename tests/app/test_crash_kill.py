"""Issue 9's property with real processes: rooms complete across SIGKILLs.

Each iteration runs a real room of three ``matchlock join`` processes downloading from a slow
HTTP server on 127.0.0.1, hosted either by a real ``matchlock serve`` (websocket) or by one of
the players (``matchlock join tcp://... --host``, direct TCP). Seeded from the iteration's
number, it SIGKILLs the host (and sometimes a member) at moments chosen by what the logs hold
(after so many events, or right after an event of a given kind reached the log: a join, a
finish, a goodbye, the close), then restarts it on the same port, with the same log folder (a
member with the same ``--log`` and ``--dest``). Every fourth seed's ``matchlock serve`` keeps a
journal whose halves hold 1 KiB of records (``--journal-size 5120``), so that it switches
halves, and checkpoints in its thread, every few records. Then it checks the property:

- every member exits 0 with the same ``piece -> folder`` map (each folder inside its own cache);
- the host's log replays to a closed room where every member said goodbye;
- every event a member's ``--log`` holds is in the host's log, in the same order, the same;
- no correct member is ever refused (no ``member_refused`` in the host's log);
- nothing installed by halves: under each cache, only the result's folders and ``.matchlock``
  (whose ``tmp/`` holds downloads in progress and staging folders, as docs/downloads.md says).

A failing iteration names its seed and its folders (host log, member logs, outputs);
``MATCHLOCK_CRASH_SEED=S`` runs from seed S, ``MATCHLOCK_CRASH_ITERATIONS=N`` runs N (a soak).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from matchlock.app.configfile import write_room_config
from matchlock.app.keys import save_keypair
from matchlock.core.config import PinnedPiece
from matchlock.store.eventlog import read_events, replay_file
from matchlock.tools.testing import insecure_key, signed_room
from tests.app.room_content import DOJO, KFM, KFM_DEF
from tests.app.test_rooms_e2e import REPO, free_port
from tests.downloads.conftest import ContentServer, piece, sha256, zip_bytes

ITERATIONS = int(
    os.environ.get("MATCHLOCK_CRASH_ITERATIONS", "10" if os.environ.get("CI") else "8")
)
FIRST_SEED = int(os.environ.get("MATCHLOCK_CRASH_SEED", "0"))
USERS = ("alice", "bob", "carol")
BIG = zip_bytes({"big.sff": random.Random(9).randbytes(512 << 10)})


def write_lock(path: Path, server: ContentServer, big: bytes, *, kfm_route: str) -> None:
    """Write the members' match-lock config: kfm through ``kfm_route``, ``big`` (a piece long
    enough to be killed in the middle of) through the slow route, dojo at once."""
    collections = {
        "chars": {
            "mandatory": True,
            "pieces": {
                "kfm": piece(KFM, server.url(kfm_route, "kfm.zip"), unpack="zip"),
                "big": piece(big, server.url("slow", "big.zip"), unpack="zip"),
            },
        },
        "stages": {
            "mandatory": True,
            "pieces": {"dojo": piece(DOJO, server.url("ok", "dojo.zip"), unpack="zip")},
        },
    }
    path.write_text(json.dumps({"collections": collections}))
ROOM = signed_room(
    "crash-room",
    USERS,
    {
        key: PinnedPiece(sha256=sha256(data), size=len(data))
        for key, data in (("chars/kfm", KFM), ("chars/big", BIG), ("stages/dojo", DOJO))
    },
)
MOMENTS = {
    "member_joined": 3,
    "piece_started": 9,
    "piece_progress": 1,
    "piece_finished": 9,
    "member_done": 3,
    "room_all_done": 1,
    "member_goodbye": 3,
    "room_closed": 1,
}
"""Kinds of event right after whose n-th a process may be killed (as they reach its log), and
how many of each a room has (three members, three pieces each)."""


@pytest.fixture
async def slow_server() -> AsyncIterator[ContentServer]:
    """The room's pieces on a real HTTP server; the big one served slowly."""
    content = ContentServer()
    for name, data in (("kfm.zip", KFM), ("big.zip", BIG), ("dojo.zip", DOJO)):
        content.add(name, data)
    await content.start()
    yield content
    await content.stop()


@dataclass
class Process:
    """One restartable ``python -m matchlock`` command, its output drained as it runs."""

    name: str
    args: tuple[str, ...]
    cwd: Path
    runs: list[tuple[int, str, str]] = field(default_factory=list)
    _proc: asyncio.subprocess.Process | None = None
    _output: asyncio.Task[tuple[bytes, bytes]] | None = None

    async def start(self, first_line: bool = False) -> str:
        """Start it; with ``first_line``, wait for its first stdout line and return it."""
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "matchlock", *self.args,
            cwd=self.cwd, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        line = b""
        if first_line:
            assert self._proc.stdout is not None
            async with asyncio.timeout(20):
                line = await self._proc.stdout.readline()
        self._output = asyncio.create_task(self._proc.communicate())
        return line.decode()

    @property
    def running(self) -> bool:
        """Whether the current run has not exited yet."""
        return self._proc is not None and self._proc.returncode is None

    async def stop(self) -> None:
        """SIGTERM the current run (a clean stop) and reap it."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        await self.wait()

    async def kill(self) -> None:
        """SIGKILL the current run (a crash: no flush, no goodbye) and reap it."""
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGKILL)
        await self.wait()

    async def wait(self) -> tuple[int, str, str]:
        """Wait for the current run to exit; its exit code and output (kept in ``runs``)."""
        assert self._proc is not None and self._output is not None
        out, err = await self._output
        code = await self._proc.wait()
        self.runs.append((code, out.decode(), err.decode()))
        for stream, text in (("out", out), ("err", err)):  # kept for a look at a failure
            (self.cwd / f"{self.name}-run{len(self.runs)}.{stream}").write_bytes(text)
        return self.runs[-1]


def events_in(path: Path) -> list[dict[str, Any]]:
    """The events of a log file as it is now (a torn last line is left out)."""
    try:
        lines = path.read_bytes().splitlines()[1:]
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        with contextlib.suppress(ValueError):
            found.append(json.loads(line)["event"])
    return found


def moment(
    rng: random.Random, user: str | None, after: int = 0
) -> Callable[[list[dict[str, Any]]], bool]:
    """A seeded moment of a log: after so many events (more than ``after``), or right after the
    n-th event of a kind (``user``'s own, for a member's log)."""
    if after or rng.random() < 0.3:
        count = after + rng.randint(1, 35)
        return lambda events: len(events) >= count
    kind = rng.choice(sorted(MOMENTS))
    most = MOMENTS[kind]
    if user is not None:  # in a member's log: its own events, or the room's
        most = min(most, 3 if kind.startswith("piece") else 1)
    nth = rng.randint(1, most)

    def reached(events: list[dict[str, Any]]) -> bool:
        about: list[str | None] = [e.get("user_id", user) for e in events if e["type"] == kind]
        return sum(user is None or who == user for who in about) >= nth

    return reached


class Iteration:
    """One seeded room: its processes, the kills, and the checks."""

    def __init__(self, seed: int, tmp: Path, server: ContentServer) -> None:
        self.seed, self.tmp, self.rng = seed, tmp, random.Random(seed)
        self.transport = ("ws", "tcp")[seed % 2]
        port = free_port()
        self.url = f"{self.transport}://127.0.0.1:{port}"
        self.host_logs = tmp / "host-logs"
        self.kills: list[str] = []
        write_room_config(ROOM, tmp / "room.json")
        write_lock(tmp / "matchlock.json", server, BIG, kfm_route="slow")
        self.members = {user: Process(user, self._join_args(user), tmp) for user in USERS}
        if self.transport == "ws":
            logs = str(self.host_logs)
            listen: tuple[str, ...] = ("--listen", f"127.0.0.1:{port}", "--log-dir", logs)
            if seed % 4 == 0:  # halves of 1 KiB: the journal switches every few records
                listen += ("--journal-size", "5120")
            self.host = Process("serve", ("serve", *listen), tmp)
        else:  # alice hosts the room in her own process
            hosting = ("--host", "--host-log-dir", str(self.host_logs))
            self.host = self.members["alice"]
            self.host.args += hosting

    def _join_args(self, user: str) -> tuple[str, ...]:
        save_keypair(insecure_key(user), self.tmp / f"{user}.key", overwrite=True)
        return (
            "join", self.url, "--room", "room.json", "--config", "matchlock.json", "--json",
            "--user", user, "--key", f"{user}.key", "--dest", f"{user}/cache",
            "--log", f"{user}/room.log", "--deadline", "40", "--retry-delay", "0.1",
        )  # fmt: skip

    async def run(self) -> None:
        """Start everything, kill and restart at the seeded moments, wait for every member."""
        if self.host is not self.members["alice"]:
            await self.host.start(first_line=True)
        for member in self.members.values():
            await member.start()
        chaos = [self._crash_host()]
        victim = self.rng.choice([u for u in USERS if self.members[u] is not self.host])
        if self.rng.random() < 0.5:
            log = self.tmp / victim / "room.log"
            chaos.append(self._kill_at(self.members[victim], log, moment(self.rng, victim), victim))
        async with asyncio.timeout(120):
            await asyncio.gather(*chaos)
            await asyncio.gather(*(m.wait() for m in self.members.values()))
        if self.host not in self.members.values():
            await self.host.stop()

    async def _crash_host(self) -> None:
        """Kill the host once or twice, each time at a seeded moment of its log."""
        log = self.host_logs / f"{ROOM.room_id}.log"
        await self._kill_at(self.host, log, moment(self.rng, None), "host")
        if self.kills and self.rng.random() < 0.4:
            later = moment(self.rng, None, after=len(events_in(log)))
            await self._kill_at(self.host, log, later, "host again")

    async def _kill_at(
        self, process: Process, log: Path, when: Callable[[list[dict[str, Any]]], bool], who: str
    ) -> None:
        """Kill ``process`` once ``log`` holds the moment ``when`` (unless the room is over
        first), then start it again after a seeded pause."""
        while not when(events_in(log)):
            if not any(m.running for m in self.members.values()):
                return
            await asyncio.sleep(0.005)
        if not process.running:
            return
        await process.kill()
        self.kills.append(f"{who} after event {len(events_in(log))}")
        await asyncio.sleep(self.rng.uniform(0, 0.3))
        await process.start(first_line=process not in self.members.values())

    def check(self) -> None:
        """The property (see the module docstring)."""
        maps = {}
        for user, member in self.members.items():
            code, out, err = member.runs[-1]
            assert code == 0, f"{user} exited {code}:\n{out[-2000:]}\n{err[-3000:]}"
            result = json.loads(out.splitlines()[-1])
            assert result["type"] == "result", result
            cache = (self.tmp / user / "cache").resolve()
            folders = {k: Path(v).relative_to(cache) for k, v in result["folders"].items()}
            maps[user] = folders
            assert (cache / folders["chars/kfm"] / "kfm.def").read_bytes() == KFM_DEF
            left = {p.name for p in cache.iterdir()} - {".matchlock"}
            assert left == {str(f) for f in folders.values()}, f"{user}'s cache holds {left}"
        assert all(m == maps["alice"] for m in maps.values()), maps
        host_log = self.host_logs / f"{ROOM.room_id}.log"
        state = replay_file(host_log).state
        assert state.status == "closed", state.status
        assert {u: m.status for u, m in state.members.items()} == dict.fromkeys(USERS, "goodbye")
        hosts = read_events(host_log).events
        refused = [e for e in hosts if e.type == "member_refused"]
        assert not refused, f"correct members were refused: {refused}"
        for user in USERS:
            heard = read_events(self.tmp / user / "room.log").events
            assert heard == hosts[: len(heard)], f"{user}'s log is not the host's"


def seeds() -> list[int]:
    return list(range(FIRST_SEED, FIRST_SEED + ITERATIONS))


@pytest.mark.parametrize("seed", seeds())
async def test_rooms_complete_across_sigkills(
    slow_server: ContentServer, tmp_path: Path, seed: int
) -> None:
    iteration = Iteration(seed, tmp_path, slow_server)
    try:
        await iteration.run()
        iteration.check()
        print(f"seed {seed} ({iteration.transport}): kills {iteration.kills}")
    except BaseException as error:
        where = (
            f"seed {seed} ({iteration.transport}; kills: {iteration.kills}); files in {tmp_path}"
        )
        raise AssertionError(f"{where}: {error}") from error


async def test_a_member_killed_once_its_pieces_finished_is_not_refused_after_a_restart(
    slow_server: ContentServer, tmp_path: Path
) -> None:
    """Issue 9.6: bob is SIGKILLed once the host counts all his pieces finished, and restarted
    with the same ``--log`` and ``--dest``: his downloads run again and find everything in his
    cache, and he reports nothing the host already has (it used to refuse two per piece)."""
    room = Iteration(0, tmp_path, slow_server)  # over a real matchlock serve
    await room.host.start(first_line=True)
    bob = room.members["bob"]
    await bob.start()
    async with asyncio.timeout(30):
        while not any(e["type"] == "member_done" for e in events_in(tmp_path / "bob" / "room.log")):
            await asyncio.sleep(0.01)
    await bob.kill()
    await bob.start()
    for user in ("alice", "carol"):  # the room can close only now
        await room.members[user].start()
    async with asyncio.timeout(60):
        await asyncio.gather(*(m.wait() for m in room.members.values()))
    await room.host.stop()
    room.check()
    assert len(bob.runs) == 2
