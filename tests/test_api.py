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
