"""JSON Schemas of the two config files, generated from the pydantic models.

``docs/schemas/matchlock.schema.json`` and ``docs/schemas/room.schema.json`` are these texts;
``matchlock schema --write docs/schemas`` regenerates them and a test fails when they drift.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from matchlock.config import MatchLockConfig, RoomConfig

__all__ = ["SCHEMAS", "schema_text"]

SCHEMAS: dict[str, type[BaseModel]] = {"matchlock": MatchLockConfig, "room": RoomConfig}
"""The config files with a schema: ``matchlock`` (the match-lock config) and ``room``."""


def schema_text(name: str) -> str:
    """The JSON Schema (draft 2020-12) of config ``name``, as stable, indented JSON."""
    schema = SCHEMAS[name].model_json_schema(mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://matchlock.invalid/schemas/{name}.schema.json",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
