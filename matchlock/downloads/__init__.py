"""Downloading the pieces of a match-lock config: verified, resumable, parallel.

The two jobs a client runs without any room: ``download(config, dest)`` installs every piece,
``download(config, dest, mandatory_only=True)`` only the mandatory collections'. Both return
``{"collection/piece": folder}``. ``download_sync`` is the same for code without an event loop.

For each piece (:mod:`matchlock.downloads.piece` tells it as events): use the game's own folder
or the cache when one verifies; otherwise try each resolvable in order, streaming to a ``.part``
file while hashing (the resolver registered for its scheme, :mod:`~matchlock.downloads.resolvers`;
:mod:`~matchlock.downloads.fetch`, :mod:`~matchlock.downloads.sink`), accept
the bytes only when size and sha256 match, unpack safely (:mod:`~matchlock.downloads.unpack`),
and install atomically into the content-addressed cache (:mod:`~matchlock.downloads.cache`).

The modules, from the outside in: ``job`` (orchestration, the event log), ``piece`` (one piece's
steps and events), ``engine`` and ``verify`` (trusting a folder that already exists), ``fetch``
(getting bytes, through ``resolvers``: the seam, one module per scheme) and ``sink`` (the
``.part`` file), ``unpack`` (archives), ``cache`` (where folders live, locks).
This package is part of the shell: it does IO and reads the clock it is given, nothing else.
"""

from matchlock.downloads.cache import STATE_FOLDER
from matchlock.downloads.errors import ArchiveError, DownloadError
from matchlock.downloads.job import DEFAULT_SCHEMES, download, download_sync
from matchlock.downloads.piece import FolderRejected
from matchlock.downloads.resolvers import FetchPolicy
from matchlock.downloads.unpack import UnpackLimits

__all__ = [
    "DEFAULT_SCHEMES",
    "STATE_FOLDER",
    "ArchiveError",
    "DownloadError",
    "FetchPolicy",
    "FolderRejected",
    "UnpackLimits",
    "download",
    "download_sync",
]
