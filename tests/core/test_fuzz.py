"""Fuzzing every decoder of outside bytes: any input gives a typed error (or a valid value),
never an unexpected exception, and never a change of state it should not cause."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matchlock.app.hosting import RoomHost
from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.chain import LogDecoder
from matchlock.core.config import parse_matchlock_config, parse_room_config
from matchlock.core.errors import ConfigError, LogError
from matchlock.downloads import ArchiveError, UnpackLimits
from matchlock.downloads.unpack import unpack_archive
from matchlock.transport.connect import listen, open_connection
from tests.core.test_host import CONFIG, Harness, report
from tests.store.test_eventlog import LINES

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


failure = ev.ResolvableFailure(index=1, url="https://a.example/k.zip", reason='HTTP 404: "gone"')
VALID_HOST_FRAMES = [
    pr.encode(pr.Challenge(nonce="00" * 16)),
    pr.encode(pr.Welcome(since=0, events=[ev.RoomOpened(at=1.0, config=CONFIG)])),
    pr.relay_frame(2, ev.EventAdapter.dump_json(ev.MemberJoined(at=2.5, user_id="alice"))),
    pr.encode(pr.Refused(code="illegal", reason="progress 9 outside 10..20", fatal=False)),
]
VALID_REPORTS = [
    report("alice", event)
    for event in (
        ev.ResolvableFailed(at=3.0, user_id="alice", piece="chars/kfm", failure=failure),
        ev.PieceFailed(at=3.0, user_id="alice", piece="chars/kfm", failures=(failure, failure)),
        ev.PieceFinished(at=4.0, user_id="alice", piece="chars/kfm", source=failure.url),
        ev.FolderRejected(
            at=4.0, user_id="alice", piece="chars/kfm", folder="/g/kfm", where="engine", reason="x"
        ),
    )
]

_NASTY = st.one_of(
    st.sampled_from(
        [float("nan"), float("inf"), -float("inf"), True, False, None, "1", "", 0, -1, 1.5]
    ),
    st.sampled_from([2**53, 2**64, 10**400]),
    st.text(min_size=1, max_size=8).map(lambda c: c * 5000),  # past every string's bound
    st.integers(1, 400).map(lambda depth: json.loads("[" * depth + "]" * depth)),  # nesting
    json_values,
)


def _paths(value: object, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _replace(value: object, path: tuple[str | int, ...], new: object) -> object:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: (_replace(v, rest, new) if k == head else v) for k, v in value.items()}
    assert isinstance(value, list) and isinstance(head, int)
    return [_replace(v, rest, new) if i == head else v for i, v in enumerate(value)]


@st.composite
def json_mutated(draw: st.DrawFn, valid: list[bytes]) -> bytes:
    """A valid frame with one value swapped for a hostile one (another JSON type, NaN, a huge
    string, deep nesting), or one of its keys written twice, or reformatted with whitespace."""
    tree = json.loads(draw(st.sampled_from(valid)))
    path = draw(st.sampled_from(_paths(tree)))
    action = draw(st.sampled_from(["swap", "duplicate", "spaces"]))
    if action == "swap":
        return json.dumps(_replace(tree, path, draw(_NASTY))).encode()
    text = json.dumps(tree, indent=draw(st.sampled_from([None, 0, 2]))).encode()
    if action == "spaces":
        return text.replace(b'":', b'" :')
    keys = [key for _, key in re.findall(rb'([{,]\s*)("[a-z_]+"\s*:)', text)]
    if not keys:
        return text
    key = draw(st.sampled_from(keys))
    return text.replace(key, key + json.dumps(draw(_NASTY)).encode() + b"," + key, 1)


wire_frames = st.one_of(
    frames,
    json_mutated(VALID_FRAMES + VALID_REPORTS),
    json_mutated(VALID_HOST_FRAMES),
    mutated(VALID_HOST_FRAMES + VALID_REPORTS),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(wire_frames)
def test_wire_decoders_give_a_message_or_a_known_refusal_and_round_trip(data: bytes) -> None:
    for decode in (pr.decode_client_message, pr.decode_host_message):
        try:
            message = decode(data)
        except pr.MessageError as error:
            assert error.code in pr.DECODE_CODES
            assert error.reason and len(error.reason) <= ev.MAX_REASON_LENGTH
            continue
        assert decode(pr.encode(message)) == message


def test_the_mutations_reach_every_refusal_of_a_known_kind() -> None:
    """The fuzzer's inputs are not only noise: each kind of hostile value is refused as itself."""
    seen: set[str] = set()

    @settings(max_examples=600, database=None)
    @given(st.one_of(json_mutated(VALID_FRAMES + VALID_REPORTS), json_mutated(VALID_HOST_FRAMES)))
    def collect(data: bytes) -> None:
        for decode in (pr.decode_client_message, pr.decode_host_message):
            try:
                decode(data)
            except pr.MessageError as error:
                seen.add(error.code)

    collect()
    wanted = {"duplicate-key", "wrong-type", "not-finite", "too-long", "malformed-json"}
    assert wanted <= seen, wanted - seen


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(wire_frames, min_size=1, max_size=6))
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
    decoder = LogDecoder("fuzz.log")
    try:
        events = list(decoder.events(data.splitlines(keepends=True)))
    except LogError:
        return
    assert events == [] and decoder.torn is not None and decoder.torn.header  # a header's prefix


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
    for frame in VALID_FRAMES + VALID_REPORTS:
        pr.decode_client_message(frame)
    for frame in VALID_HOST_FRAMES:
        pr.decode_host_message(frame)
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
