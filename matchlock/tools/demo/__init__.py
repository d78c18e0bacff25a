"""``matchlock demo``: a whole room in one process, on embedded defaults, loopback only.

:func:`run_demo` makes a key pair per user, builds small real content (zip "characters" and
"stages", plus an optional "music" collection the room does not need), serves it from a real
HTTP mirror on 127.0.0.1 next to a mirror that is down and one that serves corrupt bytes (so the
fallback shows in the logs), writes the match-lock config, builds the room config and has every
user sign it, hosts the room over a real websocket (or TCP) on 127.0.0.1, puts one piece into the
first user's game folder (so it finishes at once) and an edited copy of it into the second
user's (refused, with the reason, and installed afresh), and lets every user join. It returns each
user's ``piece -> folder`` map and where everything was written, all under one folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from matchlock.app.configfile import write_room_config
from matchlock.app.hosting import RoomHost
from matchlock.app.joining import join
from matchlock.app.keys import generate_key, save_keypair
from matchlock.core import events as ev
from matchlock.core.config import MatchLockConfig, RoomConfig, parse_matchlock_config
from matchlock.core.errors import UsageError
from matchlock.core.roomconfig import new_room
from matchlock.core.signing import public_key_to_b64, sign_room
from matchlock.downloads.folder_digest import folder_digest
from matchlock.tools.demo.mirror import Mirror
from matchlock.transport.connect import listen

__all__ = ["DemoResult", "run_demo"]

CHARACTERS = ("kfm", "ryu", "chun-li", "guile", "zangief", "sakura")
STAGES = ("dojo", "temple", "harbor", "rooftop", "market", "forest")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")


@dataclass(frozen=True)
class DemoResult:
    """What the demo did: its folder, the room, the URL it was hosted at, each user's
    ``piece -> folder`` map, and the logs (the host's, and each member's)."""

    folder: Path
    room: RoomConfig
    url: str
    folders: dict[str, dict[str, Path]]
    host_log: Path
    member_logs: dict[str, Path]


def _zip(files: dict[str, bytes]) -> bytes:
    """A zip archive, byte for byte the same every run (fixed member times)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), content)
    return buffer.getvalue()


def _content(pieces: int, rng: random.Random) -> dict[str, bytes]:
    """``collection/piece`` -> a real zip archive; half characters, half stages, one song."""
    chars = CHARACTERS[: (pieces + 1) // 2]
    stages = STAGES[: pieces // 2]
    blobs = {}
    for name in chars:
        definition = f'[Info]\nname = "{name}"\ndisplayname = "{name.title()}"\n'.encode()
        sprites = rng.randbytes(rng.randint(300_000, 900_000))
        blobs[f"chars/{name}"] = _zip({f"{name}.def": definition, f"{name}.sff": sprites})
    for name in stages:
        definition = f'[Info]\nname = "{name.title()}"\n'.encode()
        blobs[f"stages/{name}"] = _zip(
            {f"{name}.def": definition, f"{name}.sff": rng.randbytes(200_000)}
        )
    blobs["music/theme"] = _zip({"theme.ogg": rng.randbytes(150_000)})
    return blobs


def _match_lock(
    blobs: dict[str, bytes], mirror: Mirror, digests: dict[str, str]
) -> MatchLockConfig:
    """The match-lock config. The first character is tried on a mirror that is down first, the
    first stage on a mirror that serves corrupt bytes: both fall back to the good mirror."""
    collections: dict[str, dict[str, Any]] = {}
    for key, data in blobs.items():
        collection, name = key.split("/")
        blob = f"{collection}-{name}.zip"
        mirror.add(blob, data)
        urls = [mirror.url("ok", blob)]
        if name == CHARACTERS[0]:
            urls.insert(0, Mirror.down_url(blob))
        elif name == STAGES[0]:
            urls.insert(0, mirror.url("corrupt", blob))
        entry: dict[str, Any] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "unpack": "zip",
            "resolvables": [{"url": url} for url in urls],
        }
        if key in digests:
            entry["folder_sha256"] = digests[key]
        group = collections.setdefault(
            collection, {"mandatory": collection != "music", "pieces": {}}
        )
        if collection == "chars":
            group["engine_path"] = "chars/{piece}"
        group["pieces"][name] = entry
    return parse_matchlock_config(json.dumps({"collections": collections}), "the demo's config")


def _keys(folder: Path, users: tuple[str, ...]) -> dict[str, Ed25519PrivateKey]:
    keys = {}
    for user in users:
        keys[user] = generate_key()
        save_keypair(keys[user], folder / "keys" / f"{user}.key")
    return keys


async def run_demo(
    folder: Path | None = None,
    *,
    users: int = 3,
    pieces: int = 4,
    transport: str = "ws",
    on_event: Callable[[str, ev.Event], None] | None = None,
) -> DemoResult:
    """Run the demo in ``folder`` (default: a new folder under the temp dir) with ``users``
    users (2 to 8) and ``pieces`` mandatory pieces (2 to 12) over ``transport`` (``ws`` or
    ``tcp``). ``on_event(user, event)`` sees every room event each member sees."""
    if (
        not 2 <= users <= len(USERS)
        or not 2 <= pieces <= 2 * len(STAGES)
        or transport not in ("ws", "tcp")
    ):
        raise UsageError("the demo takes 2-8 users, 2-12 pieces, and the ws or tcp transport")
    folder = folder or Path(tempfile.mkdtemp(prefix="matchlock-demo-"))
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder} is not empty: give the demo a new folder")
    (folder / "keys").mkdir(parents=True, exist_ok=True)
    names = USERS[:users]
    blobs = _content(pieces, random.Random(2026))
    first = f"chars/{CHARACTERS[0]}"
    games = {user: folder / user / "game" for user in names[:2]}
    for game in games.values():  # the first two users' games already hold the first character
        with zipfile.ZipFile(io.BytesIO(blobs[first])) as archive:
            archive.extractall(game / first)
    edited = games[names[1]] / first / f"{CHARACTERS[0]}.def"  # ... the second one edited it
    edited.write_bytes(edited.read_bytes() + b"life = 9999\n")
    mirror = Mirror()
    await mirror.start()
    try:
        config = _match_lock(blobs, mirror, {first: folder_digest(games[names[0]] / first)})
        (folder / "matchlock.json").write_text(
            config.model_dump_json(indent=2, exclude_none=True) + "\n"
        )
        keys = _keys(folder, names)
        room = new_room(
            config, "demo-room", {u: public_key_to_b64(k.public_key()) for u, k in keys.items()}
        )
        for user, key in keys.items():
            room = sign_room(room, user, key)
        write_room_config(room, folder / "room.json")
        setup = _Setup(folder, room, config, keys, games)
        url, results = await _host_and_join(setup, transport, on_event)
    finally:
        await mirror.stop()
    return DemoResult(
        folder=folder,
        room=room,
        url=url,
        folders=dict(zip(names, results, strict=True)),
        host_log=folder / "host-logs" / f"{room.room_id}.log",
        member_logs={user: folder / user / "room.log" for user in names},
    )


@dataclass(frozen=True)
class _Setup:
    """Everything made before the room is hosted."""

    folder: Path
    room: RoomConfig
    config: MatchLockConfig
    keys: dict[str, Ed25519PrivateKey]
    games: dict[str, Path]


async def _host_and_join(
    setup: _Setup, transport: str, on_event: Callable[[str, ev.Event], None] | None
) -> tuple[str, list[dict[str, Path]]]:
    folder, room, config, keys, games = (
        setup.folder, setup.room, setup.config, setup.keys, setup.games
    )  # fmt: skip
    host = RoomHost(folder / "host-logs")
    await host.start()
    listener = await listen(f"{transport}://127.0.0.1:0", host)
    try:
        members = [
            join(
                listener.url,
                room=room,
                user_id=user,
                key=key,
                config=config,
                dest=folder / user / "cache",
                engine_root=games.get(user),
                log_path=folder / user / "room.log",
                on_event=None if on_event is None else partial(on_event, user),
                deadline=120,
                retry_delay=0.2,
            )
            for user, key in keys.items()
        ]
        return listener.url, list(await host.unless_failed(asyncio.gather(*members)))
    finally:
        await listener.close()
        await host.stop()
