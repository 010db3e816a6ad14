"""The root of every error analytics raises on purpose, so callers catch one type."""

from __future__ import annotations


class AnalyticsError(Exception):
    pass


class NotEnoughData(AnalyticsError):
    """The snapshots hold too little to answer (e.g. fewer than two agents to compare)."""


class CompactionBusy(AnalyticsError):
    """Another compaction or rebuild holds the dataset."""
