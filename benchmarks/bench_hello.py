"""What one unauthenticated hello costs the host core, against parsing its bytes as JSON.

    python benchmarks/bench_hello.py [--repeat R]

Each figure is the median over ``--repeat`` runs (5) of ``HostProtocol.receive`` handling one
``hello`` frame on a fresh connection (sans-IO: no socket, no disk), printed in milliseconds and
as a ratio against ``json.loads`` of the same bytes (the floor: any host must at least read
them). The frames:

- a ~1 MiB hello for a room of 5,900 validly signed users, with the host's room-size bound
  lifted (every signature checked, as before the bound) and at its default (refused
  ``too-many-users`` before any check);
- a 1 MiB hello of 64 users and as many pieces as fit, with the host's piece bound lifted
  (every signature checked over the whole config) and at its default (refused
  ``too-many-pieces`` before any check);
- the costliest hello the default host still checks: 64 users and 1024 pieces (the bounds),
  validly signed (answered by a challenge) and with 64 made-up signatures (no key needed:
  refused ``unsigned-config``), each on a cold cache, then the same config again.

It also prints what that worst hello's parts cost: the strict decode, the canonical form, and
the 64 signature checks (each one hashes the whole config). ``docs/protocol.md`` ("Timeouts and
connection limits") quotes these figures.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import statistics
import time
from collections.abc import Callable

from matchlock.core import protocol as pr
from matchlock.core.config import PinnedPiece, Restrictions, RoomConfig, RoomUser
from matchlock.core.host import MAX_PIECES, MAX_USERS, HostProtocol
from matchlock.core.signing import (
    canonical_room_bytes,
    public_key_to_b64,
    signed_room_bytes,
    verify_room,
)
from matchlock.tools.testing import insecure_key

_CONNECTIONS = itertools.count(1)


def room(users: int, pieces: int, room_id: str, *, forged: bool = False) -> RoomConfig:
    """A room of ``users`` and ``pieces``, signed by every user (or with made-up signatures)."""
    keys = {f"u{i:05d}": insecure_key(f"{room_id}-{i}") for i in range(users)}
    names = [f"p{i:05d}" for i in range(pieces)]
    config = RoomConfig(
        room_id=room_id,
        restrictions=Restrictions(
            allowed_collections=("chars",),
            max_pieces=pieces,
            max_piece_bytes=1 << 30,
            max_total_bytes=(1 << 30) * pieces,
            allowed_schemes=("https",),
        ),
        pieces={"chars": tuple(names)},
        users={u: RoomUser(public_key=public_key_to_b64(k.public_key())) for u, k in keys.items()},
        content={
            f"chars/{n}": PinnedPiece(sha256=hashlib.sha256(n.encode()).hexdigest(), size=1)
            for n in names
        },
    )
    message = signed_room_bytes(config)
    signatures = {
        u: base64.b64encode(bytes(64) if forged else k.sign(message)).decode()
        for u, k in keys.items()
    }
    return config.model_copy(update={"signatures": signatures})


def hello(config: RoomConfig) -> bytes:
    user = next(iter(config.users))
    return pr.encode(pr.Hello(protocol=pr.PROTOCOL_VERSION, room=config, user_id=user))


def filling(users: int, room_id: str, *, forged: bool = False) -> RoomConfig:
    """A room of ``users`` with as many pieces as fit in a 1 MiB hello."""
    one, hundred = (len(hello(room(users, n, room_id))) for n in (1, 101))
    pieces = int((pr.MAX_MESSAGE_BYTES - one) / ((hundred - one) / 100)) - 5
    return room(users, pieces, room_id, forged=forged)


def median_ms(work: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def receive(
    frame: bytes,
    core: HostProtocol | None = None,
    max_users: int = MAX_USERS,
    max_pieces: int = MAX_PIECES,
) -> str:
    """Hand ``frame`` to a fresh connection (of a fresh core unless ``core``); the reply's type
    and code."""
    core = core or HostProtocol(max_users=max_users, max_pieces=max_pieces)
    conn = next(_CONNECTIONS)
    core.connect(conn, b"n" * 16)
    reply = json.loads(core.receive(conn, frame, 0.0).sends[0][1])
    return f"{reply['type']} {reply.get('code', '')}".strip()


def show(
    label: str, frame: bytes, repeat: int, max_users: int = MAX_USERS, max_pieces: int = MAX_PIECES
) -> None:
    floor = median_ms(lambda: json.loads(frame), repeat)
    answer = receive(frame, max_users=max_users, max_pieces=max_pieces)
    took = median_ms(lambda: receive(frame, max_users=max_users, max_pieces=max_pieces), repeat)
    print(f"  {label}: {took:8.1f} ms ({took / floor:5.1f}x json.loads) -> {answer}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat

    big = hello(room(5_900, 1, "big"))
    print(f"a {len(big):,}-byte hello of 5,900 users:")
    show("every signature checked (max_users lifted)", big, repeat, max_users=10_000)
    show(f"default (max_users={MAX_USERS})", big, repeat)

    filled = hello(filling(MAX_USERS, "filled"))
    print(f"a {len(filled):,}-byte hello of {MAX_USERS} users and as many pieces as fit:")
    show("every signature checked (max_pieces lifted)", filled, repeat, max_pieces=100_000)
    show(f"default (max_pieces={MAX_PIECES})", filled, repeat)

    worst = room(MAX_USERS, MAX_PIECES, "worst")
    frame = hello(worst)
    print(f"the costliest checked hello: {len(frame):,} bytes, {len(worst.content):,} pieces:")
    show("valid signatures, cold cache", frame, repeat)
    forged = hello(room(MAX_USERS, MAX_PIECES, "forged", forged=True))
    show("made-up signatures, cold cache", forged, repeat)
    core = HostProtocol()
    receive(frame, core)
    show_again = median_ms(lambda: receive(frame, core), repeat)
    print(f"  the same config again: {show_again:8.1f} ms")
    decode = median_ms(lambda: pr.decode_client_message(frame), repeat)
    canonical = median_ms(lambda: canonical_room_bytes(worst), repeat)
    verify = median_ms(lambda: verify_room(worst), repeat)
    print(
        f"  its parts: decode {decode:.1f} ms, canonical form {canonical:.1f} ms, "
        f"{MAX_USERS} signature checks {verify:.1f} ms"
    )


if __name__ == "__main__":
    main()
