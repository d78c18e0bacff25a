"""Every message and event from a peer is parsed strictly: exact JSON types, finite numbers, no
key twice, every string and list within its bound, only the event version spoken; each failure
is its own refusal code, with a reason that names the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import TypeAdapter

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.config import MAX_EXACT_INTEGER
from tests.core.test_host import CONFIG, Harness, refused

PROGRESS = {"v": 1, "at": 1.5, "type": "piece_progress", "user_id": "alice", "piece": "chars/kfm"}


def report(**fields: Any) -> bytes:
    """A report frame of a ``piece_progress`` event (``done`` 5) with ``fields`` changed."""
    return json.dumps({"type": "report", "event": {**PROGRESS, "done": 5, **fields}}).encode()


def with_event(event: str) -> bytes:
    """A report frame whose event is the raw JSON text ``event``."""
    return b'{"type":"report","event":%s}' % event.encode()


def refusal(frame: bytes, decode: Any = pr.decode_client_message) -> tuple[str, str]:
    with pytest.raises(pr.MessageError) as caught:
        decode(frame)
    assert caught.value.code in pr.DECODE_CODES
    return caught.value.code, caught.value.reason


HELLO = pr.encode(pr.Hello(protocol=1, room=CONFIG, user_id="alice"))
ALICE = CONFIG.users["alice"].model_dump_json().encode()


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        (HELLO.replace(b'"protocol":1', b'"protocol":"1"'), "wrong-type", "hello.protocol"),
        (HELLO.replace(b'"protocol":1', b'"protocol":true'), "wrong-type", "hello.protocol"),
        (HELLO.replace(b'"since":0', b'"since":0.0'), "wrong-type", "hello.since"),
        (report(done="1000"), "wrong-type", "piece_progress.done"),
        (report(done=True), "wrong-type", "piece_progress.done"),
        (report(user_id=7), "wrong-type", "piece_progress.user_id"),
        (report(at="1.5"), "wrong-type", "piece_progress.at"),
        (report(at=float("nan")), "not-finite", "piece_progress.at"),
        (report(at=float("inf")), "not-finite", "piece_progress.at"),
        (report(at=float("-inf")), "not-finite", "piece_progress.at"),
        (report(done=float("nan")), "not-finite", "piece_progress.done"),
        (report().replace(b'"at": 1.5', b'"at": 1e999'), "not-finite", "piece_progress.at"),
        (report(v=2), "unknown-version", "report.event.v"),
        (report(v=0), "unknown-version", "report.event.v"),
        (report(done=-1), "out-of-range", "piece_progress.done"),
        (report(done=MAX_EXACT_INTEGER + 1), "out-of-range", "piece_progress.done"),
        (report(extra=1), "unknown-field", "piece_progress.extra"),
        (report(**{"odd\x1bkey": 1}), "unknown-field", '"odd\\u001bkey"'),
        (report(type="piece_exploded"), "unknown-type", "report.event"),
        (b'{"type":"hello","protocol":1}', "missing-field", "hello.room"),
        (b'{"type":"launch"}', "unknown-type", ""),
        (b"[]", "wrong-type", ""),
        (b"{not json", "malformed-json", "line 1 column 2"),
        (b"\xff\xfe{}", "malformed-json", "line 1"),
        (b"[" * 1000 + b"]" * 1000, "malformed-json", "recursion"),
        (report(piece="../etc"), "bad-value", "piece_progress.piece"),
        (b"x" * (pr.MAX_MESSAGE_BYTES + 1), "too-large", "exceeds"),
    ],
)
def test_each_lenient_or_hostile_frame_has_its_code_and_names_its_field(
    frame: bytes, code: str, field: str
) -> None:
    got, reason = refusal(frame)
    assert got == code, reason
    assert field in reason


@pytest.mark.parametrize(
    "frame",
    [
        report().replace(b'"user_id": "alice"', b'"user_id": "alice", "user_id": "bob"'),
        report().replace(b'"user_id": "alice"', b'"user_id": "bob", "user_id": "alice"'),
        b'{"type":"goodbye","type":"goodbye"}',
        b'{"type" : "goodbye" , "type" : "goodbye"}',  # spaces before the colons: the search
        b'{"type":"goodbye","\\u0074ype":"goodbye"}',  # the same key, spelled with an escape
        HELLO.replace(b'"user_id":"alice"', b'"user_id":"alice","user_id":"bob"'),
        HELLO.replace(b'"max_pieces":', b'"max_pieces":1,"max_pieces":'),  # inside the config
        HELLO.replace(b'"users":{', b'"users":{"alice":%s,' % ALICE),  # a dict's key
        with_event(
            '{"v":1,"at":1,"type":"resolvable_failed","user_id":"alice","piece":"chars/kfm",'
            '"failure":{"index":0,"url":"https://a.example/x","reason":"a\\":b","reason":"c"}}'
        ),
    ],
)
def test_a_key_twice_in_one_object_is_refused(frame: bytes) -> None:
    code, reason = refusal(frame)
    assert code == "duplicate-key", reason
    assert "appears twice" in reason


@pytest.mark.parametrize(
    "event",
    [
        '{"v":1,"at":1,"type":"piece_finished","user_id":"alice","piece":"chars/kfm",'
        '"source":"https://a.example/k.zip?x=\\":y"}',
        '{"v":1,"at":1,"type":"piece_finished","user_id":"alice","piece":"chars/kfm",'
        '"source":":\\":"}',
        '{ "v" : 1 , "at" : 1 , "type" : "piece_started" , "user_id" : "alice" ,'
        ' "piece" : "chars/kfm" }',
        '{"v":1,"at":1,"type":"resolvable_failed","user_id":"alice","piece":"chars/kfm",'
        '"failure":{"index":0,"url":"https://a.example/x","reason":"said \\"user_id\\": bob"}}',
    ],
)
def test_keys_that_only_look_repeated_are_accepted(event: str) -> None:
    message = pr.decode_client_message(with_event(event))
    assert isinstance(message, pr.Report)


def test_the_hot_path_proves_no_duplicates_without_the_exact_search() -> None:
    failure = ev.ResolvableFailure(index=0, url="https://a.example/k.zip", reason="HTTP 404: gone")
    frames = [
        pr.encode(pr.Report(event=event))
        for event in (
            ev.PieceStarted(at=1, user_id="alice", piece="chars/kfm"),
            ev.PieceProgress(at=1, user_id="alice", piece="chars/kfm", done=5),
            ev.ResolvableFailed(at=1, user_id="alice", piece="chars/kfm", failure=failure),
            ev.PieceFinished(at=1, user_id="alice", piece="chars/kfm", source=failure.url),
            ev.PieceFailed(at=1, user_id="alice", piece="chars/kfm", failures=(failure,) * 3),
        )
    ]
    frames += [HELLO, report(), pr.encode(pr.Goodbye())]
    for frame in frames:
        assert pr._surely_no_duplicates(frame, pr.decode_client_message(frame)), frame


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source", "s" * (ev.MAX_URL_LENGTH + 1)),
        ("failure", {"index": 0, "url": "u" * (ev.MAX_URL_LENGTH + 1), "reason": "r"}),
        ("failure", {"index": 0, "url": "u", "reason": "r" * (ev.MAX_REASON_LENGTH + 1)}),
        ("failures", [{"index": i, "url": "u", "reason": "r"} for i in range(ev.MAX_FAILURES + 1)]),
        ("folder", "f" * (ev.MAX_PATH_LENGTH + 1)),
        ("user_id", "a" * 65),
    ],
)
def test_every_bound_is_enforced_at_decode(field: str, value: object) -> None:
    kind = {
        "source": "piece_finished",
        "failure": "resolvable_failed",
        "failures": "piece_failed",
        "folder": "folder_rejected",
        "user_id": "piece_started",
    }[field]
    event: dict[str, object] = {**PROGRESS, "type": kind, field: value}
    if kind == "folder_rejected":
        event = {"folder": "f", "where": "cache", "reason": "r", **event}
    if kind == "resolvable_failed" and field != "failure":
        event["failure"] = {"index": 0, "url": "u", "reason": "r"}
    code, reason = refusal(json.dumps({"type": "report", "event": event}).encode())
    assert code == "too-long", reason
    assert field in reason


def test_a_report_at_every_bound_fits_the_documented_maximum_and_a_frame() -> None:
    worst = "\x01"  # JSON spells it in six bytes, the most any character takes
    failure = ev.ResolvableFailure(
        index=MAX_EXACT_INTEGER,
        url=worst * ev.MAX_URL_LENGTH,
        reason=worst * ev.MAX_REASON_LENGTH,
    )
    common = {
        "at": -1.7976931348623157e308,
        "user_id": "u" * 64,
        "piece": "c" * 64 + "/" + "p" * 64,
    }
    events: list[ev.Event] = [
        ev.PieceFailed(**common, failures=(failure,) * ev.MAX_FAILURES),
        ev.ResolvableFailed(**common, failure=failure),
        ev.PieceFinished(**common, source=worst * ev.MAX_URL_LENGTH),
        ev.FolderRejected(
            **common,
            folder=worst * ev.MAX_PATH_LENGTH,
            where="engine",
            reason=worst * ev.MAX_REASON_LENGTH,
        ),
        ev.PieceProgress(**common, done=MAX_EXACT_INTEGER),
    ]
    for event in events:
        assert len(ev.EventAdapter.dump_json(event)) <= ev.MAX_REPORT_EVENT_BYTES
        frame = pr.encode(pr.Report(event=event))
        assert len(frame) <= pr.MAX_MESSAGE_BYTES
        assert pr.decode_client_message(frame) == pr.Report(event=event)
    largest = max(len(ev.EventAdapter.dump_json(event)) for event in events)
    assert largest > ev.MAX_REPORT_EVENT_BYTES * 0.9  # the figure is the bound, not a guess


_CONFIG_MODELS = {"RoomConfig", "Restrictions", "PinnedPiece", "RoomUser"}
"""Bounded by the 1 MiB frame of a hello, and by config.py's own limits (docs/protocol.md)."""

_FRAME_BOUNDED = {"events", "sizes"}
"""A welcome's events and a download's sizes: bounded by the frame (and the host's history)."""


def _unbounded(schema: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    found = []
    kind = schema.get("type")
    if kind == "string" and not ({"maxLength", "const", "enum"} & set(schema)):
        found.append(path)
    if (
        kind == "array"
        and "maxItems" not in schema
        and path.rsplit(".", 1)[-1] not in _FRAME_BOUNDED
    ):
        found.append(path)
    for key, value in schema.items():
        if key == "$ref":
            name = value.rsplit("/", 1)[-1]
            if name not in _CONFIG_MODELS:
                found += _unbounded(defs[name], defs, f"{path}>{name}")
        elif key == "properties":
            for field, sub in value.items():
                found += _unbounded(sub, defs, f"{path}.{field}")
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            found += _unbounded(value, defs, path)
        elif key in ("anyOf", "oneOf", "allOf"):
            for sub in value:
                found += _unbounded(sub, defs, path)
    return found


@pytest.mark.parametrize("union", [pr.ClientMessage, pr.HostMessage, ev.Event])
def test_every_string_and_list_of_every_message_and_event_has_a_maximum(union: Any) -> None:
    schema = TypeAdapter(union).json_schema()
    assert _unbounded(schema, schema.get("$defs", {}), "") == []


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (pr.relay_frame(3, b'{"v":2,"at":1,"type":"room_all_done"}'), "unknown-version"),
        (
            b'{"type":"welcome","since":0,"events":[{"v":2,"at":1,"type":"room_closed"}]}',
            "unknown-version",
        ),
        (b'{"type":"event","seq":0,"event":{"v":1,"at":1,"type":"room_closed"}}', "out-of-range"),
        (b'{"type":"challenge","nonce":"abcd"}', "bad-value"),
        (b'{"type":"refused","code":"x","reason":"%s","fatal":true}' % (b"r" * 1025), "too-long"),
        (b'{"type":"refused","code":"x","reason":"r","fatal":1}', "wrong-type"),
        (b'{"type":"refused","code":"x","reason":"r","reason":"s","fatal":true}', "duplicate-key"),
        (b'{"type":"event","seq":1,"event":{"v":1,"at":NaN,"type":"room_closed"}}', "not-finite"),
    ],
)
def test_a_member_decodes_its_host_as_strictly(frame: bytes, code: str) -> None:
    assert refusal(frame, pr.decode_host_message)[0] == code


def test_a_host_frame_over_its_limit_is_too_large() -> None:
    frame = b'{"type":"challenge","nonce":"%s"}' % (b"0" * 64)
    assert refusal(frame, lambda data: pr.decode_host_message(data, limit=10))[0] == "too-large"


def test_a_room_config_with_its_keys_reordered_is_the_same_config() -> None:
    raw = json.loads(HELLO)
    raw["room"] = dict(reversed(list(raw["room"].items())))
    hello = pr.decode_client_message(json.dumps(raw).encode())
    assert isinstance(hello, pr.Hello) and hello.room == CONFIG


def test_the_host_refuses_a_coerced_report_with_its_code_and_records_nothing() -> None:
    h = Harness()
    member, _ = h.join("alice")
    h.send(
        member,
        pr.encode(pr.Report(event=ev.PieceStarted(at=1, user_id="alice", piece="chars/kfm"))),
    )
    before = h.state()
    h.send(member, report(done="1000"))
    refused(h, member, "wrong-type", fatal=True)
    assert h.state().members["alice"].pieces == before.members["alice"].pieces
