"""JSON Schemas of the config files, the wire messages and the events, generated from the
pydantic models.

``docs/schemas/NAME.schema.json`` holds each of :data:`SCHEMAS`; ``matchlock schema --write
docs/schemas`` regenerates them and a test fails when they drift. An integrator in another
language validates with them: ``matchlock`` and ``room`` are the two config files;
``client-message`` is every message a member sends (``hello``, ``answer``, ``report``,
``goodbye``, and the transfer messages of protocol 2), ``host-message`` every message a host
sends (``challenge``, ``welcome``, ``event``, ``refused``, and those of protocol 2), and
``event`` every event a log line or a relay carries. Data frames are binary, not JSON: no
schema describes them (docs/protocol.md does). The schemas
describe what the models accept; the host is stricter still in places a schema cannot say
(duplicate keys, exact JSON types: see docs/protocol.md, "Strict parsing").
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.config import MatchLockConfig, RoomConfig

__all__ = ["SCHEMAS", "event_table", "schema_text"]

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
    """The JSON Schema (draft 2020-12) of ``name``, as stable, indented JSON. A message's or an
    event's ``type`` is required (the models give it a default, but a peer must send it)."""
    schema = SCHEMAS[name].json_schema(mode="validation")
    for definition in schema.get("$defs", {}).values():
        kind = definition.get("properties", {}).get("type", {})
        if "const" in kind:
            definition["required"] = ["type", *definition.get("required", [])]
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://matchlock.invalid/schemas/{name}.schema.json",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _field_text(name: str, spec: dict[str, Any], required: bool) -> str:
    if "$ref" in spec:
        kind = spec["$ref"].rsplit("/", 1)[-1]
    elif spec.get("type") == "array":
        items = spec["items"]
        kind = f"list of {items.get('$ref', '').rsplit('/', 1)[-1] or items['type']}"
    else:
        kind = spec.get("type", "any")
    if name == "v":
        return "`v` (integer, optional: 1)"
    if required:
        return f"`{name}` ({kind})"
    default = json.dumps(spec.get("default"), ensure_ascii=False)
    return f"`{name}` ({kind}, optional: {default})"


def event_table() -> str:
    """The Markdown table of every event: its ``type``, its fields (required first; optional
    ones with their default) and what it means; docs/protocol.md holds it, a test checks."""
    schema = SCHEMAS["event"].json_schema(mode="validation")
    rows = ["| `type` | fields | meaning |", "| --- | --- | --- |"]
    for ref in schema["discriminator"]["mapping"].values():
        definition = schema["$defs"][ref.rsplit("/", 1)[-1]]
        properties, required = definition["properties"], definition.get("required", [])
        fields = [_field_text(name, properties[name], True) for name in required]
        fields += [
            _field_text(name, spec, False)
            for name, spec in properties.items()
            if name not in required and name != "type"
        ]
        meaning = " ".join(definition.get("description", "").split()).replace("``", "`")
        rows.append(f"| `{properties['type']['const']}` | {', '.join(fields)} | {meaning} |")
    return "\n".join(rows) + "\n"
