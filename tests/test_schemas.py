"""The JSON Schemas in docs/schemas are current, and they accept what the models accept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matchlock.cli import main
from matchlock.schemas import SCHEMAS, schema_text

DOCS = Path(__file__).resolve().parent.parent / "docs" / "schemas"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_in_docs_is_current(name: str) -> None:
    current = (DOCS / f"{name}.schema.json").read_text()
    assert current == schema_text(name), "run: matchlock schema --write docs/schemas"


def test_schema_command_prints_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "room"]) == 0
    schema = json.loads(capsys.readouterr().out)
    required = {"room_id", "restrictions", "pieces", "users", "content"}
    assert required | {"signatures"} <= set(schema["properties"])
    assert set(schema["required"]) == required


def test_matchlock_schema_describes_pieces(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "matchlock"]) == 0
    piece = json.loads(capsys.readouterr().out)["$defs"]["Piece"]
    assert piece["properties"]["unpack"]["enum"] == ["zip", "tar", "none"]
    assert piece["properties"]["sha256"]["pattern"] == "^[0-9a-f]{64}$"
