"""Every log store passes the contract in :mod:`tests.store.contract`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matchlock.store import FileRepository, LogRepository, MemoryRepository
from tests.store.contract import LogRepositoryContract
from tests.store.journal_loss import cut_the_power


class TestFileRepository(LogRepositoryContract):
    def make(self, tmp_path: Path) -> LogRepository:
        return FileRepository(tmp_path / "logs")


class TestFileRepositoryWithAJournal(LogRepositoryContract):
    can_lose_power = True

    def make(self, tmp_path: Path) -> LogRepository:
        return FileRepository(tmp_path / "logs", sync="journal")

    def power_loss(self, repo: LogRepository, survive: Callable[[str, int], int]) -> None:
        assert isinstance(repo, FileRepository) and repo.journal is not None
        cut_the_power(
            repo.journal, lambda name, unsynced: survive(name.removesuffix(".log"), unsynced)
        )


class TestMemoryRepository(LogRepositoryContract):
    can_lose_power = True

    def make(self, tmp_path: Path) -> LogRepository:
        return MemoryRepository()

    def power_loss(self, repo: LogRepository, survive: Callable[[str, int], int]) -> None:
        assert isinstance(repo, MemoryRepository)
        repo.crash(survive)
