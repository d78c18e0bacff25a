"""How the command line shows an error: a config's problems one to a line, every line escaped.

Each test runs ``python -m matchlock`` as a user does, on real files.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from matchlock.core.errors import ConfigError, LogWriteError, Problem
from matchlock.core.events import ResolvableFailure
from matchlock.core.safe_text import printable_error
from matchlock.downloads.errors import DownloadError

HOSTILE = "evil\n  - $.fake: forged\x1b[2J"
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # any control but the newline


def download(config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "matchlock", "download", str(config), "--dest", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )


def test_each_problem_of_a_config_is_a_line_of_its_own(tmp_path: Path) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"collections": 5, HOSTILE: 1}))
    done = download(config, tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [  # the key named as JSON writes it
        f"matchlock: {config}: 2 problem(s)",
        "  - $.collections: Input should be an object (got 5)",
        '  - $["evil\\n  - $.fake: forged\\u001b[2J"]: Extra inputs are not permitted (got 1)',
    ]
    assert RAW_CONTROL.search(done.stderr) is None


def test_a_newline_the_input_brings_stays_inside_its_line(tmp_path: Path) -> None:
    folder = tmp_path / HOSTILE.replace("/", "_")
    folder.mkdir()
    done = download(folder / "missing.json", tmp_path)
    assert done.returncode == 2
    headline, problem = done.stderr.splitlines()
    assert headline.startswith("matchlock: ") and headline.endswith("1 problem(s)")
    assert "evil\\x0a  - $.fake: forged\\x1b[2J" in headline
    assert problem.startswith("  - ")
    assert RAW_CONTROL.search(done.stderr) is None


def test_errors_say_which_lines_they_are_made_of() -> None:
    problems = [Problem("$.a", "bad"), Problem("$.b", "worse", HOSTILE)]
    config = ConfigError("c.json", problems)
    assert str(config) == "\n".join(config.lines)
    assert printable_error(config, "matchlock: ").splitlines() == [
        "matchlock: c.json: 2 problem(s)",
        "  - $.a: bad",
        "  - $.b: worse (got evil\\x0a  - $.fake: forged\\x1b[2J)",
    ]
    failure = ResolvableFailure(
        index=0, url="https://m.example/a.zip", reason=f"refused: {HOSTILE}"
    )
    failed = DownloadError({"chars/kfm": (failure,)}, {})
    assert printable_error(failed).splitlines() == [
        "1 of 1 piece(s) could not be installed",
        "  - chars/kfm:",
        "      [0] https://m.example/a.zip: refused: evil\\x0a  - $.fake: forged\\x1b[2J",
    ]
    one_line = LogWriteError("room.log", OSError(28, HOSTILE))
    assert one_line.lines == () and "\n" not in printable_error(one_line)
