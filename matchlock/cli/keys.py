"""``matchlock keygen``: make an Ed25519 key pair for signing room configs.

Writes the private key (PKCS#8 PEM, mode 0600) and ``PATH.pub`` (one line of base64), then
prints the public key, which is what the room's creator needs from each user.
"""

from __future__ import annotations

import argparse

from matchlock.app.keys import generate_key, save_keypair
from matchlock.core.signing import public_key_to_b64

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keygen`` to the command line."""
    parser = subparsers.add_parser(
        "keygen",
        help="make an Ed25519 key pair for signing room configs",
        description="Write a new private key to PATH (mode 0600) and its public key to PATH.pub.",
    )
    parser.add_argument(
        "--out", required=True, metavar="PATH", help="where to write the private key"
    )
    parser.add_argument("--force", action="store_true", help="replace existing key files")
    parser.set_defaults(func=run_keygen)


def run_keygen(args: argparse.Namespace) -> int:
    """Generate and save a key pair; print the public key and both paths."""
    key = generate_key()
    private_path, public_path = save_keypair(key, args.out, overwrite=args.force)
    print(f"public key:  {public_key_to_b64(key.public_key())}")
    print(f"private key: {private_path}")
    print(f"public file: {public_path}")
    return 0
