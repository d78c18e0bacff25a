"""Fuzzing every decoder of outside bytes: any input gives a typed error (or a valid value),
never an unexpected exception, and never a change of state it should not cause."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matchlock import events as ev
from matchlock import protocol as pr
from matchlock.chain import LogDecoder
from matchlock.config import parse_matchlock_config, parse_room_config
from matchlock.downloads import ArchiveError, UnpackLimits
from matchlock.downloads.unpack import unpack_archive
from matchlock.errors import ConfigError, LogError
from matchlock.hosting import RoomHost
from matchlock.transport.connect import listen, open_connection
from tests.test_eventlog import LINES
from tests.test_host import CONFIG, Harness, report

VALID_FRAMES = [
    pr.encode(pr.Hello(protocol=1, room=CONFIG, user_id="alice")),
    pr.encode(pr.Answer(signature="A" * 88)),
    report("alice", ev.PieceProgress(at=0, user_id="alice", piece="chars/kfm", done=5)),
    pr.encode(pr.Goodbye()),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def mutated(frames: list[bytes]) -> st.SearchStrategy[bytes]:
    """A valid frame with a few bytes changed, cut, or grown."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(frames)))
        for _ in range(draw(st.integers(1, 4))):
            if not data:
                break
            position = draw(st.integers(0, len(data) - 1))
            action = draw(st.sampled_from(["flip", "cut", "insert"]))
            if action == "flip":
                data[position] = draw(st.integers(0, 255))
            elif action == "cut":
                del data[position:]
            else:
                data[position:position] = draw(st.binary(min_size=1, max_size=8))
        return bytes(data)

    return build()


frames = st.one_of(
    st.binary(max_size=300),
    mutated(VALID_FRAMES),
    json_values.map(lambda v: json.dumps(v).encode()),
)


@given(frames)
def test_wire_decoders_only_raise_message_errors(data: bytes) -> None:
    for decode in (pr.decode_client_message, pr.decode_host_message):
        try:
            decode(data)
        except pr.MessageError as error:
            assert error.code in ("malformed", "too-large")


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=6))
def test_the_host_survives_any_frames_and_changes_nothing_for_strangers(data: list[bytes]) -> None:
    h = Harness()
    member, _ = h.join("alice")
    before = h.state()
    stranger = h.connect()
    for frame in data:
        h.send(stranger, frame)
        h.send(member, frame)
    after = h.state()
    assert after.members["bob"] == before.members["bob"]  # nobody spoke for bob
    assert after.status == before.status


@given(st.integers(0, len(b"".join(LINES)) - 1), st.binary(min_size=1, max_size=4))
def test_log_decoder_only_raises_log_errors(position: int, junk: bytes) -> None:
    data = bytearray(b"".join(LINES))
    data[position : position + len(junk)] = junk
    with contextlib.suppress(LogError):
        list(LogDecoder("fuzz.log").events(bytes(data).splitlines(keepends=True)))


@given(st.binary(max_size=200))
def test_log_decoder_on_random_bytes(data: bytes) -> None:
    with pytest.raises(LogError):
        list(LogDecoder("fuzz.log").events(data.splitlines(keepends=True)))


@given(st.one_of(st.binary(max_size=200), json_values.map(json.dumps)))
def test_config_parsers_only_raise_config_errors(data: bytes | str) -> None:
    for parse in (parse_matchlock_config, parse_room_config):
        try:
            parse(data)
        except ConfigError as error:
            assert error.problems


@given(st.builds(lambda v: {"collections": {"chars": {"pieces": {"k": v}}}}, json_values))
def test_config_parser_on_json_shapes(value: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        parse_matchlock_config(json.dumps(value))


member_names = st.one_of(
    st.text(min_size=1, max_size=30),
    st.lists(
        st.sampled_from(["..", ".", "", "a", "b.txt", "/", "C:", "\\x", "\x00"]),
        min_size=1,
        max_size=5,
    ).map("/".join),
)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(member_names, min_size=1, max_size=4))
def test_archive_member_names_never_escape(
    tmp_path_factory: pytest.TempPathFactory, names: list[str]
) -> None:
    work = tmp_path_factory.mktemp("zip")
    archive, into = work / "a.zip", work / "into"
    into.mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in names:
            try:
                zf.writestr(name, b"x")
            except (ValueError, UnicodeEncodeError, IndexError):
                return  # zipfile itself refuses to write such a name
    archive.write_bytes(buffer.getvalue())
    with contextlib.suppress(ArchiveError):
        unpack_archive(archive, "zip", into, UnpackLimits())
    for path in work.rglob("*"):
        assert path == archive or path.resolve().is_relative_to(into.resolve()), path
    assert {p.name for p in work.iterdir()} == {"a.zip", "into"}


def test_fuzz_inputs_include_the_valid_frames() -> None:
    for frame in VALID_FRAMES:
        pr.decode_client_message(frame)
    assert Path(__file__).exists()


async def _tcp_session(chunks: list[bytes]) -> tuple[list[bytes], bool]:
    """Send ``chunks`` over a real TCP connection to a room host; returns what came back and
    whether a well-behaved member can still join afterwards."""
    host = RoomHost(None)
    await host.start()
    listener = await listen("tcp://127.0.0.1:0", host)
    try:
        reader, writer = await asyncio.open_connection(*listener.address)
        for chunk in chunks:
            writer.write(chunk)
        await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(5):
            replies = (await reader.read()).splitlines()
        writer.close()
        good = await open_connection(listener.url)
        good.send_nowait(pr.encode(pr.Hello(protocol=1, room=CONFIG, user_id="bob")))
        async with asyncio.timeout(5):
            challenged = isinstance(pr.decode_host_message(await good.recv()), pr.Challenge)
        await good.close()
        return replies, challenged
    finally:
        await listener.close()
        await host.stop()


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=200), frames.map(lambda f: f + b"\n")), max_size=5))
def test_tcp_framing_survives_any_bytes(chunks: list[bytes]) -> None:
    replies, still_serving = asyncio.run(_tcp_session(chunks))
    for reply in replies:
        message = pr.decode_host_message(reply)  # every reply is a well-formed host message
        assert isinstance(message, (pr.Challenge, pr.Refused, pr.Welcome, pr.Relay))
    assert still_serving
