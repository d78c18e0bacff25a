"""Key files: written safely (0600, no overwrite), read back, and bad files named."""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from matchlock.app.keys import (
    generate_key,
    load_private_key,
    load_public_key,
    public_key_path,
    save_keypair,
)
from matchlock.cli import main
from matchlock.core.errors import KeyFileError
from matchlock.core.signing import public_key_to_b64

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes and links")


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def test_generated_keys_differ() -> None:
    assert raw(generate_key()) != raw(generate_key())


@posix_only
def test_the_private_key_is_mode_0600_and_both_files_round_trip(tmp_path: Path) -> None:
    key = generate_key()
    private_path, public_path = save_keypair(key, tmp_path / "alice.key")
    assert public_path == tmp_path / "alice.key.pub" == public_key_path(private_path)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    line = public_path.read_text(encoding="ascii")
    assert line == public_key_to_b64(key.public_key()) + "\n"
    assert len(base64.b64decode(line)) == 32
    assert raw(load_private_key(private_path)) == raw(key)
    assert load_public_key(public_path).public_bytes_raw() == raw(key)
    assert load_private_key(str(private_path)).private_bytes_raw() == key.private_bytes_raw()


def test_existing_files_are_not_overwritten(tmp_path: Path) -> None:
    first = generate_key()
    path, pub = save_keypair(first, tmp_path / "k")
    before = (path.read_bytes(), pub.read_bytes())
    with pytest.raises(KeyFileError, match="already exists"):
        save_keypair(generate_key(), path)
    assert (path.read_bytes(), pub.read_bytes()) == before


def test_an_existing_public_file_alone_stops_the_write(tmp_path: Path) -> None:
    public_key_path(tmp_path / "k").write_text("someone else's\n")
    with pytest.raises(KeyFileError, match=r"k\.pub"):
        save_keypair(generate_key(), tmp_path / "k")
    assert not (tmp_path / "k").exists()


@posix_only
def test_a_planted_link_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("precious")
    (tmp_path / "k").symlink_to(target)
    with pytest.raises(KeyFileError):
        save_keypair(generate_key(), tmp_path / "k")
    assert target.read_text() == "precious"


@posix_only
def test_overwrite_replaces_both_files_atomically(tmp_path: Path) -> None:
    path, pub = save_keypair(generate_key(), tmp_path / "k")
    path.chmod(0o644)
    second = generate_key()
    save_keypair(second, path, overwrite=True)
    assert raw(load_private_key(path)) == raw(second)
    assert load_public_key(pub).public_bytes_raw() == raw(second)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "k.pub"]  # no temporary left


def test_a_pem_public_key_is_accepted(tmp_path: Path) -> None:
    key = generate_key()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "k.pem").write_bytes(pem)
    assert load_public_key(tmp_path / "k.pem").public_bytes_raw() == raw(key)


def pem_private(key: ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


BAD_PRIVATE = {
    "missing": (None, "no such key file"),
    "empty": (b"", "not a PEM private key"),
    "garbage": (b"hello\n", "not a PEM private key"),
    "public": (b"A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=\n", "not a PEM private key"),
    "ecdsa": (pem_private(ec.generate_private_key(ec.SECP256R1())), "not an Ed25519"),
    "x25519": (pem_private(x25519.X25519PrivateKey.generate()), "not an Ed25519"),
    "encrypted": (
        generate_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
        "encrypted",
    ),
    "huge": (b"-----BEGIN PRIVATE KEY-----\n" + b"A" * 20_000, "larger than"),
}


@pytest.mark.parametrize("case", sorted(BAD_PRIVATE))
def test_bad_private_key_files_are_named(tmp_path: Path, case: str) -> None:
    content, reason = BAD_PRIVATE[case]
    path = tmp_path / f"{case}.key"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(KeyFileError, match=reason) as caught:
        load_private_key(path)
    assert str(path) in str(caught.value)


BAD_PUBLIC = {
    "missing": None,
    "empty": b"",
    "short": base64.b64encode(b"k" * 31) + b"\n",
    "long": base64.b64encode(b"k" * 33) + b"\n",
    "two keys": b"A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=\n" * 2,
    "binary": b"\xff\xfe\x00",
    "private pem": pem_private(x25519.X25519PrivateKey.generate()),
    "x25519 pem": x25519.X25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
}


@pytest.mark.parametrize("case", sorted(BAD_PUBLIC))
def test_bad_public_key_files_are_named(tmp_path: Path, case: str) -> None:
    path = tmp_path / f"{case}.pub"
    content = BAD_PUBLIC[case]
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(KeyFileError) as caught:
        load_public_key(path)
    assert str(path) in str(caught.value)


def test_a_folder_is_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key(tmp_path)


# --- keygen into a folder that does not exist, or cannot be written (issue 13) ------------------


@posix_only
def test_a_missing_parent_folder_is_created_private(tmp_path: Path) -> None:
    key = generate_key()
    private_path, public_path = save_keypair(key, tmp_path / "keys" / "alice")
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert raw(load_private_key(private_path)) == raw(key)
    assert public_path.parent == tmp_path / "keys"
    nested = save_keypair(generate_key(), tmp_path / "a" / "b" / "bob")[0]
    assert stat.S_IMODE(nested.parent.stat().st_mode) == 0o700


def test_a_parent_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("not a folder")
    with pytest.raises(KeyFileError, match=r"keys exists and is not a folder"):
        save_keypair(generate_key(), tmp_path / "keys" / "alice")


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """``folder`` that this process cannot create anything in: mode 0500, or, for root (whom
    modes do not stop), the immutable attribute."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    made = subprocess.run(["chattr", "+i", str(folder)], check=False, capture_output=True)
    if made.returncode != 0:
        pytest.skip("this filesystem has no immutable attribute and root ignores modes")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@posix_only
def test_an_unwritable_parent_is_said_in_words(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    with unwritable(locked):
        with pytest.raises(KeyFileError) as caught:
            save_keypair(generate_key(), locked / "alice")
        assert f"the folder {locked} is not writable by this user" in str(caught.value)
        with pytest.raises(KeyFileError) as caught:
            save_keypair(generate_key(), locked / "keys" / "alice")
        message = str(caught.value)
        assert f"the folder {locked / 'keys'} does not exist and cannot be created" in message
        assert f"inside {locked}" in message
        with pytest.raises(KeyFileError, match="cannot replace the key files"):
            save_keypair(generate_key(), locked / "alice", overwrite=True)
        assert os.listdir(locked) == []


@posix_only
def test_keygen_on_the_command_line_creates_the_folder_or_says_why_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--out", str(tmp_path / "keys" / "alice")]) == 0
    assert (tmp_path / "keys" / "alice.pub").is_file()
    with unwritable(tmp_path / "locked"):
        assert main(["keygen", "--out", str(tmp_path / "locked" / "keys" / "alice")]) == 2
    err = capsys.readouterr().err
    assert "does not exist and cannot be created" in err and "Errno" not in err
