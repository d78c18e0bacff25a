"""``matchlock download`` as a user runs it: a real subprocess, JSON lines, exit codes, SIGKILL."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from matchlock.cli.download import _run_terminal
from matchlock.core.events import EventAdapter
from matchlock.downloads import STATE_FOLDER
from tests.downloads.conftest import ContentServer, config, piece, sha256

MIB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, collections: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"collections": collections}))
    return path


async def start(*args: str | Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "matchlock",
        "download",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def matchlock_download(*args: str | Path) -> tuple[int, str, str]:
    process = await start(*args)
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


async def test_json_output_is_one_object_per_line(server: ContentServer, tmp_path: Path) -> None:
    good, bad = os.urandom(400_000), os.urandom(1000)
    server.add("good", good)
    server.add("bad", bad)
    path = write_config(
        tmp_path / "matchlock.json",
        {
            "chars": {
                "pieces": {
                    "kfm": piece(good, server.url("ok", "good")),
                    "ryu": piece(bad, server.url("missing", "bad")),
                }
            }
        },
    )
    code, out, _ = await matchlock_download(path, "--dest", tmp_path / "cache", "--json")
    assert code == 1
    lines = json_lines(out)
    *events, result = lines
    types = [EventAdapter.validate_python(e).type for e in events]  # each line is an event
    assert (types[0], types[-1]) == ("download_opened", "download_closed")
    assert types.count("resolvable_failed") == 1 and types.count("piece_failed") == 1
    assert result["type"] == "result"
    folder = Path(result["folders"]["chars/kfm"])
    assert folder.is_absolute() and (folder / "good").read_bytes() == good
    (failure,) = result["failures"]["chars/ryu"]
    assert failure["index"] == 0 and "HTTP 404" in failure["reason"]


async def test_exit_codes(server: ContentServer, tmp_path: Path) -> None:
    data = os.urandom(1000)
    server.add("a", data)
    path = write_config(
        tmp_path / "ok.json", {"c": {"pieces": {"p": piece(data, server.url("ok", "a"))}}}
    )
    code, out, _ = await matchlock_download(path, "--dest", tmp_path / "cache")
    assert code == 0
    assert "installed" in out and "c/p" in out
    broken = tmp_path / "broken.json"
    broken.write_text('{"collections": {"c": {"pieces": {"p": {"sha256": "nope"}}}}}')
    code, out, err = await matchlock_download(broken, "--dest", tmp_path / "cache", "--json")
    assert (code, out) == (2, "")
    assert "broken.json" in err and "sha256" in err


async def test_a_killed_download_completes_on_the_next_run(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(4 * MIB)  # 64 steps of 20 ms from the slow route
    server.add("big", data)
    path = write_config(
        tmp_path / "matchlock.json",
        {"chars": {"pieces": {"big": piece(data, server.url("slow", "big"), filename="big.bin")}}},
    )
    cache = tmp_path / "cache"
    part = cache / STATE_FOLDER / "tmp" / f"{sha256(data)}.part"
    process = await start(path, "--dest", cache, "--json")
    deadline = asyncio.get_running_loop().time() + 20
    while not (part.exists() and part.stat().st_size >= MIB):
        assert asyncio.get_running_loop().time() < deadline, "the download never got going"
        await asyncio.sleep(0.01)
    process.kill()
    await process.wait()
    assert part.stat().st_size < len(data)
    assert not list(cache.glob(f"{sha256(data)}*")), "nothing may look installed"

    server.requests.clear()
    code, out, _ = await matchlock_download(path, "--dest", cache, "--json")
    assert code == 0
    folder = Path(json_lines(out)[-1]["folders"]["chars/big"])
    assert (folder / "big.bin").read_bytes() == data
    (resumed,) = server.requests
    assert resumed.range is not None
    assert int(resumed.range.removeprefix("bytes=").removesuffix("-")) >= MIB
    assert list((cache / STATE_FOLDER / "tmp").iterdir()) == []


async def test_two_processes_install_shared_content_once(
    server: ContentServer, tmp_path: Path
) -> None:
    data = os.urandom(MIB)
    server.add("a", data)
    path = write_config(
        tmp_path / "matchlock.json", {"c": {"pieces": {"p": piece(data, server.url("slow", "a"))}}}
    )
    runs = await asyncio.gather(
        *(matchlock_download(path, "--dest", tmp_path / "cache", "--json") for _ in range(2))
    )
    assert [code for code, _, _ in runs] == [0, 0]
    results = [json_lines(out)[-1]["folders"] for _, out, _ in runs]
    assert results[0] == results[1]
    assert len(server.requests) == 1


def test_the_terminal_display_shows_bars_and_a_summary(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)
    source = tmp_path / "kfm.bin"
    source.write_bytes(data)
    cfg = config(
        {
            "chars": {
                "pieces": {
                    "kfm": piece(data, (tmp_path / "missing.bin").as_uri(), source.as_uri()),
                }
            }
        }
    )
    args = argparse.Namespace(
        dest=tmp_path / "cache", mandatory_only=False, jobs=2, engine_root=None, log=None
    )
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    assert _run_terminal(cfg, args, console) == 0
    shown = screen.getvalue()
    assert "all 1 pieces" in shown
    assert "resolvable 0" in shown and "No such file" in shown
    assert "installed" in shown and source.as_uri() in shown.replace("\n", "")
