"""The command line's limit on open files: raised to the most the system allows.

A room host holds a descriptor for every connection and for the log of every room being played
(an ended room's log is closed), and a download one per file being written. The usual soft
limit, 1,024 descriptors, would refuse them long before the host's own caps
(``--max-connections``, 512 by default, each member one): a refused ``open`` of a new room's
log stops a host for good (:class:`~matchlock.core.errors.HostFailedError`). So every command
raises its soft limit to its hard limit first, as servers commonly do; where the platform has no
such limits (Windows), or refuses, nothing changes.
"""

from __future__ import annotations

__all__ = ["raise_open_files_limit"]

UNLIMITED_TARGET = 1 << 16
"""The soft limit asked for where the hard limit is unlimited (macOS refuses ``RLIM_INFINITY``
as a soft limit on files)."""


def raise_open_files_limit() -> int | None:
    """Raise this process's soft limit on open files to its hard limit; returns the soft limit
    now in force (None where the platform has none)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # refused (a sandbox, a platform cap): keep what we had
            return soft
        return target
    return soft
