"""An event log whose store refuses a write stops writing, for good, with a typed error.

``/dev/full`` is a real device whose every write fails with ``ENOSPC``, as a full disk's
does: a log on it raises :class:`LogWriteError` naming it at its first flush, every later
append and the close raise that same error without writing, and the close still closes the
file (tests/app/test_join.py and tests/app/test_host_disk_failure.py fill real disks)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from matchlock.core import events as ev
from matchlock.core.errors import LogWriteError
from matchlock.store import FileStore
from matchlock.store.eventlog import EventLog

FULL = Path("/dev/full")


@pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")
async def test_a_log_on_a_full_device_raises_and_then_writes_nothing() -> None:
    store = FileStore(FULL)
    log = EventLog.new(store, "download")
    with pytest.raises(LogWriteError, match="/dev/full") as first:
        await log.append(ev.DownloadOpened(at=0, user_id="local", sizes={"chars/kfm": 1}))
    assert isinstance(first.value.cause, OSError) and first.value.cause.errno == errno.ENOSPC
    assert log.broken is first.value
    with pytest.raises(LogWriteError) as again:
        await log.append(ev.DownloadClosed(at=1))
    assert again.value is first.value
    assert log.take() == []  # nothing left buffered to write later
    with pytest.raises(LogWriteError):
        await log.close()
    assert store._fd is None  # closed all the same
