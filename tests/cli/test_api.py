"""The public API: every name in ``matchlock.__all__`` is there, documented, and the CLI's
version agrees."""

import pytest

import matchlock
from matchlock.cli import main


def test_every_public_name_exists_and_has_a_docstring() -> None:
    for name in matchlock.__all__:
        value = getattr(matchlock, name)
        if name not in ("__version__", "Event"):
            assert (value.__doc__ or "").strip(), name


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"matchlock {matchlock.__version__}"


def test_every_command_registers_under_its_name() -> None:
    from matchlock.cli import COMMANDS, build_parser

    full = build_parser()  # every module's parser at once: the names agree with the table
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            full.parse_args([name, "--help"])
        assert done.value.code == 0
        with pytest.raises(SystemExit):
            build_parser(name).parse_args([name, "--help"])  # alone, as main() builds it


def test_importing_matchlock_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, matchlock; print([m for m in ('aiohttp', 'websockets') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    import matchlock.app.joining  # a module of the same name must never shadow the function

    assert matchlock.join is matchlock.app.joining.join  # a name loads on first use


def test_the_lazy_map_the_type_checking_imports_and_all_name_the_same_names() -> None:
    import ast
    from pathlib import Path

    tree = ast.parse(Path(matchlock.__file__).read_text())
    checked: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                checked |= {alias.name for alias in statement.names}
    where = set(matchlock._WHERE)
    assert checked == where
    assert set(matchlock.__all__) == where | {"__version__"}
