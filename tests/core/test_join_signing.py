"""A member's answer is signed by libsodium when PyNaCl is installed, and is the very signature
OpenSSL makes (Ed25519 is deterministic): the same bytes on the wire either way."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from matchlock.core import client as client_module
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol, challenge_signature
from matchlock.tools.testing import insecure_key
from tests.core.test_host import CONFIG


@settings(max_examples=300, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=400))
def test_the_signature_is_openssls(seed: bytes, message: bytes) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    assert client_module._SODIUM_SIGN is not None  # the test extra installs PyNaCl
    assert challenge_signature(key, message) == key.sign(message)


def test_without_pynacl_openssl_signs(monkeypatch: pytest.MonkeyPatch) -> None:
    key = insecure_key("alice")
    monkeypatch.setattr(client_module, "_SODIUM_SIGN", None)
    assert challenge_signature(key, b"a message") == key.sign(b"a message")


def test_the_answer_frame_carries_openssls_signature() -> None:
    key = insecure_key("alice")
    member = ClientProtocol(CONFIG, "alice", key)
    member.hello()
    nonce = "0123456789abcdef" * 2
    out = member.receive(pr.encode(pr.Challenge(nonce=nonce)))
    expected = key.sign(pr.challenge_bytes(CONFIG.room_id, "alice", nonce))
    answer = pr.encode(pr.Answer(signature=base64.b64encode(expected).decode()))
    assert out.sends == [answer]
