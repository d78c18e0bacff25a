"""A small Ikemen-style match on local files: a character and a stage as zip archives reached by
``file://``, the match-lock config, a key pair and a room signed by its one player, all written
by the real command line. Shared by the fingerprint, cache and Ikemen GO tests."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matchlock.cli import main
from tests.downloads.conftest import piece, zip_bytes

KFM_DEF = b'[Info]\nname = "Kung Fu Man"\n[Files]\nsprite = kfm.sff\n'
DOJO_DEF = b'[Info]\nname = "Dojo"\n[BGdef]\nspr = dojo.sff\n'
KFM = zip_bytes({"kfm/kfm.def": KFM_DEF, "kfm/kfm.sff": bytes(range(256)) * 8})
DOJO = zip_bytes({"dojo.def": DOJO_DEF, "dojo.sff": bytes(range(128)) * 4})


@dataclass(frozen=True)
class Match:
    """The files of the match: ``config`` and ``room`` (signed by ``user`` with ``key``)."""

    folder: Path
    config: Path
    room: Path
    key: Path
    user: str = "p1"


def free_port() -> int:
    """A port of 127.0.0.1 nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def write_match(folder: Path, room_id: str = "friday-1") -> Match:
    """Write the archives, the config, a key and the signed room under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kfm.zip").write_bytes(KFM)
    (folder / "dojo.zip").write_bytes(DOJO)
    collections: dict[str, Any] = {
        "chars": {
            "mandatory": True,
            "engine_path": "chars/{piece}",
            "pieces": {"kfm": piece(KFM, (folder / "kfm.zip").as_uri(), unpack="zip")},
        },
        "stages": {
            "mandatory": True,
            "engine_path": "stages/{piece}",
            "pieces": {"dojo": piece(DOJO, (folder / "dojo.zip").as_uri(), unpack="zip")},
        },
    }
    config = folder / "matchlock.json"
    config.write_text(json.dumps({"collections": collections}))
    key, room = folder / "p1.key", folder / "room.json"
    if not key.exists():
        assert main(["keygen", "--out", str(key)]) == 0
    new = ["room", "new", "--room-id", room_id, "--config", str(config), "--force"]
    assert main([*new, "--user", f"p1={key}.pub", "--out", str(room)]) == 0
    assert main(["room", "sign", str(room), "--user", "p1", "--key", str(key)]) == 0
    return Match(folder, config, room, key)


def join_args(match: Match, *extra: str) -> list[str]:
    """``matchlock join`` hosting the match's room in this process on a free port, as its
    one player, with ``--json``."""
    url = f"tcp://127.0.0.1:{free_port()}"
    return [
        *("join", url, "--host", "--room", str(match.room), "--user", match.user),
        *("--key", str(match.key), "--config", str(match.config), "--json"),
        *("--deadline", "30", "--retry-delay", "0.1"),
        *extra,
    ]


def result_line(out: str) -> dict[str, Any]:
    """The last line of a ``--json`` output: the result object."""
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    assert result["type"] == "result", result
    return result
