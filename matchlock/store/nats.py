"""Logs in NATS JetStream: a store that several hosts can share (``pip install 'matchlock[nats]'``).

:class:`NatsRepository` keeps every log in one stream (``MATCHLOCK_ROOMS`` by default), a
subject per log (``matchlock.core.room.<id>``, a ``.`` of the id written ``~`` since a subject's
tokens are split on dots), one message per line. :class:`NatsStore` is one log:

- ``append`` publishes its lines as one **atomic batch** (nats-server 2.12+, the stream made
  with ``allow_atomic``: stored whole or not at all, one round trip; 500 lines a batch; one
  line is a single message, atomic by itself and much quicker to commit) and
  waits for JetStream's acknowledgement, so every append is as durable as the stream makes an
  acknowledged message (``durable`` asks nothing more: what an acknowledgement covers, replicas
  and ``sync_interval``, is in ``docs/scaling.md``).
- **No fork.** The batch's first message carries ``Nats-Expected-Last-Subject-Sequence``: the
  stream sequence of the log's last message as this store last read or wrote it. When another
  writer appended in between, JetStream refuses the whole batch and ``append`` raises
  :class:`~matchlock.core.errors.LogConflictError` naming the log. Two writers can never both
  append at one position.
- **Retries are deduplicated.** A batch that got no acknowledgement is sent again with the same
  ``Nats-Msg-Id`` per line (the subject, the expected sequence, a token of this store, the
  line's place and SHA-256). JetStream refuses such a retry (a conflict, or a duplicate id)
  when the first try did land; the log's last message then bears the batch's last id, and the
  append succeeds without storing anything twice. The token keeps another writer's batch, or
  one of a log removed and made again at sequence 0, from passing for a retry.
- ``follow`` delivers every message a log gets after a stream sequence, as it is stored
  (an ordered push consumer: in order, none missed, recreated by nats-py after a gap), to a
  callback on the follower's event loop; ``watch`` tells it when the connection is lost and
  made again. Several hosts sharing rooms follow each other's appends this way.
- ``read`` replays the subject through an ephemeral consumer up to the log's last message at
  the time of the call; ``ids`` lists the stream's subjects; ``remove`` purges one;
  ``drop_torn`` deletes a last message that holds a torn line (JetStream stores each message
  whole, so only a caller that appended a torn line, as the contract suite does, ever has one).

The seam's ``read``, ``create`` and ``store`` are synchronous, and nats-py is asyncio: the
repository runs its NATS connection on an event loop of its own, in a daemon thread. Async
methods await it from the caller's loop (one hop to another thread); sync ones block on it,
which is safe from any thread, including an event loop's (the call does one round trip).

This module moves bytes: it must never parse or check a line (that is :mod:`matchlock.core.chain`)
and never decide anything about a room. A conflict is reported, never resolved here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from matchlock.core.errors import LogConflictError, LogError, UsageError

__all__ = ["Following", "NatsRepository", "NatsStore"]

T = TypeVar("T")

logger = logging.getLogger(__name__)

STREAM = "MATCHLOCK_ROOMS"
"""The default stream holding every log."""

PREFIX = "matchlock.core.room"
"""The default subject prefix: the log ``r1`` is the subject ``matchlock.core.room.r1``."""

RETRY_PAUSE = 0.25
"""Seconds before the second try of a request, growing by as much each time up to
:data:`MAX_PAUSE` (a stream or the cluster electing a leader answers nobody for seconds)."""

MAX_PAUSE = 1.0
"""The longest pause between two tries."""

BATCH = 256
"""Messages fetched per round trip by ``read``."""

BATCH_LINES = 500
"""Lines per atomic publish (JetStream takes at most 1,000 messages in a batch)."""

_MSG_ID = api.Header.MSG_ID.value
_EXPECTED_LAST = api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value

WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a refused ``Nats-Expected-Last-Subject-Sequence``."""

WRONG_LAST_SEQUENCE_CLUSTERED = 10164
"""The same refusal, as a clustered stream says it of an atomic batch (without the sequence)."""

UNAVAILABLE = 503
"""JetStream's answer while a stream has no leader (a server lost, an election)."""

IN_PROCESS = 10158
"""JetStream's error code for a retry whose first try is still being replicated."""

DUPLICATE_IN_BATCH = 10201
"""JetStream's error code for an atomic batch holding a ``Nats-Msg-Id`` it already stored."""

_CONFLICTS = (WRONG_LAST_SEQUENCE, WRONG_LAST_SEQUENCE_CLUSTERED, DUPLICATE_IN_BATCH)

_UNAVAILABLE = (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)
"""Answers of a stream or consumer with no leader yet: worth asking again."""

_TRANSIENT = (nats.errors.TimeoutError, *_UNAVAILABLE)

_LOG_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


class NatsStore:
    """One log: the subject ``subject`` of the repository's stream. ``last`` is the stream
    sequence of the log's last message as this store last read or wrote it (0: empty); the
    next append must find the log ending there."""

    def __init__(self, repository: NatsRepository, log_id: str, last: int) -> None:
        self._repository = repository
        self.log_id = log_id
        self.subject = repository.subject(log_id)
        self.last = last
        self.writer = secrets.token_hex(8)  # in each Nats-Msg-Id: only its own retries dedup

    @property
    def name(self) -> str:
        """``<first server URL>/<log id>``, for messages."""
        return f"{self._repository.servers[0]}/{self.log_id}"

    async def append(self, lines: Sequence[bytes], durable: bool) -> None:
        """Publish the lines in order, as atomic batches of :data:`BATCH_LINES`, each one
        acknowledged before the next is sent (every append is, so ``durable`` changes
        nothing). Raises :class:`~matchlock.core.errors.LogConflictError` when another writer
        appended first."""
        await self._repository.wait(self._publish(lines))

    async def _publish(self, lines: Sequence[bytes]) -> None:
        for start in range(0, len(lines), BATCH_LINES):
            self.last = await self._repository.publish(self, lines[start : start + BATCH_LINES])

    def read(self, start: int = 0) -> Iterator[bytes]:
        """Every line from line index ``start`` up to the log's last message when the read
        began; an empty message (an append of ``b""``) is no line. A read to the end moves
        :attr:`last` there: the next append continues after what was read."""
        repository = self._repository
        end = repository.run(repository.last_sequence(self.subject))
        index = 0
        for data in repository.messages(self.subject, end):
            if data:
                if index >= start:
                    yield data
                index += 1
        self.last = end

    async def drop_torn(self, size: int) -> None:
        """Delete the last message, which holds a torn line of ``size`` bytes (an empty
        message after it keeps the log held when nothing else is left)."""
        if size:
            self.last = await self._repository.wait(self._repository.drop_last(self, size))

    async def close(self) -> None:
        """Nothing to release: the connection is the repository's (:meth:`NatsRepository.close`)."""


class Following:
    """One log followed (:meth:`NatsRepository.follow`); :meth:`stop` ends it."""

    def __init__(self, repository: NatsRepository, subscription: Any) -> None:
        self._repository = repository
        self._subscription = subscription

    async def stop(self) -> None:
        """Stop delivering (a stop while the connection is lost is a stop all the same)."""
        with contextlib.suppress(LogError, nats.errors.Error):
            await self._repository.wait(self._subscription.unsubscribe())


class NatsRepository:
    """Logs by id in the JetStream stream ``stream`` (made on first use, with ``replicas``
    copies, when it does not exist) of the NATS servers ``servers``: URLs, or one string of
    them split by commas (``nats://a:4222,nats://b:4222``). ``timeout`` bounds each request;
    ``reconnects`` is how often each server is tried again, 2 s apart, at the first use and
    after a lost connection (nats-py's default: 60); ``patience`` how long a request is tried
    again while NATS answers nobody (a JetStream leader election takes up to ~10 s).

    It connects at first use; :meth:`close` it when done (the connection, and its thread)."""

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        stream: str = STREAM,
        prefix: str = PREFIX,
        replicas: int = 1,
        timeout: float = 5.0,
        reconnects: int = 60,
        patience: float = 20.0,
    ) -> None:
        listed = servers.split(",") if isinstance(servers, str) else list(servers)
        self.servers = [url.strip() for url in listed if url.strip()]
        if not self.servers:
            raise UsageError(f"{servers!r} names no NATS server (nats://HOST:4222[,...])")
        self.stream = stream
        self.prefix = prefix
        self.replicas = replicas
        self.timeout = timeout
        self.reconnects = reconnects
        self.patience = patience
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="nats")
        self._thread.start()
        self._connecting: asyncio.Lock | None = None
        self._watchers: list[tuple[asyncio.AbstractEventLoop, Callable[[bool], None]]] = []

    # -- the seam ------------------------------------------------------------------------

    def subject(self, log_id: str) -> str:
        """The subject of the log ``log_id``."""
        if not _LOG_ID.match(log_id):
            raise UsageError(f"{log_id!r} is not a log id: letters, digits and _ - . only")
        return f"{self.prefix}.{log_id.replace('.', '~')}"

    async def ids(self) -> list[str]:
        """The id of every log holding a message, sorted (one stream info request)."""
        return await self.wait(self._ids())

    async def _ids(self) -> list[str]:
        js = await self._jetstream()
        subjects_filter = f"{self.prefix}.*"
        info = await self._retried(lambda: js.stream_info(self.stream, subjects_filter))
        subjects = info.state.subjects or {}
        start = len(self.prefix) + 1
        return sorted(subject[start:].replace("~", ".") for subject in subjects)

    def create(self, log_id: str) -> NatsStore:
        """A new log ``log_id``, held from its first append; one round trip checks that no log
        holds the id (a writer that creates it meanwhile makes the first append conflict)."""
        store = NatsStore(self, log_id, 0)
        if self.run(self.last_sequence(store.subject)):
            raise UsageError(f"{store.name}: a log already exists there; open it to continue it")
        return store

    def store(self, log_id: str) -> NatsStore:
        """The held log ``log_id``, continuing after its last message now."""
        store = NatsStore(self, log_id, 0)
        store.last = self.run(self.last_sequence(store.subject))
        if not store.last:
            raise LogError(f"{store.name}: no such log (no message on {store.subject})")
        return store

    async def follow(
        self, log_id: str, after: int, deliver: Callable[[int, bytes], None]
    ) -> Following:
        """Call ``deliver(sequence, data)`` on the calling event loop for every message the log
        ``log_id`` holds after stream sequence ``after``, and every one it gets from now on,
        in order; until :meth:`Following.stop`."""
        loop = asyncio.get_running_loop()
        subject = self.subject(log_id)

        async def delivered(message: Any) -> None:
            sequence = message.metadata.sequence.stream
            loop.call_soon_threadsafe(deliver, sequence, message.data)

        async def subscribe() -> Any:
            js = await self._jetstream()
            start = api.ConsumerConfig(opt_start_seq=after + 1)
            return await js.subscribe(
                subject, cb=delivered, ordered_consumer=True, stream=self.stream,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, config=start,
            )  # fmt: skip

        return Following(self, await self.wait(self._retried(subscribe)))

    def watch(self, changed: Callable[[bool], None]) -> None:
        """Call ``changed(False)`` on the calling event loop when the connection to NATS is
        lost, ``changed(True)`` when it is made again (to this server or another)."""
        self._watchers.append((asyncio.get_running_loop(), changed))

    async def _changed(self, up: bool) -> None:
        for loop, changed in self._watchers:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(changed, up)

    async def _lost(self) -> None:
        await self._changed(False)

    async def _back(self) -> None:
        await self._changed(True)

    async def remove(self, log_id: str) -> None:
        """Purge the log's subject (the id is free again)."""
        await self.wait(self._purge(self.subject(log_id)))

    async def _purge(self, subject: str) -> None:
        js = await self._jetstream()
        await self._retried(lambda: js.purge_stream(self.stream, subject=subject))

    async def close(self) -> None:
        """Close the connection and stop the repository's thread; the logs stay."""
        if self._thread.is_alive():
            await self.wait(self._disconnect())
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)
            self._loop.close()

    async def _disconnect(self) -> None:
        if self._client is not None:
            self._watchers.clear()  # closing is no loss
            await self._client.close()
            self._client = self._js = None

    # -- the loop in the thread ----------------------------------------------------------

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the repository's loop and block until it is done."""
        if threading.current_thread() is self._thread:
            work.close()
            raise UsageError("a NatsRepository's blocking call was made from its own loop")
        return asyncio.run_coroutine_threadsafe(self._guarded(work), self._loop).result()

    async def wait(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the repository's loop and await it from the caller's loop."""
        done = asyncio.run_coroutine_threadsafe(self._guarded(work), self._loop)
        return await asyncio.wrap_future(done)

    async def _guarded(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``, with a failure of NATS (a timeout, no stream leader) as a LogError."""
        try:
            return await work
        except nats.errors.Error as error:
            raise LogError(f"{','.join(self.servers)}: a NATS request failed ({error})") from None

    async def _jetstream(self) -> JetStreamContext:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._js is None:
                self._client = await self._connect()
                self._js = self._client.jetstream(timeout=self.timeout)
                await self._ensure_stream(self._js)
            return self._js

    async def _connect(self) -> Client:
        try:
            return await nats.connect(
                self.servers,
                connect_timeout=self.timeout,
                max_reconnect_attempts=self.reconnects,
                name="matchlock",
                error_cb=self._connection_error,
                disconnected_cb=self._lost,
                reconnected_cb=self._back,
            )
        except (OSError, nats.errors.Error) as error:
            raise LogError(f"{','.join(self.servers)}: cannot reach NATS ({error})") from None

    async def _connection_error(self, error: Exception) -> None:
        logger.warning("%s: NATS connection: %s", ",".join(self.servers), error or type(error))

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:  # a cluster just started may still be electing its leaders: retried
            info = await self._retried(lambda: js.stream_info(self.stream))
        except nats.js.errors.NotFoundError:
            try:
                await self._retried(lambda: js.add_stream(self._stream_config()))
            except nats.js.errors.APIError as error:
                raise LogError(
                    f"{self.servers[0]}: cannot make the stream {self.stream} for "
                    f"{self.prefix}.* ({error.description})"
                ) from None
            return
        wanted = f"{self.prefix}.*"
        if not info.config.allow_atomic:
            raise LogError(
                f"{self.servers[0]}: the stream {self.stream} refuses atomic batches; enable "
                "allow_atomic on it (nats-server 2.12+) or choose another stream name"
            )
        if wanted not in (info.config.subjects or []):
            raise LogError(
                f"{self.servers[0]}: the stream {self.stream} exists without the subjects "
                f"{wanted} (it has {info.config.subjects}); choose another stream name"
            )

    def _stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.stream,
            subjects=[f"{self.prefix}.*"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            num_replicas=self.replicas,
            max_msgs_per_subject=-1,
            allow_atomic=True,  # a batch of lines is stored whole or not at all
            discard=api.DiscardPolicy.NEW,  # never drop a line to make room: refuse the append
        )

    # -- requests, on the repository's loop ----------------------------------------------

    async def last_sequence(self, subject: str) -> int:
        """The stream sequence of the subject's last message (0 when it holds none)."""
        return (await self._last_message(subject)).seq or 0

    async def _last_message(self, subject: str) -> api.RawStreamMsg:
        """The subject's last message (one without a ``seq`` when it holds none)."""
        js = await self._jetstream()
        try:
            return await self._retried(lambda: js.get_last_msg(self.stream, subject))
        except nats.js.errors.NotFoundError:
            return api.RawStreamMsg()

    def _pauses(self) -> Iterator[float]:
        """The pause before each try of a request: none, then growing, while the tries stay
        within ``patience`` seconds."""
        deadline = time.monotonic() + self.patience
        pause = 0.0
        while True:
            yield pause
            pause = min(MAX_PAUSE, pause + RETRY_PAUSE)
            if time.monotonic() + pause > deadline:
                return

    async def _retried(self, request: Callable[[], Awaitable[T]]) -> T:
        """``request()``, tried again while NATS answers nobody in time (a server just lost,
        a stream or the cluster electing a leader), for ``patience`` seconds at most."""
        failure: Exception | None = None
        for pause in self._pauses():
            await asyncio.sleep(pause)
            try:
                return await request()
            except _TRANSIENT as error:
                failure = error
        raise LogError(
            f"{self.servers[0]}: NATS answered no request in {self.patience} s ({failure})"
        )

    async def publish(self, store: NatsStore, lines: Sequence[bytes]) -> int:
        """Publish ``lines`` (at most :data:`BATCH_LINES`) on ``store``'s subject as one atomic
        batch, expecting the log to end at ``store.last``; returns the last line's sequence."""
        ids = [
            f"{store.subject}@{store.last}:{store.writer}:{index}:{hashlib.sha256(line).hexdigest()}"
            for index, line in enumerate(lines)
        ]
        failure: Exception | None = None
        for pause in self._pauses():
            await asyncio.sleep(pause)
            try:
                answer = await self._batch(store, lines, ids)
            except _TRANSIENT as error:
                failure = error  # sent again with the same Nats-Msg-Ids: never stored twice
                continue
            refused = answer.get("error")
            if refused is None:
                return int(answer["seq"])
            reason = str(refused.get("description"))
            if refused.get("code") == UNAVAILABLE or refused.get("err_code") == IN_PROCESS:
                failure = nats.js.errors.APIError(description=reason)  # a leader, a quorum: wait
                continue
            if refused.get("err_code") not in _CONFLICTS:
                raise LogError(
                    f"{store.name}: JetStream refused {len(lines)} line(s): {reason} "
                    f"(error {refused.get('err_code')})"
                )
            landed = await self._landed(store.subject, ids[-1])
            if landed:  # an earlier try was stored; its acknowledgement was lost
                return landed
            raise LogConflictError(store.name, store.last, reason)
        raise LogError(
            f"{store.name}: JetStream acknowledged no publish of {len(lines)} line(s) in "
            f"{self.patience} s ({failure}); is a quorum of the stream's servers reachable?"
        )

    async def _batch(self, store: NatsStore, lines: Sequence[bytes], ids: list[str]) -> Any:
        """Send one atomic batch (the commit is the last line's request); the stream's answer.
        One line is one message, as atomic by itself and far quicker (here, 0.5 ms against
        8-20 ms for an atomic batch's commit)."""
        await self._jetstream()
        assert self._client is not None
        if len(lines) == 1:
            headers = {_MSG_ID: ids[0], _EXPECTED_LAST: str(store.last)}
            reply = await self._client.request(
                store.subject, lines[0], headers=headers, timeout=self.timeout
            )
            return json.loads(reply.data)
        batch = secrets.token_hex(11)
        for number, (line, msg_id) in enumerate(zip(lines, ids, strict=True), start=1):
            headers = {"Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(number), _MSG_ID: msg_id}
            if number == 1:  # a batch is applied whole: its first line's check covers it
                headers[_EXPECTED_LAST] = str(store.last)
            if number < len(lines):
                await self._client.publish(store.subject, line, headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            reply = await self._client.request(
                store.subject, line, headers=headers, timeout=self.timeout
            )
            return json.loads(reply.data)
        raise UsageError("an empty batch")

    async def _landed(self, subject: str, msg_id: str) -> int:
        """The sequence of the subject's last message if it is the publish ``msg_id`` (JetStream
        checks the expected sequence before its duplicate window), else 0."""
        last = await self._last_message(subject)
        headers = last.headers or {}
        return last.seq or 0 if headers.get(_MSG_ID) == msg_id else 0

    def messages(self, subject: str, end: int) -> Iterator[bytes]:
        """The payload of every message on ``subject`` up to stream sequence ``end``, fetched
        in batches through an ephemeral consumer (deleted after)."""
        if not end:
            return
        consumer = self.run(self._consumer(subject))
        try:
            sequence = 0
            while sequence < end:
                for sequence, data in self.run(self._fetch(consumer, subject)):
                    if sequence > end:
                        return
                    yield data
        finally:  # a reader dropped after close() leaves the consumer to expire by itself
            if not self._loop.is_closed():
                with contextlib.suppress(LogError):  # as does one NATS cannot delete now
                    self.run(self._delete_consumer(consumer))

    async def _consumer(self, subject: str) -> JetStreamContext.PullSubscription:
        js = await self._jetstream()
        config = api.ConsumerConfig(
            filter_subject=subject,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=60.0,  # gone by itself if this process dies mid-read
            mem_storage=True,
        )
        info = await self._retried(lambda: js.add_consumer(self.stream, config))
        return await js.pull_subscribe_bind(info.name, stream=self.stream)

    async def _fetch(
        self, consumer: JetStreamContext.PullSubscription, subject: str
    ) -> list[tuple[int, bytes]]:
        failure: Exception | None = None
        for pause in self._pauses():
            await asyncio.sleep(pause)
            try:
                messages = await consumer.fetch(BATCH, timeout=self.timeout)
            except nats.errors.TimeoutError:
                raise LogError(
                    f"{self.servers[0]}: no message came within {self.timeout} s while reading "
                    f"{subject} (was the log removed meanwhile?)"
                ) from None
            except _UNAVAILABLE as error:  # a replicated consumer just made: no leader yet
                failure = error
                continue
            return [(message.metadata.sequence.stream, message.data) for message in messages]
        raise LogError(
            f"{self.servers[0]}: no consumer of {subject} answered in {self.patience} s ({failure})"
        )

    async def _delete_consumer(self, consumer: JetStreamContext.PullSubscription) -> None:
        info = await consumer.consumer_info()
        await consumer.unsubscribe()
        js = await self._jetstream()
        await js.delete_consumer(self.stream, info.name)

    async def drop_last(self, store: NatsStore, size: int) -> int:
        """Replace the subject's last message, which must hold a torn line of ``size`` bytes,
        by an empty one (no line, but the log stays held, as an emptied file does); returns
        the empty message's sequence."""
        last = await self._last_message(store.subject)
        data = last.data or b""
        if last.seq is None or data.endswith(b"\n") or len(data) != size:
            raise UsageError(f"{store.name}: the last line is not a torn line of {size} bytes")
        store.last = last.seq
        marker = await self.publish(store, [b""])  # refused if another writer appended since
        js = await self._jetstream()
        await self._retried(lambda: js.delete_msg(self.stream, last.seq or 0))
        return marker
