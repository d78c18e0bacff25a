"""Ed25519 key files: make a key pair, write it safely, read it back.

A key pair lives in two files. ``PATH`` holds the private key as unencrypted PKCS#8 PEM, mode
0600, created with ``O_CREAT | O_EXCL`` so that it never follows a planted link and never
silently replaces an existing key. ``PATH.pub`` holds one line: the standard, padded base64 of
the raw 32-byte public key, the same text a room config lists for a user.

This module is part of the shell (files, randomness). Every failure to read a key becomes a
:class:`~matchlock.core.errors.KeyFileError` naming the path and what was wrong; it never hands back
a key of another kind.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from matchlock.core.errors import InputError, KeyFileError
from matchlock.core.signing import public_key_from_b64, public_key_to_b64
from matchlock.store.files import write_file_atomically

__all__ = [
    "generate_key",
    "load_private_key",
    "load_public_key",
    "public_key_path",
    "save_keypair",
]

_MAX_KEY_FILE_BYTES = 16 * 1024
"""A key file is a few hundred bytes; anything far larger is not one and is not read whole."""


def generate_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key from the operating system's random source."""
    return Ed25519PrivateKey.generate()


def public_key_path(path: str | os.PathLike[str]) -> Path:
    """Where the public half of the key at ``path`` is kept: ``path`` with ``.pub`` appended."""
    path = Path(path)
    return path.with_name(path.name + ".pub")


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` holding ``data``; raise :class:`KeyFileError` when it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key file") from None
    except PermissionError:
        raise KeyFileError(
            f"{path}: cannot create the key file: the folder {path.parent} is not writable "
            "by this user"
        ) from None
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _prepare_parent(path: Path) -> None:
    """Create the folder ``path`` goes in (mode 0700: it holds a private key) when it is
    missing; raise :class:`KeyFileError` saying in words what stops it."""
    parent = path.parent
    if parent.is_dir():
        return
    if os.path.lexists(parent):
        raise KeyFileError(f"{path}: {parent} exists and is not a folder")
    try:
        parent.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not parent.is_dir():
            raise KeyFileError(f"{path}: {parent} exists and is not a folder") from None
    except OSError as error:
        missing = next((p for p in [parent, *parent.parents] if p.is_dir()), None)
        where = f" inside {missing}" if missing is not None else ""
        raise KeyFileError(
            f"{path}: the folder {parent} does not exist and cannot be created{where}: "
            f"{error.strerror}"
        ) from None


def save_keypair(
    key: Ed25519PrivateKey, path: str | os.PathLike[str], *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write ``key`` to ``path`` (PKCS#8 PEM, mode 0600) and its public key to ``path.pub``.

    Without ``overwrite``, raises :class:`KeyFileError` when either file exists, and writes
    neither. With ``overwrite``, each file is replaced atomically (a temporary file, then a
    rename), so a crash leaves the old key or the new one, never half of one.
    A missing parent folder is created with mode 0700 (:class:`KeyFileError` says which folder
    when it cannot be). Returns the two paths, private first.
    """
    private_path = Path(path)
    public_path = public_key_path(private_path)
    _prepare_parent(private_path)
    public_line = (public_key_to_b64(key.public_key()) + "\n").encode("ascii")
    if overwrite:
        try:
            write_file_atomically(private_path, _private_pem(key), mode=0o600)
            write_file_atomically(public_path, public_line, mode=0o644)
        except PermissionError:
            raise KeyFileError(
                f"{private_path}: cannot replace the key files: the folder "
                f"{private_path.parent} is not writable by this user"
            ) from None
        return private_path, public_path
    for existing in (private_path, public_path):
        if os.path.lexists(existing):
            raise KeyFileError(f"{existing}: already exists; refusing to overwrite a key file")
    _write_new(private_path, _private_pem(key), 0o600)
    try:
        _write_new(public_path, public_line, 0o644)
    except BaseException:
        # Someone created the .pub meanwhile: leave no private key without its public half.
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path


def _read_key_file(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read the key file: {error.strerror}") from None
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: larger than {_MAX_KEY_FILE_BYTES} bytes, not a key file")
    return data


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read an unencrypted PEM (PKCS#8) Ed25519 private key, as :func:`save_keypair` writes.

    Raises :class:`KeyFileError` naming ``path`` when the file is missing, unreadable, not PEM,
    encrypted, or holds another kind of key.
    """
    path = Path(path)
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(
            f"{path}: the private key is encrypted; matchlock reads unencrypted keys only"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read an Ed25519 public key: a ``.pub`` file (one line of base64 of the raw 32 bytes),
    or a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo) file.

    Raises :class:`KeyFileError` naming ``path`` when the file is missing, unreadable or holds
    no Ed25519 public key.
    """
    path = Path(path)
    data = _read_key_file(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise KeyFileError(f"{path}: not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path}: holds a {type(key).__name__}, not an Ed25519 key")
        return key
    try:
        return public_key_from_b64(data.decode("ascii"), str(path))
    except (UnicodeDecodeError, InputError):
        raise KeyFileError(
            f"{path}: expected one line of base64 of a raw 32-byte Ed25519 public key"
        ) from None
