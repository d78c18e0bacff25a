"""Shared test settings (a hypothesis profile per environment: CI runs more examples) and the
content server of the whole-room tests (``tests/downloads`` has its own)."""

import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

from tests.app.room_content import DOJO, KFM
from tests.downloads.conftest import ContentServer

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
async def server() -> AsyncIterator[ContentServer]:
    """A real HTTP server on 127.0.0.1 serving the two pieces of :mod:`tests.app.room_content`."""
    content = ContentServer()
    content.add("kfm.zip", KFM)
    content.add("dojo.zip", DOJO)
    await content.start()
    try:
        yield content
    finally:
        await content.stop()
