"""JSON Schemas of the config files, the wire messages and the events, generated from the
pydantic models.

``docs/schemas/NAME.schema.json`` holds each of :data:`SCHEMAS`; ``matchlock schema --write
docs/schemas`` regenerates them and a test fails when they drift. An integrator in another
language validates with them: ``matchlock`` and ``room`` are the two config files;
``client-message`` is every message a member sends (``hello``, ``answer``, ``report``,
``goodbye``), ``host-message`` every message a host sends (``challenge``, ``welcome``,
``event``, ``refused``), and ``event`` every event a log line or a relay carries. The schemas
describe what the models accept; the host is stricter still in places a schema cannot say
(duplicate keys, exact JSON types: see docs/protocol.md, "Strict parsing").
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from matchlock import events as ev
from matchlock import protocol as pr
from matchlock.config import MatchLockConfig, RoomConfig

__all__ = ["SCHEMAS", "schema_text"]

SCHEMAS: dict[str, TypeAdapter[Any]] = {
    "matchlock": TypeAdapter(MatchLockConfig),
    "room": TypeAdapter(RoomConfig),
    "client-message": TypeAdapter(pr.ClientMessage),
    "host-message": TypeAdapter(pr.HostMessage),
    "event": TypeAdapter(ev.Event),
}
"""Every published schema by name: the two config files, the messages each side sends, and the
events."""


def schema_text(name: str) -> str:
    """The JSON Schema (draft 2020-12) of ``name``, as stable, indented JSON."""
    schema = SCHEMAS[name].json_schema(mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://matchlock.invalid/schemas/{name}.schema.json",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
