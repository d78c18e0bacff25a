"""Replay benchmark: rebuilding a large room from its log, against a bare JSON-lines parse.

Run ``python benchmarks/bench_replay.py [--events N] [--users U] [--pieces P]``. It writes a log
of a room of U users x P pieces (mostly progress events) to a temp folder, then measures, in the
same run:

- building the room's machines: our per-piece cost beside a naive ``transitions`` model per piece;
- replaying the log (read + parse + validate + chain check + fold) against a bare ``json.loads``
  loop over the same lines: the ratio must stay at or below 2x (issue 16), each line carrying
  its own hash and its predecessor's (why both: ``docs/durability.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from matchlock.core import events as ev
from matchlock.core.machines import PIECE
from matchlock.core.room import Room
from matchlock.store.eventlog import EventLog, replay_file
from matchlock.tools.testing import pinned, signed_room


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def room_events(users: int, pieces: int, total: int) -> list[ev.Event]:
    """A plausible room log: open, joins, every piece started, progress, finished, done, closed."""
    sizes = {f"chars/p{i}": 1_000_000 for i in range(pieces)}
    config = signed_room("bench", [f"u{i}" for i in range(users)], pinned(sizes))
    out: list[ev.Event] = [ev.RoomOpened(at=0.0, config=config)]
    out += [ev.MemberJoined(at=1.0, user_id=u) for u in config.users]
    fixed = len(out) + users * pieces * 2 + users * 2 + 2
    steps = max(1, (total - fixed) // (users * pieces))
    t = 2.0
    for user in config.users:
        for key in sizes:
            out.append(ev.PieceStarted(at=t, user_id=user, piece=key))
            for step in range(1, steps + 1):
                out.append(
                    ev.PieceProgress(
                        at=t, user_id=user, piece=key, done=step * 1_000_000 // (steps + 1)
                    )
                )
            out.append(
                ev.PieceFinished(at=t, user_id=user, piece=key, source="https://a.example/x.zip")
            )
            t += 0.001
        out.append(ev.MemberDone(at=t, user_id=user))
    out.append(ev.RoomAllDone(at=t))
    out += [ev.MemberGoodbye(at=t, user_id=u) for u in config.users]
    out.append(ev.RoomClosed(at=t))
    return out


async def write_log(path: Path, events: list[ev.Event]) -> None:
    log = await EventLog.create(path, "room/bench", durability="none")
    for i in range(0, len(events), 5000):
        await log.append(*events[i : i + 5000])
    await log.close()


def bench_build(users: int, pieces: int) -> None:
    config_keys = [f"chars/p{i}" for i in range(pieces)]
    sizes = dict.fromkeys(config_keys, 1000)
    config = signed_room("build", [f"u{i}" for i in range(users)], pinned(sizes))
    opened = ev.RoomOpened(at=0.0, config=config)
    ours = _best(lambda: Room().apply(opened)) / (users * pieces)

    class Model:
        pass

    naive_n = pieces  # one member's pieces: add_model grows with the models already added

    def naive() -> None:
        machine = PIECE.checker()
        for _ in range(naive_n):
            machine.add_model(Model())

    naive_cost = _best(naive, repeat=1) / naive_n
    print(
        f"build machines ({users} users x {pieces} pieces): {ours * 1e6:.2f} us/piece "
        f"(target <= 20 us); naive transitions add_model: {naive_cost * 1e6:.1f} us/piece "
        f"over {naive_n} models ({naive_cost / ours:.0f}x ours)"
    )


def bench_trigger(count: int = 20_000) -> None:
    """One piece machine stepped through progress events: a ``transitions`` trigger against
    the compiled table's lookup."""

    class Model:
        state: str

    model = Model()
    PIECE.checker(model)
    model.start()  # type: ignore[attr-defined]

    def naive() -> None:
        for _ in range(count):
            model.progress()  # type: ignore[attr-defined]

    def ours() -> None:
        for _ in range(count):
            PIECE.next_state("in_progress", "progress", "p")

    naive_cost, our_cost = _best(naive) / count, _best(ours) / count
    print(
        f"one trigger: transitions {naive_cost * 1e6:.2f} us, compiled table "
        f"{our_cost * 1e6:.2f} us ({naive_cost / our_cost:.0f}x)"
    )


def bench_replay(path: Path, count: int) -> None:
    def bare() -> None:
        with path.open("rb") as file:
            for line in file:
                json.loads(line)

    def ours() -> None:
        replay_file(path)

    floor = _best(bare)
    cost = _best(ours)
    print(
        f"replay {count:,} events: {cost:.2f} s ({count / cost:,.0f} events/s, "
        f"{cost / count * 1e6:.2f} us/event); bare json.loads loop: {floor:.2f} s "
        f"({floor / count * 1e6:.2f} us/event); ratio {cost / floor:.2f}x (target <= 2x); "
        f"machine load {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--pieces", type=int, default=2000)
    args = parser.parse_args()
    bench_build(args.users, args.pieces)
    bench_trigger()
    events = room_events(args.users, args.pieces, args.events)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "room.log"
        asyncio.run(write_log(path, events))
        size = path.stat().st_size
        print(f"log: {len(events):,} events, {size / 1e6:.0f} MB")
        bench_replay(path, len(events))


if __name__ == "__main__":
    main()
