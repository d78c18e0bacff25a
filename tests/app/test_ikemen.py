"""The Ikemen GO helper on a real Ikemen-style folder layout: finding each ``.def``, the
quick-versus arguments, ``select.def`` lines, and editing a ``select.def`` only when asked."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest

from matchlock.app.ikemen import (
    BLOCK_BEGIN,
    BLOCK_END,
    find_def,
    ikemen_match,
    merge_select,
    write_select,
)
from matchlock.cli import main
from matchlock.core.errors import InputError, UsageError
from tests.app.content_files import join_args, result_line, write_match

SELECT_DEF = """\
; Character and stage selection list.
[Characters]
kfm, stages/stage0.def
randomselect

;-------------------------
[ExtraStages]
stages/stage0.def

[Options]
arcade.maxmatches = 6,1,1,0,0,0,0,0,0,0
"""


def ikemen_game(root: Path) -> Path:
    """An Ikemen GO folder as players have it: chars/, stages/, data/select.def."""
    for path, text in {
        "chars/kfm/kfm.def": "[Files]\nsprite = kfm.sff\n",
        "chars/kfm/kfm.sff": "sprites",
        "chars/ryu/Ryu.DEF": "[Files]\n",
        "chars/ryu/ryu.cns": "",
        "chars/evil/evil.def": "",
        "chars/evil/evil720.def": "",
        "stages/stage0.def": "[Info]\n",
        "stages/dojo/dojo.def": "[Info]\n",
        "stages/dojo/dojo.sff": "",
        "data/select.def": SELECT_DEF,
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_find_def_in_ikemen_folders(tmp_path: Path) -> None:
    game = ikemen_game(tmp_path / "Ikemen_GO")
    assert find_def(game / "chars" / "kfm", "kfm") == game / "chars" / "kfm" / "kfm.def"
    assert find_def(game / "chars" / "ryu", "ryu") == game / "chars" / "ryu" / "Ryu.DEF"
    assert find_def(game / "stages" / "dojo", "dojo") == game / "stages" / "dojo" / "dojo.def"
    (tmp_path / "zip" / "kfm").mkdir(parents=True)  # an archive with a top folder
    (tmp_path / "zip" / "kfm" / "fighter.def").write_text("")
    assert find_def(tmp_path / "zip", "kfm") == tmp_path / "zip" / "kfm" / "fighter.def"
    evil = game / "chars" / "evil"
    assert find_def(evil, "evil") == evil / "evil.def"  # the piece's name wins over evil720.def
    (evil / "evil.def").rename(evil / "other.def")
    with pytest.raises(InputError, match=r"no evil.def .*found: evil720.def, other.def"):
        find_def(evil, "evil")
    with pytest.raises(InputError, match="cannot read the folder"):
        find_def(tmp_path / "missing", "kfm")


def test_the_arguments_of_a_match(tmp_path: Path) -> None:
    game = ikemen_game(tmp_path / "Ikemen_GO")
    folders = {
        "chars/kfm": game / "chars" / "kfm",
        "chars/ryu": game / "chars" / "ryu",
        "stages/dojo": game / "stages" / "dojo",
        "sound/theme": tmp_path / "theme",
    }
    match = ikemen_match(folders)
    kfm, ryu = (str(game / "chars" / n / f) for n, f in (("kfm", "kfm.def"), ("ryu", "Ryu.DEF")))
    dojo = str(game / "stages" / "dojo" / "dojo.def")
    assert match.others == ("sound/theme",)
    assert match.arguments() == ["-p1", kfm, "-p2", ryu, "-s", dojo]
    assert match.arguments(["chars/ryu", "chars/kfm", "chars/kfm"]) == [
        *("-p1", ryu, "-p2", kfm, "-p3", kfm, "-s", dojo)
    ]
    assert match.arguments(fingerprint="0123456789abcdef")[-2:] == [
        "-contentfingerprint",
        "0123456789abcdef",
    ]
    assert match.arguments(netplay="203.0.113.7")[-2:] == ["-ip", "203.0.113.7"]
    assert match.arguments(netplay="")[-2:] == ["-ip", ""]  # the hosting player waits
    only = ikemen_match({"chars/kfm": game / "chars" / "kfm"})
    assert only.arguments() == ["-p1", kfm, "-p2", kfm]  # the only character, twice; no stage
    with pytest.raises(UsageError, match="chars/ken is not a character of this room"):
        match.arguments(["chars/kfm", "chars/ken"])
    with pytest.raises(UsageError, match="stages/moon is not a stage"):
        match.arguments(stage="stages/moon")
    with pytest.raises(UsageError, match="needs two characters"):
        ikemen_match({"stages/dojo": game / "stages" / "dojo"}).arguments()
    chosen = ikemen_match(
        {"chars/evil": game / "chars" / "evil"}, defs={"chars/evil": "evil720.def"}
    )
    assert chosen.characters == {"chars/evil": str(game / "chars" / "evil" / "evil720.def")}
    with pytest.raises(InputError, match=r"chars/evil: .*missing.def is not a file"):
        ikemen_match({"chars/evil": game / "chars" / "evil"}, defs={"chars/evil": "missing.def"})
    other_names = ikemen_match(
        {"fighters/kfm": game / "chars" / "kfm", "arenas/dojo": game / "stages" / "dojo"},
        characters=["fighters"],
        stages=["arenas"],
    )
    assert other_names.arguments() == ["-p1", kfm, "-p2", kfm, "-s", dojo]


def ikemen_reads(select_def: str, game: Path) -> tuple[list[Path], list[Path]]:
    """The character and stage files Ikemen GO's reader finds in ``select_def`` (comments after
    ';' dropped, '[Section]' headers, the first ','-separated field of each line; a character
    line with a '/' that ends in '.def' is a path, a bare name is chars/NAME/NAME.def)."""
    characters, stages, section = [], [], ""
    for raw in select_def.splitlines():
        line = raw.split(";", 1)[0].strip()
        if header := re.match(r"^\[\s*(\w+)\s*\]", line):
            section = header[1].lower()
        elif line:
            first = line.split(",")[0].strip().replace("\\", "/")
            if section == "characters" and first != "randomselect":
                path = first if "/" in first else f"chars/{first}/{first}.def"
                characters.append(path if Path(path).is_absolute() else game / path)
            elif section == "extrastages":
                stages.append(Path(first) if Path(first).is_absolute() else game / first)
    return [Path(p) for p in characters], stages


def test_write_select_adds_one_block_and_keeps_a_backup(tmp_path: Path) -> None:
    game = ikemen_game(tmp_path / "Ikemen_GO")
    cache = tmp_path / "cache" / ("f" * 64 + "-zip")
    (cache / "ryu").mkdir(parents=True)
    (cache / "ryu" / "ryu.def").write_text("")
    match = ikemen_match({"chars/ryu": cache, "stages/dojo": game / "stages" / "dojo"})
    select = game / "data" / "select.def"
    backup = write_select(select, match, "room friday-1, content fingerprint 0123")
    assert backup == game / "data" / "select.def.bak" and backup.read_text() == SELECT_DEF
    first = select.read_text()
    characters, stages = ikemen_reads(first, game)
    assert characters == [game / "chars/kfm/kfm.def", cache / "ryu" / "ryu.def"]
    assert stages == [game / "stages/stage0.def", game / "stages/dojo/dojo.def"]
    assert all(path.is_file() for path in [*characters, *stages])
    assert "[Options]\narcade.maxmatches = 6,1,1,0,0,0,0,0,0,0\n" in first  # untouched
    write_select(select, match, "room friday-1, content fingerprint 0123")
    assert select.read_text() == first  # replaced, not added twice
    assert first.count(BLOCK_BEGIN) == 2 and first.count(BLOCK_END) == 2
    again = ikemen_match({"chars/kfm": game / "chars" / "kfm"})
    write_select(select, again, "room saturday")
    assert ikemen_reads(select.read_text(), game) == (
        [game / "chars/kfm/kfm.def", game / "chars/kfm/kfm.def"],
        [game / "stages/stage0.def"],
    )


def test_merge_select_keeps_line_endings_and_adds_missing_sections() -> None:
    windows = "[Characters]\r\nkfm\r\n"
    merged = merge_select(windows, ["C:/cache/x/ryu.def"], ["C:/cache/y/dojo.def"], "note")
    assert merged == (
        "[Characters]\r\nkfm\r\n; matchlock: begin\r\n; note\r\nC:/cache/x/ryu.def\r\n"
        "; matchlock: end\r\n\r\n[ExtraStages]\r\n; matchlock: begin\r\n; note\r\n"
        "C:/cache/y/dojo.def\r\n; matchlock: end\r\n"
    )


def test_a_path_select_def_cannot_carry_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "odd,name" / "kfm"
    folder.mkdir(parents=True)
    (folder / "kfm.def").write_text("")
    match = ikemen_match({"chars/kfm": folder})
    assert match.arguments()[1].endswith("odd,name/kfm/kfm.def")  # fine on a command line
    with pytest.raises(InputError, match=r"chars/kfm: its path .* holds ',' ';'"):
        match.select_lines()


def test_the_command_on_a_real_join_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    match = write_match(tmp_path / "content")
    game = ikemen_game(tmp_path / "Ikemen_GO")
    capsys.readouterr()
    assert main(join_args(match, "--dest", str(tmp_path / "cache"))) == 0
    output = capsys.readouterr().out
    (tmp_path / "join.jsonl").write_text(output)
    result = result_line(output)
    kfm = Path(result["folders"]["chars/kfm"]) / "kfm" / "kfm.def"
    dojo = Path(result["folders"]["stages/dojo"]) / "dojo.def"
    assert main(["ikemen", str(tmp_path / "join.jsonl"), "--json", "--with-fingerprint"]) == 0
    shown = json.loads(capsys.readouterr().out)
    short = result["fingerprint"]["short"]
    assert shown["arguments"] == [
        *("-p1", str(kfm), "-p2", str(kfm), "-s", str(dojo), "-contentfingerprint", short)
    ]
    assert shown["select"] == {"characters": [str(kfm)], "stages": [str(dojo)]}
    assert main(["ikemen", str(tmp_path / "join.jsonl"), "--json", "--connect", "203.0.113.7"]) == 0
    assert json.loads(capsys.readouterr().out)["arguments"][-2:] == ["-ip", "203.0.113.7"]
    assert main(["ikemen", str(tmp_path / "join.jsonl"), "--host"]) == 0
    assert f"-s {dojo} -ip ''\n" in capsys.readouterr().out
    before = (game / "data" / "select.def").read_bytes()
    assert before == SELECT_DEF.encode()  # nothing written without --write-select
    monkeypatch.setattr(sys, "stdin", io.StringIO(output))
    select = game / "data" / "select.def"
    assert main(["ikemen", "-", "--write-select", str(select)]) == 0
    printed = capsys.readouterr().out
    assert f"arguments: -p1 {kfm} -p2 {kfm} -s {dojo}\n" in printed
    assert (game / "data" / "select.def.bak").read_bytes() == before
    characters, stages = ikemen_reads(select.read_text(), game)
    assert characters[-1] == kfm and stages[-1] == dojo
    assert f"; content fingerprint {short}" in select.read_text()
    (tmp_path / "nothing.jsonl").write_text('{"type": "event"}\n')
    assert main(["ikemen", str(tmp_path / "nothing.jsonl")]) == 2
    assert 'no {"type": "result"' in capsys.readouterr().err
