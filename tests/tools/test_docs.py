"""The docs' worked examples are valid."""

from __future__ import annotations

import re
from pathlib import Path

from matchlock.core.config import parse_matchlock_config

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_ikemen_go_example_config_parses() -> None:
    text = (DOCS / "ikemen-go.md").read_text()
    block = re.search(r"```json\n(.*?)\n```", text, re.DOTALL)
    assert block is not None
    config = parse_matchlock_config(block.group(1), "docs/ikemen-go.md")
    assert set(config.pieces(mandatory_only=True)) == {"chars/kfm", "stages/training"}
    assert config.collections["chars"].engine_path == "chars/{piece}"
