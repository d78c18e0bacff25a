"""The join's fast paths answer as the slow ones: libsodium's Ed25519 check is asked first, yet
every signature is judged as OpenSSL judges it (:func:`~matchlock.core.signing.signature_verifies`);
the key count that proves a message holds no key twice (``protocol._parsed_keys``, walking only the
fields that may hold keys) is the number of keys in its JSON; a host that compares a joining
member's config by identity at the answer refuses what it refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import signing
from matchlock.core.client import ClientProtocol
from matchlock.core.config import MAX_EXACT_INTEGER
from matchlock.core.errors import InputError
from matchlock.core.signing import public_key_from_b64, public_key_to_b64, signature_verifies
from matchlock.tools.testing import insecure_key
from tests.core.strategies import room_histories
from tests.core.test_host import CONFIG, Harness, refused
from tests.core.test_signing import parse, room_data, sign_all

IDENTITY = base64.b64encode(b"\x01" + b"\x00" * 31).decode()
"""The neutral point, a key of small order: OpenSSL takes ``R = identity, S = 0`` as its
signature over any message, libsodium refuses it."""


def _flip(data: bytes, bit: int) -> bytes:
    index = bit // 8 % len(data)
    return data[:index] + bytes([data[index] ^ (1 << bit % 8)]) + data[index + 1 :]


@settings(max_examples=200, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    message=st.binary(max_size=300),
    tamper=st.sampled_from(["none", "signature", "message", "key", "random", "length"]),
    bit=st.integers(0, 1023),
    junk=st.binary(max_size=70),
)
def test_a_signature_is_judged_as_openssl_judges_it(
    seed: bytes, message: bytes, tamper: str, bit: int, junk: bytes
) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = public_key_to_b64(key.public_key())
    signature = key.sign(message)
    match tamper:
        case "signature":
            signature = _flip(signature, bit)
        case "message":
            message = _flip(message + b"!", bit)
        case "key":
            public = public_key_to_b64(insecure_key(seed.hex()).public_key())
        case "random":
            signature = (junk * 64)[:64] if junk else bytes(64)
        case "length":
            signature = signature[: len(junk) % 64] if len(junk) % 2 else signature + junk + b"\0"
    reference = signing._openssl_verifies(public_key_from_b64(public), signature, message)
    assert signature_verifies(public, signature, message) is reference
    assert reference is (tamper == "none")


def test_a_small_order_key_is_judged_as_openssl_judges_it_not_as_libsodium() -> None:
    trivial = b"\x01" + b"\x00" * 63  # R = identity, S = 0
    key = public_key_from_b64(IDENTITY)
    assert signing._openssl_verifies(key, trivial, b"any message")
    assert signature_verifies(IDENTITY, trivial, b"any message")  # as before libsodium came


def test_libsodium_is_asked_first_when_it_is_installed() -> None:
    assert signing._SODIUM is not None  # the test extra installs PyNaCl


def test_a_listed_key_that_is_none_is_refused_as_before() -> None:
    with pytest.raises(InputError, match="expected base64"):
        signature_verifies("A" * 42 + "B=", bytes(64), b"x")  # padding bits set: not canonical


def keys_in(data: bytes) -> int:
    """Every key of every object in the JSON ``data``."""
    count = 0

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal count
        count += len(items)
        return dict(items)

    json.loads(data, object_pairs_hook=pairs)
    return count


@settings(max_examples=60, deadline=None)
@given(
    room=room_data(), since=st.integers(0, 5), serve=st.booleans(), protocol=st.sampled_from([1, 2])
)
def test_the_keys_counted_in_a_hello_are_the_keys_of_its_json(
    room: dict[str, Any], since: int, serve: bool, protocol: int
) -> None:
    config = sign_all(parse(room))
    user = next(iter(config.users))
    frame = pr.encode(
        pr.Hello(protocol=protocol, room=config, user_id=user, since=since, serve=serve)
    )
    assert pr._parsed_keys(pr.decode_client_message(frame)) == keys_in(frame)


@settings(max_examples=60, deadline=None)
@given(history=room_histories(max_steps=40), protocol=st.sampled_from([1, 2]))
def test_the_keys_counted_in_a_welcome_and_its_relays_are_the_keys_of_their_json(
    history: tuple[list[ev.Event], list[ev.Event]], protocol: int
) -> None:
    events, _ = history
    welcome = pr.Welcome(since=0, events=events, protocol=protocol, serving=("alice",) * protocol)
    frames = [
        pr.encode(welcome),
        *(pr.encode(pr.Relay(seq=n, event=e)) for n, e in enumerate(events, 1)),
    ]
    for frame in frames:
        assert pr._parsed_keys(pr.decode_host_message(frame)) == keys_in(frame)


def test_a_key_twice_inside_a_hellos_room_is_still_refused() -> None:
    frame = ClientProtocol(CONFIG, "alice", insecure_key("alice")).hello()
    twice = frame.replace(b'"room_id":"r1"', b'"room_id":"r1","room_id":"r1"', 1)
    with pytest.raises(pr.MessageError) as raised:
        pr.decode_client_message(twice)
    assert raised.value.code == "duplicate-key"


def test_an_answer_checks_the_config_again_after_an_equal_one_was_taken_at_the_hello() -> None:
    h = Harness()
    h.join("alice")
    bob = ClientProtocol(CONFIG, "bob", insecure_key("bob"))
    conn = h.connect()
    h.send(conn, bob.hello())  # its config equals the open room's: the room's own is kept
    answer = bob.receive(pr.encode(h.sent[conn][-1])).sends[0]
    h.host.quarantine("r1", "a test damaged its log")  # the room changed since the hello
    h.send(conn, answer)
    refused(h, conn, "quarantined", fatal=True)


def test_a_wrong_answer_is_refused_and_a_right_one_welcomed() -> None:
    h = Harness()
    for user, signer in (("alice", "bob"), ("alice", "alice")):
        client = ClientProtocol(CONFIG, user, insecure_key(signer))
        conn = h.connect()
        h.send(conn, client.hello())
        h.send(conn, client.receive(pr.encode(h.sent[conn][-1])).sends[0])
        if signer != user:
            refused(h, conn, "bad-answer", fatal=True)
        else:
            assert isinstance(h.sent[conn][1], pr.Welcome)


def outcome(frame: bytes) -> tuple[object, ...]:
    """What decoding ``frame`` gives: the message and the fields it was given, or the refusal."""
    try:
        message = pr.decode_client_message(frame)
    except pr.MessageError as error:
        return ("refused", error.code, error.reason)
    return ("decoded", message, message.model_fields_set)


TAILS = st.one_of(
    st.just(None),
    st.builds(
        lambda user, since, serve: f',"user_id":{json.dumps(user)},"since":{since}{serve}}}',
        st.text(max_size=70) | st.sampled_from(["alice", "a..b", "x" * 65, "bob"]),
        st.sampled_from(["0", "3", "01", "-1", "1.0", str(MAX_EXACT_INTEGER + 1), "9" * 17]),
        st.sampled_from(["", ',"serve":true', ',"serve":false', ',"serve":1', ',"since":0']),
    ),
)


@settings(max_examples=150, deadline=None)
@given(room=room_data(), protocol=st.sampled_from([1, 2, 3]), serve=st.booleans(), tail=TAILS)
def test_a_hello_whose_room_was_decoded_before_decodes_as_the_long_way(
    room: dict[str, Any], protocol: int, serve: bool, tail: str | None
) -> None:
    config = sign_all(parse(room))
    user = next(iter(config.users))
    known = pr.encode(pr.Hello(protocol=2, room=config, user_id=user, serve=True))
    frame = pr.encode(pr.Hello(protocol=protocol, room=config, user_id=user, serve=serve))
    if tail is not None:
        frame = frame[: frame.rindex(b',"user_id":"')] + tail.encode()
    pr._ROOMS.clear()
    long_way = outcome(frame)
    pr.decode_client_message(known)  # its room's bytes are remembered now
    assert outcome(frame) == long_way
    if tail is None:
        assert pr._known_hello(frame) == long_way[1]  # and it was the short way


def test_a_remembered_room_with_a_key_added_after_it_is_refused_as_ever() -> None:
    hello = ClientProtocol(CONFIG, "alice", insecure_key("alice")).hello()
    pr.decode_client_message(hello)
    split = hello.rindex(b',"user_id":"')
    for extra, code in ((b',"user_id":"bob"', "duplicate-key"), (b',"extra":1', "unknown-field")):
        frame = hello[:split] + extra + hello[split:]
        with pytest.raises(pr.MessageError) as raised:
            pr.decode_client_message(frame)
        assert raised.value.code == code


def test_the_rooms_remembered_are_bounded() -> None:
    for n in range(pr._ROOMS_KEPT + 5):
        config = CONFIG.model_copy(update={"room_id": f"r{n}"})
        pr.decode_client_message(pr.encode(pr.Hello(protocol=2, room=config, user_id="alice")))
    assert len(pr._ROOMS) == pr._ROOMS_KEPT
