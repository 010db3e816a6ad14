"""The relays' periodic snapshot compaction: piles of small files get merged in the background."""

import os
import threading
import time
from types import SimpleNamespace

from actors import housekeeping
from analytics import readers
from analytics.snapshots import write_batch
from tests.analytics.test_compaction import batch, check


def _storage(tmp_path):
    return SimpleNamespace(settings=SimpleNamespace(snapshots_dir=tmp_path))


def _age(root, seconds):
    past = time.time() - seconds
    for path in root.rglob("*.parquet"):
        os.utime(path, (past, past))


def _wait_idle():
    deadline = time.monotonic() + 30
    while any(t.name == "snapshot-compaction" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_many_old_small_files_are_merged_without_losing_or_doubling_rows(tmp_path):
    ids = [i for i in range(80) if i % 4 == 0]  # all in one partition
    for i in ids:
        write_batch(tmp_path, batch(i))
    _age(tmp_path, 120)
    before = len(readers.read(tmp_path, "episodes"))
    housekeeping.compact_snapshots(_storage(tmp_path))
    _wait_idle()
    files = list((tmp_path / "episodes").rglob("*.parquet"))
    assert len(files) == 1
    frame = readers.read(tmp_path, "episodes")
    assert len(frame) == before
    check(frame, {f"run-{i}" for i in ids})


def test_few_or_young_files_are_left_alone(tmp_path):
    for i in range(0, 40, 4):  # 10 files: under the threshold
        write_batch(tmp_path, batch(i))
    _age(tmp_path, 120)
    housekeeping.compact_snapshots(_storage(tmp_path))
    _wait_idle()
    assert len(list((tmp_path / "episodes").rglob("*.parquet"))) == 10
    for i in range(40, 120, 4):  # now 30 files, but the new ones are young
        write_batch(tmp_path, batch(i))
    housekeeping.compact_snapshots(_storage(tmp_path))
    _wait_idle()
    assert len(list((tmp_path / "episodes").rglob("*.parquet"))) > 1
