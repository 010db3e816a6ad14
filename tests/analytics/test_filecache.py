"""The gateway's partition cache: each file decoded once, and answers equal to reading the files."""

import random
from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
import pytest

from analytics import compaction, filecache, readers
from analytics.snapshots import Batch, write_batch

DAY = datetime(2026, 5, 4, tzinfo=UTC)


def _batch(i: int, *, value: float | None = None, day: int = 0, env: str = "CartPole-v1", n: int = 0) -> Batch:
    n = n or 2 + i % 5
    return Batch("episodes", f"b-{i}", env, DAY + timedelta(days=day),
                 {"phase": ["eval" if i % 3 else "train"] * n, "episode": list(range(n)),
                  "return": [float(i if value is None else value)] * n, "model_id": [f"m{i % 4}"] * n,
                  "recorded_at": [DAY + timedelta(days=day)] * n})


@pytest.fixture
def cache(tmp_path):
    filecache.enable(tmp_path, 64 * 1_048_576)
    yield filecache.for_dataset(tmp_path / "episodes")
    filecache.enable(tmp_path, 0)


def _uncached(folder, **kwargs):
    """The same read straight from the files; the folder's cache is put back as it was."""
    key = folder.resolve()
    kept = filecache._caches.pop(key, None)
    try:
        return readers.read(folder, "episodes", **kwargs)
    finally:
        if kept is not None:
            filecache._caches[key] = kept


def _rows(frame):
    return sorted(map(tuple, frame.astype(str).to_numpy().tolist()))


def test_each_file_is_decoded_once_and_a_compaction_replaces_them(tmp_path, cache):
    for i in range(10):
        write_batch(tmp_path, _batch(i))
    assert len(readers.read(tmp_path, "episodes")) == sum(2 + i % 5 for i in range(10))
    assert cache.decoded_files == 10
    readers.read(tmp_path, "episodes", columns=["return"], filter=pc.field("phase") == "eval")
    assert cache.decoded_files == 10  # a second read, other columns and filter: nothing decoded again
    write_batch(tmp_path, _batch(10))
    write_batch(tmp_path, _batch(3, value=99.0))  # a redelivered batch replaces its file
    frame = readers.read(tmp_path, "episodes")
    assert cache.decoded_files == 12
    assert frame.query("batch_id == 'b-3'")["return"].tolist() == [99.0] * 5
    compaction.compact(tmp_path)
    frame = readers.read(tmp_path, "episodes")
    assert cache.decoded_files == 13  # the merged file, once; the inputs are gone from the cache
    assert _rows(frame) == _rows(_uncached(tmp_path))
    used = cache.used_bytes
    readers.read(tmp_path, "episodes")
    assert cache.used_bytes == used and cache.decoded_files == 13


def test_answers_equal_reads_of_the_files_through_writes_rewrites_and_compactions(tmp_path, cache):
    rng = random.Random(7)
    written = 0
    for step in range(60):
        action = rng.random()
        if action < 0.6 or written == 0:
            write_batch(tmp_path, _batch(written, day=rng.randrange(2), env=rng.choice(["CartPole-v1", "Acrobot-v1"])))
            written += 1
        elif action < 0.8:
            i = rng.randrange(written)  # same batch id, other rows; possibly another day (an older copy)
            write_batch(tmp_path, _batch(i, value=rng.random(), day=rng.randrange(2)))
        else:
            compaction.compact(tmp_path, min_files=2)
        query = rng.choice([
            {},
            {"columns": ["batch_id", "return"], "filter": pc.field("phase") == "eval"},
            {"envs": ["Acrobot-v1"], "columns": ["model_id", "return"], "dictionary": ["model_id"]},
            {"since": DAY + timedelta(days=1), "columns": ["batch_id", "env_name", "date", "return"]},
        ])
        cached = readers.read(tmp_path, "episodes", **query)
        assert list(cached.columns) == list(_uncached(tmp_path, **query).columns)
        assert _rows(cached) == _rows(_uncached(tmp_path, **query)), f"step {step}: {query}"
    assert cache.decoded_files > 0


@pytest.mark.parametrize(("rows", "budget", "decoded"), [
    (3, 4096, 0),  # the files' sizes alone rule it out: nothing is decoded for the cache
    (2000, 512 * 1024, 20),  # small on disk, big decoded: decoded once to learn that, then never again
])
def test_a_partition_over_budget_is_read_from_the_files(tmp_path, rows, budget, decoded):
    for i in range(20):
        write_batch(tmp_path, Batch("episodes", f"b-{i}", "CartPole-v1", DAY,
                                    {"phase": ["eval"] * rows, "episode": list(range(rows)),
                                     "return": [float(i)] * rows, "model_id": [f"model-{i}"] * rows}))
    filecache.enable(tmp_path, budget)
    try:
        cache = filecache.for_dataset(tmp_path / "episodes")
        first = readers.read(tmp_path, "episodes")
        again = readers.read(tmp_path, "episodes")
        assert cache.used_bytes == 0
        assert cache.decoded_files == decoded
        assert len(first) == 20 * rows
        assert _rows(first) == _rows(again) == _rows(_uncached(tmp_path))
    finally:
        filecache.enable(tmp_path, 0)


def test_when_full_idle_partitions_leave_and_busy_ones_stay(tmp_path, monkeypatch):
    for day in range(5):
        for i in range(5):
            write_batch(tmp_path, _batch(day * 10 + i, day=day, n=2000))
    filecache.enable(tmp_path, 64 * 1_048_576)
    try:
        cache = filecache.for_dataset(tmp_path / "episodes")
        readers.read(tmp_path, "episodes", since=DAY + timedelta(days=4))
        per_partition = cache.used_bytes
        # room for four partitions (a quarter of the budget each at most), and five are read in turn
        filecache.enable(tmp_path, int(per_partition * 4.5))
        cache = filecache.for_dataset(tmp_path / "episodes")
        expected = _rows(_uncached(tmp_path))
        for _ in range(3):
            assert _rows(readers.read(tmp_path, "episodes")) == expected
            assert cache.used_bytes <= cache.max_bytes
        # days 0-3 stay; day 4, for which no busy partition is evicted, is decoded on each read
        assert cache.decoded_files == 20 + 5 * 3
        monkeypatch.setattr(filecache, "IDLE_S", 0.0)
        readers.read(tmp_path, "episodes", since=DAY + timedelta(days=4))  # now day 0, idle longest, makes room
        readers.read(tmp_path, "episodes", since=DAY + timedelta(days=1))
        assert cache.decoded_files == 20 + 5 * 4
        monkeypatch.setattr(filecache, "IDLE_S", 30.0)
        assert _rows(readers.read(tmp_path, "episodes")) == expected
        assert cache.decoded_files == 20 + 5 * 5  # day 0 had left: decoded again, not kept
        assert cache.used_bytes <= cache.max_bytes
    finally:
        filecache.enable(tmp_path, 0)
