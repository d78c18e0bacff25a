"""Host core benchmark: what one progress report costs the sans-IO host, against bare JSON.

Run ``python benchmarks/bench_core.py [--rooms 250] [--users 4] [--reports 40000]
[--repeat 7] [--digest]``. It builds rooms as ``benchmarks/bench_host.py`` does (each member
joins for real: signed config, hello, challenge, answer, welcome, then ``piece_started``) in a
:class:`~matchlock.core.host.HostProtocol` holding the last events of each room as ``matchlock
serve`` does, with no sockets and no disk, then feeds it ``piece_progress`` frames, round-robin
over the members, in ``--repeat`` passes of ``--reports`` each. Each report is what the host's
shell does with a frame short of sending it: :meth:`~matchlock.core.host.HostProtocol.receive`
(decode, check, stamp, apply, relay frames) and
:meth:`~matchlock.store.eventlog.EventLog.buffer_json` of every event it records (the
hash-chained log line), into an in-memory log per room.

Printed: the core's CPU microseconds per report (the best pass: CPU time, not wall time, so
that a shared machine's other work counts less), a bare ``json.dumps(json.loads(frame))`` of
the same frames in passes alternating with the core's, their ratio, and the machine load.
``--digest`` also prints the sha256 of everything the core handed back (log lines, frames and
whom they go to, closes, diagnostics) in one more pass of ``--reports`` over fresh rooms: the
same figure before and after a change proves the change kept every byte.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import time

from matchlock.core.client import ClientProtocol
from matchlock.core.config import RoomConfig
from matchlock.core.host import HELD_EVENTS, HostOutput, HostProtocol
from matchlock.store.eventlog import EventLog
from matchlock.tools.testing import insecure_key, pinned, signed_room

PIECE = "chars/p"
REPORT = '{"type":"report","event":{"type":"%s","v":1,"at":0.0,"user_id":"%s","piece":"%s"%s}}'

Member = tuple[int, str, str]  # connection, room id, user id


def configs(rooms: int, users: int) -> list[RoomConfig]:
    """Every room's config, signed by each of its users (made once, before any timing)."""
    names = [f"u{i}" for i in range(users)]
    return [signed_room(f"room{r}", names, pinned({PIECE: 1 << 40})) for r in range(rooms)]


def join_all(host: HostProtocol, rooms: list[RoomConfig], at: float) -> list[Member]:
    """Join every user of every room for real, each then starting the room's piece."""
    members: list[Member] = []
    for config in rooms:
        for user in config.users:
            conn = len(members) + 1
            client = ClientProtocol(config, user, insecure_key(user))
            host.connect(conn, conn.to_bytes(16, "big"))
            out = host.receive(conn, client.hello(), at)
            answer = client.receive(_to(conn, out)[0]).sends[0]
            for frame in _to(conn, host.receive(conn, answer, at)):  # welcome, relays
                client.receive(frame)
            if client.phase != "joined":
                raise SystemExit(f"{user} was not welcomed to {config.room_id}")
            host.receive(conn, (REPORT % ("piece_started", user, PIECE, "")).encode(), at)
            members.append((conn, config.room_id, user))
    return members


def _to(conn: int, out: HostOutput) -> list[bytes]:
    return [frame for to, frame in out.sends if to == conn]


def frames(members: list[Member], reports: int) -> list[tuple[int, bytes]]:
    """``reports`` progress frames, round-robin over ``members``, each one's ``done`` rising."""
    done = dict.fromkeys(range(len(members)), 0)
    out = []
    for n in range(reports):
        index = n % len(members)
        conn, _, user = members[index]
        done[index] += 1
        tail = f',"done":{done[index]}'
        out.append((conn, (REPORT % ("piece_progress", user, PIECE, tail)).encode()))
    return out


def fresh(rooms: list[RoomConfig]) -> tuple[HostProtocol, dict[str, EventLog], list[Member]]:
    """A host with every member joined, and an in-memory log per room holding what it recorded."""
    host = HostProtocol(held_events=HELD_EVENTS)
    logs = {config.room_id: EventLog.in_memory(f"room/{config.room_id}") for config in rooms}
    members = join_all(host, rooms, 1.0)
    for log in logs.values():
        log.take()
    return host, logs, members


def drive(
    host: HostProtocol,
    logs: dict[str, EventLog],
    feed: list[tuple[int, bytes]],
    kept: list[HostOutput] | None = None,
) -> list[bytes]:
    """Every frame of ``feed`` through the core and each recorded event into its room's log,
    as the host's shell does, taking the logs' lines every 1,000 reports as its group commit
    does; the lines taken (and each output in ``kept``, for the digest)."""
    receive, lines = host.receive, []
    at = 2.0
    for n, (conn, frame) in enumerate(feed, start=1):
        at += 0.0001
        out = receive(conn, frame, at)
        for room_id, event, body in out.events:
            logs[room_id].buffer_json(event, body)
        if kept is not None:
            kept.append(out)
        if n % 1000 == 0:
            for log in logs.values():
                lines += log.take()
    for log in logs.values():
        lines += log.take()
    return lines


def bare(feed: list[bytes]) -> None:
    """What any relay must at least do with each frame: read its JSON and write it again."""
    loads, dumps = json.loads, json.dumps
    for frame in feed:
        dumps(loads(frame)).encode()


def timed(rooms: list[RoomConfig], reports: int, repeat: int) -> tuple[float, float]:
    """The best CPU seconds per report of the core and of :func:`bare` over ``repeat``
    alternating passes of ``reports`` frames each (the core's rooms go on from pass to pass)."""
    host, logs, members = fresh(rooms)
    feed = frames(members, reports * repeat)
    same = [frame for _, frame in feed[:reports]]
    core = floor = float("inf")
    for n in range(repeat):
        gc.collect()
        start = time.process_time()
        drive(host, logs, feed[n * reports : (n + 1) * reports])
        core = min(core, (time.process_time() - start) / reports)
        gc.collect()
        start = time.process_time()
        bare(same)
        floor = min(floor, (time.process_time() - start) / reports)
    return core, floor


def digest(rooms: list[RoomConfig], reports: int) -> str:
    """The sha256 of every log line, frame, close and diagnostic of one pass."""
    host, logs, members = fresh(rooms)
    outputs: list[HostOutput] = []
    lines = drive(host, logs, frames(members, reports), outputs)
    hashed = hashlib.sha256()
    for out in outputs:
        for conn, frame in out.sends:
            hashed.update(b"%d:%s\n" % (conn, frame))
        hashed.update(repr((out.closes, out.diagnostics, out.backfills)).encode())
    hashed.update(b"".join(lines))
    return hashed.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rooms", type=int, default=250)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--reports", type=int, default=40_000, help="per pass")
    parser.add_argument("--repeat", type=int, default=7, help="passes; the best is printed")
    parser.add_argument("--digest", action="store_true", help="print the output's sha256 too")
    args = parser.parse_args()
    rooms = configs(args.rooms, args.users)
    core, floor = timed(rooms, args.reports, args.repeat)
    print(
        f"{args.rooms} rooms x {args.users} users, {args.repeat} passes of {args.reports:,} "
        f"progress reports (the best): host core {core * 1e6:.1f} us per report (receive + log "
        f"lines); bare json.loads + json.dumps {floor * 1e6:.2f} us; ratio {core / floor:.1f}x; "
        f"machine load {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min; 2 cores)"
    )
    if args.digest:
        print(f"output digest: {digest(rooms, args.reports)}")


if __name__ == "__main__":
    main()
