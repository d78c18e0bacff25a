"""The NATS JetStream store on real ``nats-server -js`` processes: the store contract, no fork
when two writers race on one log, deduplicated retries, what a missing server says, a 3-server
cluster, and a real ``matchlock serve --store nats://...`` keeping its rooms in the stream."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest

from matchlock.app.joining import join as join_room
from matchlock.core.config import PinnedPiece
from matchlock.core.errors import LogConflictError, LogError
from matchlock.store import LogRepository
from matchlock.store.eventlog import EventLog, fold_events, read_store
from matchlock.store.nats import NatsRepository
from matchlock.tools.testing import insecure_key, signed_room
from tests.app.room_content import DOJO, KFM, content
from tests.downloads.conftest import ContentServer, config, sha256
from tests.store.contract import LogRepositoryContract
from tests.store.nats_server import (
    NatsServer,
    free_port,
    nats_cluster_fixture,  # noqa: F401 (the fixture nats_cluster)
    nats_server_fixture,  # noqa: F401 (the fixture nats_server)
    start_server,
)
from tests.store.test_eventlog import EVENTS, LINES
from tests.transport.test_serve import join, start_serve

_streams = itertools.count()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One real server for the module's contract tests; each test gets a stream of its own."""
    server = start_server(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()


class TestNatsRepository(LogRepositoryContract):
    """The contract, on a real single ``nats-server -js`` (a fresh stream per test). A crash
    cannot tear a JetStream message, but the store keeps whatever lines it is given, so the
    torn-tail and torn-header tests (which append torn lines directly) apply unchanged, and
    ``drop_torn`` deletes the torn message. The power-loss tests skip, as for files: the store
    cannot cut a server's power."""

    @pytest.fixture(autouse=True)
    async def _server(self, shared_server: NatsServer) -> AsyncIterator[None]:
        self.server = shared_server
        self.made: list[NatsRepository] = []
        yield
        for repo in self.made:
            await repo.close()

    def make(self, tmp_path: Path) -> LogRepository:
        n = next(_streams)
        repo = NatsRepository(self.server.url, stream=f"CONTRACT_{n}", prefix=f"contract{n}.room")
        self.made.append(repo)
        return repo


@pytest.fixture
async def two_writers(nats_server: NatsServer) -> AsyncIterator[list[NatsRepository]]:
    """Two repositories on one server and stream, each with its own connection: two hosts."""
    repos = [NatsRepository(nats_server.url) for _ in range(2)]
    yield repos
    for repo in repos:
        await repo.close()


async def test_two_writers_racing_on_one_log_cannot_fork_it(
    two_writers: list[NatsRepository],
) -> None:
    first, second = two_writers
    log = EventLog.new(first.create("r1"), "room/r1")
    await log.append(*EVENTS[:3])
    a, _ = await EventLog.reopen(first.store("r1"))
    b, _ = await EventLog.reopen(second.store("r1"))  # both read the log at the same point
    results = await asyncio.gather(a.append(EVENTS[3]), b.append(EVENTS[3]), return_exceptions=True)
    conflicts = [r for r in results if isinstance(r, LogConflictError)]
    assert len(conflicts) == 1 and results.count(4) == 1, results
    assert "nats://127.0.0.1" in str(conflicts[0]) and "/r1: another writer appended" in str(
        conflicts[0]
    )
    assert list(first.store("r1").read()) == LINES[:5]  # one line 4, not two
    loser = b if results[1] is conflicts[0] else a
    retry, held = await EventLog.reopen(loser.store)  # the loser re-reads, then continues
    assert held == EVENTS[:4]
    await retry.append(*EVENTS[4:])
    assert read_store(second.store("r1")).events == EVENTS


async def test_a_writer_that_read_less_than_the_log_holds_is_refused(
    two_writers: list[NatsRepository],
) -> None:
    first, second = two_writers
    stale = first.create("r1")
    await stale.append(LINES[:2], durable=True)
    other = second.store("r1")
    await other.append(LINES[2:4], durable=True)
    with pytest.raises(LogConflictError, match="expected the log to end at stream sequence"):
        await stale.append(LINES[4:6], durable=True)
    assert list(other.read()) == LINES[:4]


async def test_creating_an_id_another_writer_took_first_conflicts(
    two_writers: list[NatsRepository],
) -> None:
    first, second = two_writers
    mine, theirs = first.create("r1"), second.create("r1")  # neither log exists yet
    await theirs.append(LINES[:1], durable=True)
    with pytest.raises(LogConflictError):
        await mine.append([b"another header\n"], durable=True)
    assert list(first.store("r1").read()) == LINES[:1]


@pytest.mark.parametrize("lines", [1, 3], ids=["one message", "an atomic batch"])
async def test_a_retried_publish_is_stored_once(nats_server: NatsServer, lines: int) -> None:
    repo = NatsRepository(nats_server.url)
    try:
        store = repo.create("r1")
        await store.append(LINES[:lines], durable=True)
        landed = store.last
        store.last = 0  # as if the acknowledgement was lost: the same batch is sent again
        assert await repo.wait(repo.publish(store, LINES[:lines])) == landed
        assert list(repo.store("r1").read()) == LINES[:lines]
        store.last = 0  # another batch at the same place is a conflict, not a retry
        with pytest.raises(LogConflictError):
            await repo.wait(repo.publish(store, LINES[:2]))
    finally:
        await repo.close()


async def test_a_refused_batch_stores_none_of_its_lines(
    two_writers: list[NatsRepository],
) -> None:
    first, second = two_writers
    stale = first.create("r1")
    await stale.append(LINES[:1], durable=True)
    other = second.store("r1")
    await other.append(LINES[1:2], durable=True)
    with pytest.raises(LogConflictError):
        await stale.append(LINES[1:9], durable=True)  # eight lines, one batch: none stored
    assert list(other.read()) == LINES[:2]


async def test_a_stream_without_atomic_batches_is_refused_by_name(
    nats_server: NatsServer,
) -> None:
    client = await nats.connect(nats_server.url)
    await client.jetstream().add_stream(name="OLD", subjects=["old.room.*"])
    await client.close()
    repo = NatsRepository(nats_server.url, stream="OLD", prefix="old.room")
    try:
        with pytest.raises(LogError, match="the stream OLD refuses atomic batches"):
            await repo.ids()
    finally:
        await repo.close()


async def test_ids_with_dots_round_trip(nats_server: NatsServer) -> None:
    repo = NatsRepository(nats_server.url)
    try:
        for log_id in ("a.b", "a..b.", "a"):
            store = repo.create(log_id)
            await store.append([LINES[0]], durable=True)
        assert await repo.ids() == ["a", "a..b.", "a.b"]
        assert list(repo.store("a..b.").read()) == [LINES[0]]
    finally:
        await repo.close()


async def test_an_unreachable_server_is_a_log_error_naming_it() -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    repo = NatsRepository(url, timeout=1.0, reconnects=1)
    try:
        with pytest.raises(LogError, match=f"{url}: cannot reach NATS"):
            await repo.ids()
    finally:
        await repo.close()


async def test_a_log_replicated_on_a_three_server_cluster_reads_back_from_each(
    nats_cluster: list[NatsServer],
) -> None:
    urls = [server.url for server in nats_cluster]
    writer = NatsRepository(",".join(urls), replicas=3, timeout=10.0)
    readers = [NatsRepository(url, timeout=10.0) for url in urls]
    try:
        log = EventLog.new(writer.create("r1"), "room/r1")
        await log.append(*EVENTS)
        for reader in readers:
            assert read_store(reader.store("r1")).events == EVENTS
    finally:
        for repo in [writer, *readers]:
            await repo.close()


async def test_matchlock_serve_keeps_its_rooms_in_the_stream(nats_server: NatsServer) -> None:
    for user in ("ann", "ben"):  # the second serve loads the room from the stream at ben's hello
        process, url = await start_serve("--listen", "127.0.0.1:0", "--store", nats_server.url)
        await join(url, user)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
    assert f"(0 restored), a cluster node, logs in NATS {nats_server.url}" in stderr.decode()
    repo = NatsRepository(nats_server.url)
    try:
        assert await repo.ids() == ["cli-room"]
        contents = read_store(repo.store("cli-room"))  # the chain verifies, line by line
        state = fold_events(contents.events, "cli-room").snapshot()
    finally:
        await repo.close()
    assert [m.status for m in state.members.values()] == ["disconnected", "disconnected"]
    assert state.events == 5  # opened, ann joined, left; loaded: ben joined, left


async def test_a_log_on_three_replicas_survives_a_server_killed_and_refuses_without_quorum(
    nats_cluster: list[NatsServer],
) -> None:
    urls = ",".join(server.url for server in nats_cluster)
    writer = NatsRepository(urls, replicas=3, timeout=5.0, patience=15.0)
    survivor = NatsRepository(nats_cluster[2].url, timeout=5.0, patience=15.0)
    try:
        log = EventLog.new(writer.create("r1"), "room/r1")
        await log.append(*EVENTS[:5])
        nats_cluster[0].process.kill()  # SIGKILL, mid-room
        nats_cluster[0].process.wait()
        await log.append(*EVENTS[5:8])  # two of three still make a quorum
        assert read_store(survivor.store("r1")).events == EVENTS[:8]
        nats_cluster[1].process.kill()
        nats_cluster[1].process.wait()
        with pytest.raises(LogError, match=r"/r1: JetStream acknowledged no publish"):
            await log.append(*EVENTS[8:])  # one of three: refused, never stored unreplicated
    finally:
        for repo in (writer, survivor):
            await repo.close()


async def test_two_members_complete_a_room_over_matchlock_serve_store_nats(
    nats_server: NatsServer, server: ContentServer, tmp_path: Path
) -> None:
    users = ("alice", "bob")
    pinned = {
        "chars/kfm": PinnedPiece(sha256=sha256(KFM), size=len(KFM)),
        "stages/dojo": PinnedPiece(sha256=sha256(DOJO), size=len(DOJO)),
    }
    room = signed_room("nats-room", users, pinned)
    lock = config(content(server, ("ok",)))
    process, url = await start_serve("--listen", "127.0.0.1:0", "--store", nats_server.url)
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(
                *(
                    join_room(url, room=room, user_id=user, key=insecure_key(user), config=lock,
                              dest=tmp_path / user, retry_delay=0.05, deadline=25)
                    for user in users
                )
            )  # fmt: skip
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    repo = NatsRepository(nats_server.url)
    try:  # the room's log, straight from the stream: the chain verifies and folds to the end
        log, events = await EventLog.reopen(repo.store("nats-room"))
        await log.close()
    finally:
        await repo.close()
    state = fold_events(events, "nats-room").snapshot()
    assert state.status == "closed"
    assert {user: member.status for user, member in state.members.items()} == dict.fromkeys(
        users, "goodbye"
    )
    assert all(p.status == "finished" for m in state.members.values() for p in m.pieces.values())


async def test_many_logs_appended_at_once_all_land(nats_server: NatsServer) -> None:
    repo = NatsRepository(nats_server.url)  # a host flushing every dirty room in one gather
    try:
        stores = [repo.create(f"r{n}") for n in range(120)]
        await asyncio.gather(*(store.append(LINES[:3], durable=True) for store in stores))
        await asyncio.gather(*(store.append(LINES[3:4], durable=True) for store in stores))
        assert len(await repo.ids()) == 120
        assert all(list(repo.store(f"r{n}").read()) == LINES[:4] for n in (0, 59, 119))
    finally:
        await repo.close()


async def test_writers_racing_on_a_replicated_log_conflict_rather_than_fail(
    nats_cluster: list[NatsServer],
) -> None:
    """A clustered stream refuses the loser of a race with its own error code when both
    batches are in flight at once (10164, "wrong last sequence", not 10071): still a conflict
    the loser recovers from, as on a single server. Twenty races, one log each."""
    urls = ",".join(server.url for server in nats_cluster)
    first, second = NatsRepository(urls, replicas=3), NatsRepository(urls, replicas=3)
    try:
        for n in range(20):
            await first.create(f"r{n}").append(LINES[:2], durable=True)
            a, b = first.store(f"r{n}"), second.store(f"r{n}")
            lines = LINES[2 : 3 + n % 2]  # one line (one message) or two (an atomic batch)
            results = await asyncio.gather(
                a.append(lines, durable=True), b.append(lines, durable=True),
                return_exceptions=True,
            )  # fmt: skip
            assert results.count(None) == 1, results
            assert any(isinstance(r, LogConflictError) for r in results), results
            assert list(first.store(f"r{n}").read()) == [*LINES[:2], *lines]
    finally:
        for repo in (first, second):
            await repo.close()
