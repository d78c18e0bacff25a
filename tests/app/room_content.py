"""Two real zip pieces (a character and a stage) for whole-room tests, and the match-lock
collections that point at them on the tests' content server (``tests/conftest.py`` serves them
as the ``server`` fixture)."""

from __future__ import annotations

from typing import Any

from tests.downloads.conftest import ContentServer, piece, zip_bytes

KFM_DEF = b"[Info]\nname = kfm\n" * 50
DOJO_DEF = b"[Stage]\n" * 100
KFM = zip_bytes({"kfm.def": KFM_DEF, "kfm.sff": bytes(range(256)) * 40})
DOJO = zip_bytes({"dojo.def": DOJO_DEF})


def content(server: ContentServer, kfm_routes: tuple[str, ...]) -> dict[str, Any]:
    """The collections of a match-lock config holding both pieces; kfm through ``kfm_routes``."""
    kfm = piece(KFM, *(server.url(route, "kfm.zip") for route in kfm_routes), unpack="zip")
    dojo = piece(DOJO, server.url("ok", "dojo.zip"), unpack="zip")
    return {
        "chars": {"mandatory": True, "pieces": {"kfm": kfm}},
        "stages": {"mandatory": True, "pieces": {"dojo": dojo}},
    }
