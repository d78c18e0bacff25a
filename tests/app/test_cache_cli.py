"""The shared cache: the default folder, ``matchlock cache list | verify | gc`` on real files, and
garbage collection against a real second process that holds a content's lock."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs
import pytest

from matchlock.app.configfile import load_matchlock_config
from matchlock.cli import main
from matchlock.core.config import parse_matchlock_config
from matchlock.downloads.cache import STATE_FOLDER, Cache
from matchlock.downloads.folder_digest import folder_digest
from matchlock.downloads.manage import (
    collect_garbage,
    default_cache_dir,
    list_cache,
    record_cache_use,
    verify_cache,
)
from tests.app.content_files import Match, join_args, write_match
from tests.downloads.conftest import ContentServer, piece, sha256, zip_bytes

REPO = Path(__file__).resolve().parents[2]
DAY = 86400.0


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``MATCHLOCK_CACHE`` pointing at a fresh folder."""
    root = tmp_path / "shared-cache"
    monkeypatch.setenv("MATCHLOCK_CACHE", str(root))
    return root


def test_the_default_is_the_user_cache_folder_unless_matchlock_cache_says(tmp_path: Path) -> None:
    assert default_cache_dir({}) == Path(platformdirs.user_cache_dir("matchlock", False))
    assert default_cache_dir({"MATCHLOCK_CACHE": str(tmp_path)}) == tmp_path
    assert default_cache_dir({"MATCHLOCK_CACHE": ""}) == default_cache_dir({})
    xdg = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    xdg.pop("MATCHLOCK_CACHE", None)
    code = "from matchlock.downloads.manage import default_cache_dir; print(default_cache_dir())"
    shown = subprocess.run(
        [sys.executable, "-c", code], env={**xdg, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if sys.platform.startswith("linux"):
        assert shown.stdout.strip() == str(tmp_path / "xdg" / "matchlock")


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    capsys.readouterr()
    code = main(list(args))
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def finished_from(lines: list[dict[str, Any]]) -> dict[str, str]:
    """Where each of p1's pieces came from, by the ``piece_finished`` events of a join."""
    events = [line["event"] for line in lines if line["type"] == "event"]
    return {
        event["piece"]: event["source"]
        for event in events
        if event["type"] == "piece_finished" and event["user_id"] == "p1"
    }


def test_two_rooms_and_a_download_share_the_default_cache(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_match(tmp_path / "a", "friday-1")
    code, lines = run_json(capsys, *join_args(first))
    assert code == 0
    folders = {k: Path(v) for k, v in lines[-1]["folders"].items()}
    assert {folder.parent for folder in folders.values()} == {cache}
    second = write_match(tmp_path / "a", "friday-2")  # the same content, another room
    code, lines = run_json(capsys, *join_args(second))
    assert code == 0
    assert finished_from(lines) == {"chars/kfm": "cache", "stages/dojo": "cache"}
    code, listed = run_json(capsys, "cache", "list", "--json")
    assert code == 0
    by_folder = {Path(str(e["folder"])): e for e in listed}
    assert set(by_folder) == set(folders.values())
    kfm = by_folder[folders["chars/kfm"]]
    assert kfm["pieces"] == ["chars/kfm"] and kfm["used_by"] == "friday-2" and kfm["kind"] == "zip"
    on_disk = sum(f.stat().st_size for f in folders["chars/kfm"].rglob("*") if f.is_file())
    assert kfm["size"] == on_disk > 0
    assert main(["download", str(first.config), "--json"]) == 0  # no --dest: the same cache
    capsys.readouterr()
    assert {e.used_by for e in list_cache(cache)} == {"download"}


def installed(cache: Path, tmp_path: Path) -> tuple[Match, dict[str, Path]]:
    match = write_match(tmp_path / "content")
    assert main(["download", str(match.config), "--dest", str(cache), "--json"]) == 0
    folders = {e.pieces[0]: e.path for e in list_cache(cache)}
    return match, folders


def test_verify_reports_damaged_folders_and_exits_1(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, folders = installed(cache, tmp_path)
    capsys.readouterr()
    assert main(["cache", "verify"]) == 0
    assert "2 folder(s) checked, 0 damaged" in capsys.readouterr().out
    (folders["chars/kfm"] / "kfm" / "kfm.def").write_text("[Info]\nname = edited\n")
    unknown = cache / ("1" * 64 + "-tar")
    unknown.mkdir()
    (unknown / "x.def").write_text("")
    code, verdicts = run_json(capsys, "cache", "verify", "--json")
    assert code == 1
    status = {Path(str(v["folder"])): (v["status"], v["reason"]) for v in verdicts}
    assert status[folders["stages/dojo"]] == ("ok", "")
    kfm_status, reason = status[folders["chars/kfm"]]
    assert kfm_status == "damaged" and "its folder digest is" in str(reason)
    assert status[unknown][0] == "unverifiable"


def test_a_single_file_piece_is_checked_against_its_name(cache: Path) -> None:
    content = b"an ogg file"
    folder = cache / f"{hashlib.sha256(content).hexdigest()}-file-theme.ogg"
    folder.mkdir(parents=True)
    (folder / "theme.ogg").write_bytes(content)
    assert main(["cache", "verify"]) == 0
    (folder / "theme.ogg").write_bytes(b"another")
    assert main(["cache", "verify"]) == 1


@contextmanager
def held_by_another_process(cache: Path, sha256: str) -> Iterator[None]:
    """A second ``python`` process holding the lock of ``sha256``'s content, as an install in
    progress does, until the block ends."""
    code = (
        "import sys; from pathlib import Path; from matchlock.downloads.cache import Cache\n"
        f"with Cache(Path({str(cache)!r})).held_now({sha256!r}) as held:\n"
        "    print('held' if held else 'busy', flush=True); sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_gc_removes_what_no_recent_room_used_and_skips_what_is_locked(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    match, folders = installed(cache, tmp_path)
    config = load_matchlock_config(match.config)
    old = time.time() - 40 * DAY
    record_cache_use(cache, folders, "download", config, clock=lambda: old)
    capsys.readouterr()
    assert main(["cache", "gc"]) == 0  # both last used 40 days ago, nothing locked
    assert "removed 2 folder(s)" in capsys.readouterr().out
    assert list_cache(cache) == [] and not any((cache / STATE_FOLDER / "uses").iterdir())

    match, folders = installed(cache, tmp_path)
    record_cache_use(cache, folders, "download", config, clock=lambda: old)
    kfm = list_cache(cache)[[e.pieces for e in list_cache(cache)].index(("chars/kfm",))]
    with held_by_another_process(cache, kfm.sha256):
        code, lines = run_json(capsys, "cache", "gc", "--keep-days", "30", "--json")
        assert code == 0
        assert {(line["type"], line["folder"]) for line in lines} == {
            ("removed", str(folders["stages/dojo"])),
            ("busy", str(folders["chars/kfm"])),
        }
        code, verdicts = run_json(capsys, "cache", "verify", "--json")
        assert [v["status"] for v in verdicts] == ["busy"]
    assert folders["chars/kfm"].is_dir() and not folders["stages/dojo"].exists()
    recent = collect_garbage(cache, 60, clock=time.time)
    assert recent.removed == () and folders["chars/kfm"].is_dir()  # 40 days < 60


def test_gc_removes_stale_partial_downloads_unless_locked(cache: Path) -> None:
    tmp = cache / STATE_FOLDER / "tmp"
    tmp.mkdir(parents=True)
    stale, locked, fresh = ("a" * 64, "b" * 64, "c" * 64)
    long_ago = time.time() - 10 * DAY
    for sha in (stale, locked, fresh):
        (tmp / f"{sha}.part").write_bytes(b"half a download")
    for sha in (stale, locked):
        os.utime(tmp / f"{sha}.part", (long_ago, long_ago))
    with held_by_another_process(cache, locked):
        done = collect_garbage(cache, 5, clock=time.time)
    assert done.parts == (tmp / f"{stale}.part",)
    assert sorted(p.name for p in tmp.iterdir()) == [f"{locked}.part", f"{fresh}.part"]


def test_an_empty_or_missing_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing-here"
    for command in ("list", "verify", "gc"):
        assert main(["cache", command, "--cache", str(missing)]) == 0
    assert "0 folder(s)" in capsys.readouterr().out
    assert not missing.exists()
    with pytest.raises(SystemExit):
        main(["cache", "gc", "--keep-days", "-1"])


def test_verify_uses_the_folder_digest_a_config_gave(cache: Path, tmp_path: Path) -> None:
    match, folders = installed(cache, tmp_path)
    kfm = folders["chars/kfm"]
    (cache / STATE_FOLDER / "digests" / kfm.name).unlink()  # as when the config gave one
    (cache / STATE_FOLDER / "uses" / f"{kfm.name}.json").unlink()
    assert main(["cache", "verify", "--cache", str(cache)]) == 0  # unverifiable is no damage
    data = json.loads(match.config.read_text())
    data["collections"]["chars"]["pieces"]["kfm"]["folder_sha256"] = folder_digest(kfm)
    config = parse_matchlock_config(json.dumps(data))
    record_cache_use(cache, {"chars/kfm": kfm}, "friday-1", config, clock=time.time)
    (verdict,) = [v for v in verify_cache(cache) if v.folder.path == kfm]
    assert verdict.status == "ok"
    (kfm / "kfm" / "kfm.sff").unlink()
    (verdict,) = [v for v in verify_cache(cache) if v.folder.path == kfm]
    assert verdict.status == "damaged" and "its folder digest is" in verdict.reason


def locked_elsewhere(cache: Path, sha: str) -> bool:
    """Whether another holder has the lock of this content right now."""
    with Cache(cache).held_now(sha) as held:
        return not held


async def test_gc_leaves_a_piece_that_a_real_download_is_installing(
    server: ContentServer, cache: Path, tmp_path: Path
) -> None:
    """A ``matchlock download`` process re-installs a damaged, long unused folder; while it
    holds the content (its download stuck halfway), gc skips that folder and its partial
    download; once the process is killed (the kernel drops its lock), gc removes the folder."""
    data = zip_bytes({"kfm/kfm.def": b"[Info]\n" * 5000, "kfm/kfm.sff": os.urandom(200_000)})
    server.add("kfm.zip", data)
    config = tmp_path / "stall.json"
    chars = {"kfm": piece(data, server.url("stall", "kfm.zip"), unpack="zip")}
    config.write_text(json.dumps({"collections": {"chars": {"mandatory": True, "pieces": chars}}}))
    good = tmp_path / "good.json"
    chars = {"kfm": piece(data, server.url("ok", "kfm.zip"), unpack="zip")}
    good.write_text(json.dumps({"collections": {"chars": {"mandatory": True, "pieces": chars}}}))
    assert await asyncio.to_thread(main, ["download", str(good), "--dest", str(cache)]) == 0
    (folder,) = [entry.path for entry in list_cache(cache)]
    (cache / STATE_FOLDER / "uses" / f"{folder.name}.json").unlink()  # forget today's use
    record_cache_use(cache, {"chars/kfm": folder}, "old-room", None, clock=lambda: 0.0)
    os.utime(folder, (0, 0))
    (folder / "kfm" / "kfm.def").write_text("edited")  # damaged: the next download re-installs
    part = cache / STATE_FOLDER / "tmp" / f"{sha256(data)}.part"
    downloader = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "matchlock", "download", str(config), "--dest", str(cache),
        "--json", env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            while not await asyncio.to_thread(locked_elsewhere, cache, sha256(data)):
                await asyncio.sleep(0.05)
        done = await asyncio.to_thread(collect_garbage, cache, 1, clock=time.time)
        assert [entry.path for entry in done.busy] == [folder] and done.removed == ()
        assert done.parts == () and part.exists()  # the download's part is left alone
    finally:
        downloader.kill()
        await downloader.wait()
    done = await asyncio.to_thread(collect_garbage, cache, 1, clock=time.time)
    assert [entry.path for entry in done.removed] == [folder] and not folder.exists()
