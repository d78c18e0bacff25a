"""The JSON Schemas in docs/schemas are current, they accept what the models accept, and every
frame of a real room and every recorded event validates against them (so an integrator who
validates with them never rejects what matchlock sends)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from matchlock.cli import main
from matchlock.core import protocol as pr
from matchlock.core.client import ClientProtocol
from matchlock.tools.schemas import SCHEMAS, schema_text
from matchlock.tools.testing import insecure_key
from tests.core.test_host import CONFIG
from tests.core.test_host_crash_windows import closed_room

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
REPLAY_LOGS = Path(__file__).resolve().parents[2] / "replay-logs"


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


# -- the wire and the log: every frame of a real room and every logged event validates --------


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((DOCS / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_every_frame_of_a_real_room_validates_against_the_published_schemas() -> None:
    h = closed_room()
    client_schema, host_schema = validator("client-message"), validator("host-message")
    member = ClientProtocol(CONFIG, "alice", insecure_key("alice"))
    client_schema.validate(json.loads(member.hello()))
    client_schema.validate(json.loads(pr.encode(pr.Goodbye())))
    sent = [message for messages in h.sent.values() for message in messages]
    assert {"challenge", "welcome", "event"} <= {m.type for m in sent}
    for message in sent:
        host_schema.validate(json.loads(pr.encode(message)))
    refused = pr.Refused(code="not-yours", reason="x", fatal=False)
    host_schema.validate(json.loads(pr.encode(refused)))
    report: dict[str, Any] = {"type": "report", "event": {"type": "piece_started", "user_id": "a"}}
    with pytest.raises(jsonschema.ValidationError):
        client_schema.validate(report)  # no piece: what the host would refuse, the schema does


@pytest.mark.parametrize("log", sorted(REPLAY_LOGS.glob("*.log")), ids=lambda p: p.stem)
def test_every_recorded_event_validates_against_the_event_schema(log: Path) -> None:
    schema = validator("event")
    for line in log.read_text().splitlines()[1:]:
        event = json.loads(line).get("event")
        if event is not None:
            schema.validate(event)
