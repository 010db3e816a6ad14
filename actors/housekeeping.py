"""Background upkeep the relays run between passes (see ``PERIODIC`` in :mod:`actors.consumers`)."""

from __future__ import annotations

import logging
import threading

from storage.artifacts import TEMP_FILE_GRACE_S, remove_temporaries
from storage.context import Storage

log = logging.getLogger(__name__)

#: How often a relay looks for temporary files that interrupted writes left on the shared volume.
TEMP_SWEEP_EVERY_S = 600.0

COMPACT_EVERY_S = 15.0
# Every completed experiment adds a few small files per partition; every analytics read opens each
# file (about a millisecond each, more under load), so merge them once a few pile up.
COMPACT_MIN_FILES = 8
COMPACT_MIN_AGE_S = 10.0

#: How often a relay brings the kept leaderboard statistics of changed envs up to date.
LEADERBOARD_EVERY_S = 30.0

_compacting = threading.Lock()
_refreshing = threading.Lock()


def compact_snapshots(storage: Storage, _actors=None) -> None:
    """Start a compaction of the Parquet snapshots in the background unless one is running.

    It runs on its own thread so that a long merge never holds up event publishing; compaction
    takes a per-dataset file lock, so relays on several machines sharing the volume take turns.
    """
    if not _compacting.acquire(blocking=False):
        return

    def work() -> None:
        from analytics.compaction import compact

        try:
            results = compact(storage.settings.snapshots_dir, min_files=COMPACT_MIN_FILES,
                              min_age_s=COMPACT_MIN_AGE_S)
            if results:
                log.info("compacted %d snapshot partitions", len(results))
        except Exception as exc:  # noqa: BLE001 - upkeep; the next round tries again
            log.warning("snapshot compaction failed: %s", exc)
        finally:
            _compacting.release()

    threading.Thread(target=work, name="snapshot-compaction", daemon=True).start()


def refresh_leaderboards(storage: Storage, _actors=None) -> None:
    """Recompute, in the background, the kept model statistics of every env whose snapshot batches
    changed (docs/analytics.md, "Kept model statistics"), so that a leaderboard reader finds them
    ready instead of bootstrapping the intervals itself. Off the aggregate actor's path: 500
    experiments finishing together cost one refresh per env and period, not one each."""
    if not _refreshing.acquire(blocking=False):
        return

    def work() -> None:
        from analytics.reports import keep_model_statistics

        try:
            refreshed = keep_model_statistics(storage.settings.snapshots_dir)
            if refreshed:
                log.info("refreshed the kept leaderboard statistics of %s", ", ".join(refreshed))
        except Exception as exc:  # noqa: BLE001 - a cache; readers recompute what is stale
            log.warning("leaderboard statistics refresh failed: %s", exc)
        finally:
            _refreshing.release()

    threading.Thread(target=work, name="leaderboard-refresh", daemon=True).start()


def remove_stale_temporaries(storage: Storage, _actors=None) -> int:
    """Remove the temporary files a killed upload, checkpoint or snapshot write left on the volume.

    Several gateways, workers and relays may share it, so only files untouched for
    ``TEMP_FILE_GRACE_S`` (an hour) go: a write in progress touches its file with every block and
    lasts seconds. (``resimhub up`` with its in-process broker removes them all when it starts.)
    """
    settings = storage.settings
    return sum(remove_temporaries(root, older_than_s=TEMP_FILE_GRACE_S)
               for root in (settings.artifacts_dir, settings.snapshots_dir))
