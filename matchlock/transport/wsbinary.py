"""Binary websocket messages written straight to the socket, without a copy of their payload.

A data frame of a peer transfer is up to 512 KiB. ``websockets`` serialises a frame into an
``io.BytesIO`` (the header, then the payload, masked on a client) and hands out a copy of it:
with a fresh masked payload each time, that costs the holder about 1.2 ms of CPU per MB here,
thirty times the masking itself (``benchmarks/bench_peers.py``; most of it the allocator
handing each new 512 KiB buffer fresh pages). :func:`binary_message` makes the same bytes on
the wire (RFC 6455, section 5.2: one final frame, opcode 2, the length in 7, 16 or 64 bits,
a new random 4-byte mask key from a client) as a short header and the payload, masked with
``websockets``' own C routine where a client must mask, and passed on as it is by a server.

It must never be used for anything but one complete binary message, and never before the
frames already queued on the connection's protocol have been written (the caller keeps the
order).
"""

from __future__ import annotations

import secrets
import struct

from websockets.frames import Opcode

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = ["binary_message"]

_FIN_BINARY = 0x80 | Opcode.BINARY.value
_MASK_BIT = 0x80


def binary_message(payload: bytes, *, masked: bool) -> tuple[bytes, bytes]:
    """The header and the payload of one final binary frame carrying ``payload``: masked with
    a new random key when ``masked`` (a client's frames), else the payload object itself."""
    length = len(payload)
    mask_bit = _MASK_BIT if masked else 0
    if length < 126:
        header = struct.pack("!BB", _FIN_BINARY, mask_bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", _FIN_BINARY, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_BINARY, mask_bit | 127, length)
    if not masked:
        return header, payload
    key = secrets.token_bytes(4)
    return header + key, apply_mask(payload, key)
