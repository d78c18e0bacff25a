"""LAN rooms across real hosts: network namespaces joined by veth pairs (virtual cables), each
running real ``matchlock`` processes, as a LAN party on a bare switch would.

Every test builds its own hosts (namespaces named after this process and the test, so parallel
runs never collide) with addresses it assigns on 10.77.0.0/24 and 10.78.0.0/24, and deletes them
in teardown, failed or not. Traffic stays inside them: a namespace's only interfaces are its
loopback and the veth ends the test made. Content is ``file://`` zips on the shared filesystem.

Skipped, with the reason, only where namespaces cannot be made (not root, no iproute2); with
``CI`` set, that fails instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from matchlock.app.configfile import write_room_config
from matchlock.app.keys import save_keypair
from matchlock.core.config import PinnedPiece
from matchlock.store.eventlog import replay_file
from matchlock.tools.testing import insecure_key, signed_room
from tests.app.room_content import DOJO, KFM
from tests.downloads.conftest import piece, sha256

MATCHLOCK = str(Path(sys.executable).with_name("matchlock"))
ROOM_ID = "party"
_numbers = itertools.count()


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


def _cannot_make_namespaces() -> str | None:
    """Why this machine cannot make network namespaces, or None when it can."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"ml{os.getpid()}probe"
    made = subprocess.run(
        ["ip", "netns", "add", probe], check=False, capture_output=True, text=True
    )
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe)
    return None


class Lan:
    """The hosts (network namespaces) and cables (veth pairs) of one test, and the matchlock
    processes it runs on them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.prefix = f"ml{os.getpid()}x{next(_numbers)}"
        self.hosts: list[str] = []
        self.processes: list[asyncio.subprocess.Process] = []

    def host(self, name: str) -> str:
        """A new host with its loopback up; returns its namespace."""
        ns = f"{self.prefix}{name}"
        _run("ip", "netns", "add", ns)
        self.hosts.append(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def cable(self, a: str, a_address: str, b: str, b_address: str) -> tuple[str, str]:
        """A veth pair from host ``a`` to ``b``, each end up with the one address the test gives
        it (``10.77.0.1/24``, or an IPv6 link-local ``fe80::77:1/64``: the system makes none of
        its own); returns the two interface names."""
        a_end, b_end = f"to-{b.removeprefix(self.prefix)}", f"to-{a.removeprefix(self.prefix)}"
        _run("ip", "-n", a, "link", "add", a_end, "type", "veth", "peer", "name", b_end, "netns", b)
        for ns, end, address in ((a, a_end, a_address), (b, b_end, b_address)):
            _run("ip", "-n", ns, "link", "set", end, "addrgenmode", "none")
            _run("ip", "-n", ns, "link", "set", end, "up")
            if ":" in address:  # usable at once: no duplicate address detection
                _run("ip", "-n", ns, "addr", "add", address, "dev", end, "nodad")
            else:
                _run("ip", "-n", ns, "addr", "add", address, "brd", "+", "dev", end)
        return a_end, b_end

    async def start(self, ns: str, *args: str) -> asyncio.subprocess.Process:
        """``matchlock ARGS`` run on host ``ns``, in the test's folder."""
        process = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, MATCHLOCK, *args,
            cwd=self.folder, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.processes.append(process)
        return process

    async def run(self, ns: str, *args: str, timeout: float = 20) -> tuple[int, str, str]:
        """Run ``matchlock ARGS`` on ``ns`` to its end: exit code, stdout, stderr."""
        process = await self.start(ns, *args)
        return await finish(process, timeout)

    async def close(self) -> None:
        """Kill what still runs, then delete every host (and so every cable), whatever fails."""
        try:
            for process in self.processes:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
        finally:
            for ns in self.hosts:
                await _delete(ns)


async def _delete(ns: str) -> None:
    """Delete the namespace ``ns``, trying again while the system says it is busy; a warning
    (never silence) if it stays."""
    for _ in range(5):
        done = subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        if done.returncode == 0:
            return
        await asyncio.sleep(0.2)
    warnings.warn(f"network namespace {ns} left behind: {done.stderr.decode()}", stacklevel=1)


async def finish(process: asyncio.subprocess.Process, timeout: float) -> tuple[int, str, str]:
    """Wait for ``process`` to exit: its exit code, stdout and stderr."""
    async with asyncio.timeout(timeout):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def until_hosting(process: asyncio.subprocess.Process) -> None:
    """Read a ``join --host --json`` process's stderr up to its "hosting room" line."""
    assert process.stderr is not None
    seen: list[bytes] = []
    async with asyncio.timeout(20):
        while b"hosting room" not in (line := await process.stderr.readline()):
            seen.append(line)
            assert line, f"the host exited before hosting: {b''.join(seen).decode()}"


@pytest.fixture
async def lan(tmp_path: Path) -> AsyncIterator[Lan]:
    """A test's hosts and cables, removed afterwards even when the test fails."""
    reason = _cannot_make_namespaces()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the LAN tests across namespaces: {reason}")
        pytest.skip(reason)
    lan = Lan(tmp_path)
    try:
        yield lan
    finally:
        await lan.close()


def write_room(folder: Path, users: tuple[str, ...]) -> None:
    """Keys, a match-lock config with two ``file://`` zips, and the room signed by ``users``."""
    (folder / "content").mkdir()
    pieces: dict[str, Any] = {}
    for collection, name, data in (("chars", "kfm", KFM), ("stages", "dojo", DOJO)):
        path = folder / "content" / f"{name}.zip"
        path.write_bytes(data)
        pieces[collection] = {"mandatory": True, "pieces": {name: piece(data, path.as_uri())}}
    (folder / "matchlock.json").write_text(json.dumps({"collections": pieces}))
    pinned = {
        "chars/kfm": PinnedPiece(sha256=sha256(KFM), size=len(KFM)),
        "stages/dojo": PinnedPiece(sha256=sha256(DOJO), size=len(DOJO)),
    }
    write_room_config(signed_room(ROOM_ID, users, pinned), folder / "room.json")
    for user in users:
        save_keypair(insecure_key(user), folder / f"{user}.key")


def join_args(user: str, *more: str) -> tuple[str, ...]:
    """``join lan://party`` as ``user``, with its own cache and log."""
    return (
        "-v", "join", f"lan://{ROOM_ID}", "--room", "room.json", "--config", "matchlock.json",
        "--user", user, "--key", f"{user}.key", "--dest", f"{user}/cache",
        "--log", f"{user}/room.log", "--json", "--deadline", "30", *more,
    )  # fmt: skip


async def host_room(lan: Lan, ns: str) -> asyncio.subprocess.Process:
    """alice hosting the room on ``ns`` (``join lan://party --host``), once she listens."""
    process = await lan.start(ns, *join_args("alice", "--host", "--host-log-dir", "host-logs"))
    await until_hosting(process)
    return process


def assert_completed(lan: Lan, results: dict[str, tuple[int, str, str]]) -> None:
    """Every player got both pieces and the room closed with everyone."""
    for user, (code, out, err) in results.items():
        assert code == 0, (user, out, err)
        result = json.loads(out.splitlines()[-1])
        assert result["type"] == "result", (user, result)
        assert set(result["folders"]) == {"chars/kfm", "stages/dojo"}
    final = replay_file(lan.folder / "host-logs" / f"{ROOM_ID}.log").state
    assert final.status == "closed"
    assert set(final.members) == set(results)
    for user in results:
        assert replay_file(lan.folder / user / "room.log").state == final


def hosted_at(err: str) -> str:
    """The host address a member's ``-v`` log says it found."""
    line = next(line for line in err.splitlines() if f"room {ROOM_ID} is hosted at" in line)
    return line.rpartition(" ")[2]


async def test_a_room_across_two_hosts_with_no_default_route(lan: Lan) -> None:
    write_room(lan.folder, ("alice", "bob"))
    home, away = lan.host("home"), lan.host("away")
    _, bob_end = lan.cable(home, "10.77.0.1/24", away, "10.77.0.2/24")

    # nobody hosts yet: bob says where he asked (and tries again until his deadline)
    (code, _, err), listed = await asyncio.gather(
        lan.run(away, *join_args("bob", "--deadline", "4")),
        lan.run(away, "lan", "list", "--wait", "1"),
    )
    assert listed[:2] == (0, ""), listed
    assert "no room announced within 1 s; asked:\n  - lo 127.0.0.1" in listed[2]
    assert code != 0, err
    assert f"no host of room '{ROOM_ID}' answered" in err
    assert f"{bob_end} 10.77.0.255 (for 10.77.0.2/24)" in err
    assert "lo 127.0.0.1" in err
    assert "255.255.255.255 (not sent: [Errno 101] Network is unreachable)" in err

    alice = await host_room(lan, home)
    code, out, err = await lan.run(away, "lan", "list", "--json", "--wait", "1")
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {
            "type": "room", "room_id": ROOM_ID, "address": "10.77.0.1", "port": 7500,
            "url": "tcp://10.77.0.1:7500", "interface": bob_end,
        }
    ]  # fmt: skip

    bob = await lan.run(away, *join_args("bob"), timeout=40)
    assert hosted_at(bob[2]) == "tcp://10.77.0.1:7500"
    assert_completed(lan, {"alice": await finish(alice, 20), "bob": bob})


async def test_a_room_across_two_hosts_with_a_default_route(lan: Lan) -> None:
    write_room(lan.folder, ("alice", "bob"))
    home, away = lan.host("home"), lan.host("away")
    lan.cable(home, "10.77.0.1/24", away, "10.77.0.2/24")
    _run("ip", "-n", home, "route", "add", "default", "via", "10.77.0.2")
    _run("ip", "-n", away, "route", "add", "default", "via", "10.77.0.1")

    alice = await host_room(lan, home)
    code, out, err = await lan.run(away, "-v", "lan", "list", "--wait", "1")
    assert code == 0, err
    assert out.startswith(f"{ROOM_ID}  tcp://10.77.0.1:7500  (on to-home)"), out
    assert "  - 255.255.255.255\n" in err  # sent, this time: the default route carries it
    bob = await lan.run(away, *join_args("bob"), timeout=40)
    assert hosted_at(bob[2]) == "tcp://10.77.0.1:7500"
    assert_completed(lan, {"alice": await finish(alice, 20), "bob": bob})


async def test_a_host_on_two_subnets_is_found_on_each_by_its_members_there(lan: Lan) -> None:
    write_room(lan.folder, ("alice", "bob", "carol"))
    home, wired, wifi = lan.host("home"), lan.host("wired"), lan.host("wifi")
    lan.cable(home, "10.77.0.1/24", wired, "10.77.0.2/24")
    lan.cable(home, "10.78.0.1/24", wifi, "10.78.0.2/24")

    alice = await host_room(lan, home)
    code, out, err = await lan.run(wifi, "lan", "list", "--wait", "1")
    assert (code, out) == (0, f"{ROOM_ID}  tcp://10.78.0.1:7500  (on to-home)\n"), err
    bob, carol = await asyncio.gather(
        lan.run(wired, *join_args("bob"), timeout=40),
        lan.run(wifi, *join_args("carol"), timeout=40),
    )
    assert hosted_at(bob[2]) == "tcp://10.77.0.1:7500"
    assert hosted_at(carol[2]) == "tcp://10.78.0.1:7500"
    assert_completed(lan, {"alice": await finish(alice, 20), "bob": bob, "carol": carol})


async def test_a_room_across_two_hosts_with_only_ipv6_link_local_addresses(lan: Lan) -> None:
    write_room(lan.folder, ("alice", "bob"))
    home, away = lan.host("home"), lan.host("away")
    _, bob_end = lan.cable(home, "fe80::77:1/64", away, "fe80::77:2/64")  # no DHCP, no IPv4

    alice = await host_room(lan, home)
    bob = await lan.run(away, *join_args("bob"), timeout=40)
    assert hosted_at(bob[2]) == f"tcp://[fe80::77:1%{bob_end}]:7500"
    assert_completed(lan, {"alice": await finish(alice, 20), "bob": bob})
