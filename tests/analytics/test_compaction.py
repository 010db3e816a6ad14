"""Compaction merges small files, and writers, readers and a compactor running together never let a
reader see a batch torn, doubled or missing."""

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from analytics import compaction, readers
from analytics.errors import CompactionBusy
from analytics.snapshots import Batch, write_batch

ROOT = Path(__file__).resolve().parents[2]

DAY = datetime(2026, 6, 1, tzinfo=UTC)
ENVS = ("CartPole-v1", "ALE/Pong-v5")


def batch(i: int) -> Batch:
    """Batch i holds 1 + i % 7 rows whose returns are all i, in one of four partitions."""
    n = 1 + i % 7
    return Batch("episodes", f"run-{i}", ENVS[i % 2], DAY + timedelta(days=(i // 2) % 2),
                 {"phase": ["eval"] * n, "episode": list(range(n)), "return": [float(i)] * n, "model_id": ["m"] * n})


def check(frame, must_have: set[str]) -> None:
    by_batch = frame.groupby("batch_id")["return"].agg(["size", "sum"])
    for batch_id, row in by_batch.iterrows():
        i = int(batch_id.split("-")[1])
        assert row["size"] == 1 + i % 7, f"{batch_id}: {row['size']} rows"  # not torn, not doubled
        assert row["sum"] == (1 + i % 7) * i
    missing = must_have - set(by_batch.index)
    assert not missing, f"committed batches missing from a read: {sorted(missing)[:5]}"


def test_compaction_keeps_every_row_once_and_sorts(tmp_path):
    for i in range(30):
        write_batch(tmp_path, batch(i))
    before = readers.read(tmp_path, "episodes").sort_values(["batch_id", "episode"]).reset_index(drop=True)
    results = compaction.compact(tmp_path)
    assert len(results) == 4 and sum(r.inputs for r in results) == 30 and sum(r.rows for r in results) == len(before)
    files = list((tmp_path / "episodes").rglob("*.parquet"))
    assert len(files) == 4 and all(f.name.startswith("part-") for f in files)
    after = readers.read(tmp_path, "episodes").sort_values(["batch_id", "episode"]).reset_index(drop=True)
    assert after.drop(columns="batch_version").equals(before.drop(columns="batch_version"))
    assert (after.batch_version == before.batch_version).all()  # a batch keeps its version when merged
    # more small files later merge with the small compacted file; a lone file is left alone
    write_batch(tmp_path, batch(40))
    assert compaction.compact(tmp_path) != []
    assert compaction.compact(tmp_path) == []
    check(readers.read(tmp_path, "episodes"), {f"run-{i}" for i in [*range(30), 40]})


def test_young_files_wait_and_a_second_compactor_is_refused(tmp_path):
    for i in range(4):
        write_batch(tmp_path, batch(2 * i))
    assert compaction.compact(tmp_path, min_age_s=3600) == []
    root = tmp_path / "episodes"
    with compaction.exclusive(root):
        with pytest.raises(CompactionBusy):
            compaction.compact(tmp_path)
    assert len(compaction.compact(tmp_path)) == 2


def test_retiring_files_a_rebuild_did_not_write(tmp_path):
    for i in range(3):
        write_batch(tmp_path, batch(2 * i))
    root = tmp_path / "episodes"
    keep = {write_batch(tmp_path, batch(0))}
    cutoff = time.time_ns() + 1
    os.utime(keep.pop(), ns=(cutoff - 10, cutoff - 10))  # even an old file stays if listed
    kept = next(root.rglob("run-0.parquet"))
    assert compaction.retire_unlisted(root, {kept}, cutoff) == 2
    assert set(readers.read(tmp_path, "episodes").batch_id) == {"run-0"}


COMPACTOR = """
import sys, time
from pathlib import Path
from analytics import compaction
folder, stop = Path(sys.argv[1]), Path(sys.argv[2])
runs = 0
while True:
    done = stop.exists()
    compaction.compact(folder, wait=True)
    runs += 1
    if done:
        break
    time.sleep(0.01)
print(runs)
"""


def test_writers_readers_and_a_compactor_together(tmp_path):
    stop = tmp_path / "stop"
    folder = tmp_path / "snap"
    folder.mkdir()
    compactor = subprocess.Popen([sys.executable, "-c", COMPACTOR, str(folder), str(stop)], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    committed: set[str] = set()
    lock = threading.Lock()
    failures: list[BaseException] = []
    reads = [0, 0]
    writing = threading.Event()
    writing.set()

    def writer() -> None:
        try:
            for i in range(160):
                write_batch(folder, batch(i))
                if i % 5 == 4:  # a redelivered message writes an earlier batch again
                    write_batch(folder, batch(i - 3))
                with lock:
                    committed.add(f"run-{i}")
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)
        finally:
            writing.clear()

    def reader(slot: int) -> None:
        try:
            while writing.is_set() or reads[slot] < 5:
                with lock:
                    expected = set(committed)
                frame = readers.read(folder, "episodes", columns=["batch_id", "return"])
                check(frame, expected)
                reads[slot] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.touch()
    out, err = compactor.communicate(timeout=120)
    assert compactor.returncode == 0, err[-2000:]
    assert not failures, failures[0]
    assert int(out) > 3 and min(reads) >= 5
    final = readers.read(folder, "episodes")
    check(final, {f"run-{i}" for i in range(160)})
    assert len(final) == sum(1 + i % 7 for i in range(160))
    assert len(list(folder.rglob("*.parquet"))) == 4  # the last compaction left one file per partition
