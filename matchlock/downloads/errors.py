"""The errors a download can end in, both on the :class:`~matchlock.core.errors.InputError` side of
the tree: what went wrong came from outside (a server, a mirror, an archive), not from the code.

::

    InputError
    ├── DownloadError        some piece could not be installed (each resolvable's reason inside)
    └── ArchiveError         an archive is unreadable, tries to escape its folder, or is too big

Inside the engine, one resolvable's failure is never raised past its piece: it becomes a
:class:`~matchlock.core.events.ResolvableFailure` in the event stream. :class:`DownloadError` is
raised once, at the end of a job, and still carries every folder that did install.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from matchlock.core.errors import InputError
from matchlock.core.events import ResolvableFailure

__all__ = ["ArchiveError", "DownloadError"]


class DownloadError(InputError):
    """Some requested pieces could not be installed.

    ``failures`` maps each failed ``collection/piece`` to every resolvable's failure, in the order
    they were tried; ``folders`` maps each piece that did install to its folder, exactly as a
    successful :func:`matchlock.downloads.download` would have returned it.
    """

    def __init__(
        self,
        failures: Mapping[str, tuple[ResolvableFailure, ...]],
        folders: Mapping[str, Path],
    ) -> None:
        self.failures = dict(failures)
        self.folders = dict(folders)
        lines = []
        for key, reasons in self.failures.items():
            lines.append(f"  - {key}:")
            lines.extend(f"      [{f.index}] {f.url}: {f.reason}" for f in reasons)
            if not reasons:
                lines.append("      (no resolvable was tried)")
        total = len(self.failures) + len(self.folders)
        self._set_lines(f"{len(self.failures)} of {total} piece(s) could not be installed", lines)


class ArchiveError(InputError):
    """An archive was refused: ``member`` names the offending entry (empty when the whole archive
    is at fault: unreadable, too many members, too large) and ``reason`` says why."""

    def __init__(self, member: str, reason: str) -> None:
        self.member = member
        self.reason = reason
        where = f"member {member!r}: " if member else ""
        super().__init__(f"archive refused: {where}{reason}")
