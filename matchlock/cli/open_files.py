"""The command line's limit on open files: raised to the most the system allows.

A room host holds a descriptor for every connection and for the log of every room somebody is
in (the log of a room nobody is in, or that ended, is closed), and a download one per file
being written. The usual soft limit, 1,024 descriptors, would refuse them before the host's own
caps (``--max-connections``, 512 by default, each member one): a new room whose log cannot be
opened is refused (its member closed), a connection that cannot be accepted waits. So every command
raises its soft limit to its hard limit first, as servers commonly do; where the platform has no
such limits (Windows), or refuses, nothing changes.

Where even the hard limit is too low for the host's connection cap (each connection may hold
two descriptors: its socket, and its room's log while it is in the room), a host lowers the cap
to what fits and says so (:func:`connections_that_fit`): a connection over a cap is refused
cleanly, whereas a refused ``accept`` is retried by the loop, a traceback a second.
"""

from __future__ import annotations

__all__ = ["connections_that_fit", "raise_open_files_limit"]

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


FILES_KEPT = 32
"""Descriptors a host keeps for all but its connections: the interpreter's and the loop's, the
listener, the journal, a welcome's read of an older log."""


def connections_that_fit(wanted: int) -> int:
    """``wanted`` connections, or fewer when this process may not open two descriptors for
    each beside :data:`FILES_KEPT` (its soft limit raised first)."""
    soft = raise_open_files_limit()
    if soft is None or wanted * 2 + FILES_KEPT <= soft:
        return wanted
    return max(1, (soft - FILES_KEPT) // 2)
