"""matchlock: every player in a match gets exactly the same content before it starts."""

from matchlock._version import __version__

__all__ = ["__version__"]
