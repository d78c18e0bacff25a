"""Signing and checking room configs: the canonical byte form, Ed25519 signatures, restrictions.

A room opens only when every expected user has signed it. What they sign is
:func:`signed_room_bytes`: a domain-separation line followed by :func:`canonical_room_bytes`, the
room config without its ``signatures`` written as compact JSON with sorted keys (the exact form is
specified in ``docs/canonical-form.md``, precisely enough for a client in another language).
Signatures and public keys travel as standard, padded base64 of their raw bytes (64 and 32).

:func:`verify_room` and :func:`signature_report` say, per user, whether a signature is missing,
malformed, wrong, or comes from someone the room does not expect. Whether a room fits a
match-lock config and its own restrictions is :mod:`matchlock.core.fitting`'s (its
:func:`check_room`, :func:`pin_problems` and :func:`require_room_fits` are importable from here
too).

Every signature covers the same bytes, so users can sign at the same time:
:func:`detached_signature` makes one user's signature without touching the room,
:func:`add_signature` adds one after checking it against this room's bytes, and
:func:`merge_signed` merges several signed copies of one room (``docs/signing.md``).

Every signature is judged as OpenSSL (``cryptography``) judges it; with PyNaCl installed (the
speed extra), libsodium is asked first and OpenSSL only about what it refuses
(:func:`signature_verifies`), which halves the cost of a valid signature.

This module is part of the core: it never reads files, the clock or a random source (Ed25519
signatures are deterministic, so signing needs no randomness either).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from matchlock.core.config import MAX_EXACT_INTEGER, RoomConfig
from matchlock.core.errors import InputError, SignatureError, UsageError
from matchlock.core.fitting import check_room, pin_problems, require_room_fits

__all__ = [
    "ROOM_SIGNATURE_DOMAIN",
    "SignatureReport",
    "add_signature",
    "canonical_room_bytes",
    "check_room",
    "detached_signature",
    "merge_signed",
    "pin_problems",
    "public_key_from_b64",
    "public_key_to_b64",
    "require_room_fits",
    "room_digest",
    "sign_room",
    "signature_report",
    "signature_verifies",
    "signed_room_bytes",
    "verify_room",
]

ROOM_SIGNATURE_DOMAIN = b"matchlock-room-config-v1\n"
"""Prefixed to the canonical bytes before signing, so a room signature can never be mistaken for
a signature over anything else (a join challenge, a future config version)."""

_PUBLIC_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


def _sodium() -> tuple[Callable[[bytes, bytes], bytes], type[Exception]] | None:
    """libsodium's Ed25519 check and the error it raises for a refused signature, when PyNaCl
    (the speed extra) is installed: it verifies in about half OpenSSL's time."""
    try:
        from nacl.bindings import crypto_sign_open
        from nacl.exceptions import BadSignatureError
    except ImportError:  # pragma: no cover - the test extra installs it
        return None
    return crypto_sign_open, BadSignatureError


_SODIUM = _sodium()


# --- canonical form -----------------------------------------------------------------------------


def _check_value_space(value: Any, path: str) -> None:
    """Refuse anything whose JSON text would differ between ``json.dumps`` and RFC 8785."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UsageError(f"{path}: canonical form needs string keys, got {key!r}")
            _check_value_space(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_value_space(item, f"{path}[{index}]")
    elif isinstance(value, bool) or not isinstance(value, str | int):
        # Floats, booleans and nulls have no place in a room config; one appearing here means
        # the schema changed without the canonical form being revisited.
        raise UsageError(f"{path}: canonical form carries strings and integers only, got {value!r}")
    elif isinstance(value, int) and abs(value) > MAX_EXACT_INTEGER:
        raise InputError(
            f"{path}: {value} is larger than {MAX_EXACT_INTEGER}, the largest integer "
            "a room config can carry exactly"
        )


def canonical_room_bytes(room: RoomConfig) -> bytes:
    """The canonical bytes of ``room`` without its signatures (``docs/canonical-form.md``).

    Every field is written, defaults included, except the optional fields added after the first
    version (``restrictions.room_source``, a pin's unset pair), which are left out when unset, so
    a room signed before they existed signs the same bytes; object keys are sorted by code
    point, there is no whitespace, strings are UTF-8 without ASCII escaping. For the values a
    room config holds (strings and integers up to :data:`MAX_EXACT_INTEGER`) this is exactly
    RFC 8785 (JCS).
    Raises :class:`InputError` for a larger integer.
    """
    value = room.model_dump(mode="json", exclude={"signatures"})
    _check_value_space(value, "$")
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def signed_room_bytes(room: RoomConfig) -> bytes:
    """The bytes every user signs: :data:`ROOM_SIGNATURE_DOMAIN` then the canonical bytes."""
    return ROOM_SIGNATURE_DOMAIN + canonical_room_bytes(room)


def room_digest(room: RoomConfig) -> bytes:
    """The sha256 of ``room``'s JSON, signatures included: equal digests mean equal canonical
    bytes and equal signatures, so the outcome of a signature check can be remembered by it.

    The JSON (``model_dump_json``) goes through the same serializers as the canonical form's
    ``model_dump(mode="json")``, so it determines the canonical bytes exactly (the canonical
    form only sorts its keys, drops the signatures and checks the value space), and costs a
    small part of :func:`canonical_room_bytes`. Two copies of one room whose dicts list their
    entries in another order have different digests: a cache checks both, each once.
    """
    return hashlib.sha256(room.model_dump_json().encode("utf-8")).digest()


# --- keys and signatures -----------------------------------------------------------------------


def _strict_b64decode(text: str) -> bytes | None:
    """Decode standard padded base64, or None when ``text`` is not its one canonical spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    # Re-encoding refuses non-zero padding bits, so each key or signature has one spelling only.
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def public_key_to_b64(key: Ed25519PublicKey) -> str:
    """The standard, padded base64 of the raw 32-byte public key (as in a room config)."""
    return base64.b64encode(key.public_bytes_raw()).decode("ascii")


def public_key_from_b64(text: str, source: str = "public key") -> Ed25519PublicKey:
    """Read a public key written by :func:`public_key_to_b64`; ``source`` names it in errors.

    Raises :class:`InputError` when ``text`` is not base64 of exactly 32 bytes.
    """
    key = _public_key(text.strip())
    if key is None:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise InputError(
            f"{source}: expected base64 of a raw {_PUBLIC_KEY_BYTES}-byte Ed25519 "
            f"public key, got {shown!r}"
        )
    return key


_KEYS_CACHED = 4096
"""Public keys kept decoded (a host checks each joining member's answer with its room's key)."""


@functools.lru_cache(maxsize=_KEYS_CACHED)
def _public_key(text: str) -> Ed25519PublicKey | None:
    """The key whose standard base64 is ``text``, or None; remembered (a key object is
    immutable), so that checking a signature does not decode its key again."""
    raw = _strict_b64decode(text)
    if raw is None or len(raw) != _PUBLIC_KEY_BYTES:
        return None
    return Ed25519PublicKey.from_public_bytes(raw)


def signature_verifies(public_key_b64: str, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``message`` by the key whose standard
    base64 is ``public_key_b64``; raises :class:`InputError` as :func:`public_key_from_b64` does
    for a key that is not one.

    The answer is OpenSSL's (``cryptography``'s ``verify``), as it always was. With PyNaCl
    installed, libsodium is asked first, and only what it refuses is asked of OpenSSL: libsodium
    checks the same equation on the same bytes and refuses more (small-order and non-canonical
    points, which no honest key makes), so a signature it accepts is one OpenSSL accepts, and a
    valid signature, the common case, costs libsodium's check alone.
    """
    key = public_key_from_b64(public_key_b64)
    if _SODIUM is not None and len(signature) == _SIGNATURE_BYTES:
        sodium_open, refused = _SODIUM
        try:
            sodium_open(signature + message, key.public_bytes_raw())
        except refused:
            pass
        else:
            return True
    return _openssl_verifies(key, signature, message)


def _openssl_verifies(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether OpenSSL (``cryptography``) accepts ``signature`` of ``message`` by ``key``: the
    reference :func:`signature_verifies` answers as."""
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def detached_signature(room: RoomConfig, user_id: str, private_key: Ed25519PrivateKey) -> str:
    """``user_id``'s signature over ``room`` (base64), without adding it to the room.

    Every user can sign the same room file at the same time and send only this text; whoever
    collects them adds each with :func:`add_signature`. Raises :class:`UsageError` when the room
    does not expect ``user_id`` or when ``private_key`` is not the key whose public half the
    room lists for that user.
    """
    user = room.users.get(user_id)
    if user is None:
        expected = ", ".join(room.users)
        raise UsageError(
            f"room {room.room_id!r} does not expect user {user_id!r} (it expects: {expected})"
        )
    listed = public_key_from_b64(user.public_key, f"$.users.{user_id}.public_key")
    if private_key.public_key().public_bytes_raw() != listed.public_bytes_raw():
        raise UsageError(
            f"this private key does not belong to user {user_id!r}: its public key "
            f"is {public_key_to_b64(private_key.public_key())}, the room lists "
            f"{user.public_key}"
        )
    return base64.b64encode(private_key.sign(signed_room_bytes(room))).decode("ascii")


def _with_signature(room: RoomConfig, user_id: str, signature: str) -> RoomConfig:
    signatures = dict(sorted({**room.signatures, user_id: signature}.items()))
    return room.model_copy(update={"signatures": signatures})


def sign_room(room: RoomConfig, user_id: str, private_key: Ed25519PrivateKey) -> RoomConfig:
    """A copy of ``room`` with ``user_id``'s signature added (or replaced).

    Raises :class:`UsageError` as :func:`detached_signature` does.
    """
    return _with_signature(room, user_id, detached_signature(room, user_id, private_key))


def add_signature(room: RoomConfig, user_id: str, signature: str) -> RoomConfig:
    """A copy of ``room`` with ``signature`` (base64, from :func:`detached_signature`) added
    for ``user_id``, once it verifies against this room's bytes and that user's listed key.

    Raises :class:`InputError` naming the user when the room does not expect them, when the
    text is not base64 of 64 bytes, or when it does not verify (it was made for another room,
    another version of this room, or with another key).
    """
    user = room.users.get(user_id)
    if user is None:
        expected = ", ".join(room.users)
        raise InputError(
            f"a signature for {user_id!r}, whom room {room.room_id!r} does not expect "
            f"(it expects: {expected})"
        )
    status = _signature_status(user.public_key, signature, signed_room_bytes(room))
    if status == "malformed":
        raise InputError(f"the signature for {user_id!r} is not base64 of 64 bytes")
    if status == "wrong":
        raise InputError(
            f"the signature for {user_id!r} does not verify against room {room.room_id!r}: "
            "it was made for another room, or another version of this one, or with a key "
            "other than the one the room lists for that user"
        )
    return _with_signature(room, user_id, signature)


def merge_signed(rooms: Sequence[RoomConfig]) -> RoomConfig:
    """One room carrying every valid signature found on ``rooms``, several signed copies of
    the same room (same canonical bytes). The first copy's signatures come first; a later
    copy adds the users still missing.

    Raises :class:`UsageError` for no rooms, and :class:`InputError` naming the copy (by its
    position, from 1) whose canonical bytes differ from the first's, or the copy and user
    whose signature does not verify.
    """
    if not rooms:
        raise UsageError("merge_signed needs at least one room")
    first, merged = canonical_room_bytes(rooms[0]), rooms[0].model_copy(update={"signatures": {}})
    for number, room in enumerate(rooms, start=1):
        if canonical_room_bytes(room) != first:
            raise InputError(
                f"copy {number} (room {room.room_id!r}) is not the same room as copy 1: "
                "its content, pieces, users or restrictions differ"
            )
        for user_id, signature in room.signatures.items():
            if user_id in merged.signatures:
                continue
            try:
                merged = add_signature(merged, user_id, signature)
            except InputError as error:
                raise InputError(f"copy {number}: {error}") from None
    return merged


@dataclass(frozen=True)
class SignatureReport:
    """Who signed a room validly and what is wrong with everyone else.

    ``valid``, ``missing``, ``malformed`` (not base64 of 64 bytes) and ``wrong`` (does not verify
    against the user's listed key) partition the expected users, in the room's order;
    ``unexpected`` lists signers the room does not expect.
    """

    room_id: str
    valid: tuple[str, ...]
    missing: tuple[str, ...]
    malformed: tuple[str, ...]
    wrong: tuple[str, ...]
    unexpected: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every expected user signed validly and nobody else signed."""
        return not (self.missing or self.malformed or self.wrong or self.unexpected)

    def error(self) -> SignatureError:
        """The :class:`SignatureError` describing this report (meaningful when not ``ok``)."""
        return SignatureError(
            self.room_id,
            list(self.missing),
            list(self.malformed),
            list(self.wrong),
            list(self.unexpected),
        )


def _signature_status(public_key_b64: str, signature_b64: str | None, message: bytes) -> str:
    if signature_b64 is None:
        return "missing"
    signature = _strict_b64decode(signature_b64)
    if signature is None or len(signature) != _SIGNATURE_BYTES:
        return "malformed"
    try:
        verified = signature_verifies(public_key_b64, signature, message)
    except InputError:  # a listed key that is not a key at all can verify nothing
        verified = False
    return "valid" if verified else "wrong"


def signature_report(room: RoomConfig) -> SignatureReport:
    """Check every signature on ``room`` without raising; see :class:`SignatureReport`."""
    return _signature_report(room, signed_room_bytes(room))


def _signature_report(room: RoomConfig, message: bytes) -> SignatureReport:
    by_status: dict[str, list[str]] = {"valid": [], "missing": [], "malformed": [], "wrong": []}
    for user_id, user in room.users.items():
        status = _signature_status(user.public_key, room.signatures.get(user_id), message)
        by_status[status].append(user_id)
    return SignatureReport(
        room_id=room.room_id,
        valid=tuple(by_status["valid"]),
        missing=tuple(by_status["missing"]),
        malformed=tuple(by_status["malformed"]),
        wrong=tuple(by_status["wrong"]),
        unexpected=tuple(signer for signer in room.signatures if signer not in room.users),
    )


def verify_room(room: RoomConfig) -> None:
    """Return when every expected user signed ``room`` validly and nobody else did.

    Otherwise raise :class:`SignatureError` naming each user whose signature is missing,
    malformed or wrong, and each signer the room does not expect. A room that verified is
    remembered by its :func:`room_digest` (:data:`_VERIFIED`), so that checking it again costs
    one hash: a room host checks a config before opening its room and again as it folds the
    opening into the room's state, and a member as it folds the welcome.
    """
    key = room_digest(room)
    if key in _VERIFIED:
        return
    report = _signature_report(room, signed_room_bytes(room))
    if not report.ok:
        raise report.error()
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[key] = None


_VERIFIED: dict[bytes, None] = {}
"""The :func:`room_digest` of rooms that verified: the outcome of a check is a function of
their signed bytes and signatures, which the digest determines, so a hit needs no signature
checked again (a cache, never a fact that changes an outcome). Emptied when it holds
:data:`_VERIFIED_MAX`."""

_VERIFIED_MAX = 1024
