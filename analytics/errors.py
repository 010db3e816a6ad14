"""The root of every error analytics raises on purpose, so callers catch one type."""

from __future__ import annotations


class AnalyticsError(Exception):
    pass


class NotEnoughData(AnalyticsError):
    """The snapshots hold too little to answer (e.g. fewer than two agents to compare)."""


class CompactionBusy(AnalyticsError):
    """Another compaction or rebuild holds the dataset."""


class SnapshotUnreadable(AnalyticsError):
    """The snapshot folder (or a file in it) is not what ReSimHub writes: another layout, another
    schema, or not Parquet. Answering from it would silently leave rows out."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

