"""Pieces from room members over a LAN: two hosts (network namespaces joined by a veth pair,
:mod:`tests.transport.test_lan_netns`), alice hosting ``lan://party`` with the content on her
disk, bob with a config whose files are not on his. Over ``lan://`` the room comes first among a
piece's sources, so bob asks alice before his own (missing) files and gets both pieces from her
(while she has not finished one, the room says so and bob's file is tried, then the room again;
alice, asking the room first as well, goes on to her files at once).
Skipped, with the reason, where namespaces cannot be made."""

from __future__ import annotations

import json

from matchlock.core import events as ev
from matchlock.store.eventlog import read_events
from tests.transport.test_lan_netns import (
    Lan,
    finish,
    host_room,
    join_args,
    lan,
    write_room,
)

__all__ = ["lan"]  # the fixture, used by name


async def test_over_a_lan_pieces_come_from_the_hosting_player_first(lan: Lan) -> None:
    write_room(lan.folder, ("alice", "bob"))
    config = json.loads((lan.folder / "matchlock.json").read_text())
    for collection in config["collections"].values():
        for piece in collection["pieces"].values():
            piece["resolvables"] = [{"url": (lan.folder / "nowhere.zip").as_uri()}]
    (lan.folder / "bob.json").write_text(json.dumps(config))
    home, away = lan.host("home"), lan.host("away")
    lan.cable(home, "10.77.0.1/24", away, "10.77.0.2/24")

    alice = await host_room(lan, home)
    args = list(join_args("bob"))
    args[args.index("matchlock.json")] = "bob.json"
    code, out, err = await lan.run(away, *args, timeout=40)
    assert code == 0, (out.splitlines()[-1][:2000], err[-2000:])
    assert (await finish(alice, 20))[0] == 0
    events = read_events(lan.folder / "bob" / "room.log").events
    mine = [e for e in events if getattr(e, "user_id", "") == "bob"]
    finished = {e.piece: e.source for e in mine if isinstance(e, ev.PieceFinished)}
    assert finished == {"chars/kfm": "room:alice", "stages/dojo": "room:alice"}
    for key in finished:  # the room was asked first: anything that failed first was the room
        failed = [
            e.failure.url for e in mine if isinstance(e, ev.ResolvableFailed) and e.piece == key
        ]
        assert failed[:1] in ([], ["room:"]), (key, failed)
