"""Reads touch only the partitions asked for and see every batch exactly once."""

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analytics import compaction, layout, readers
from analytics.errors import SnapshotUnreadable
from analytics.snapshots import FOOTER_BATCHES, Batch, write_batch

DAY = datetime(2026, 4, 2, tzinfo=UTC)


def _batch(batch_id, env="CartPole-v1", when=DAY, n=3, value=1.0):
    return Batch("episodes", batch_id, env, when, [{"phase": "eval", "episode": i, "return": value, "model_id": "m",
                                                    "recorded_at": when} for i in range(n)])


def _poison(directory):
    """A file that fails if anything opens it: proves a read never went there."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "zz-corrupt.parquet").write_bytes(b"not parquet at all")


def test_env_and_date_prune_partitions_before_any_file_is_opened(tmp_path):
    write_batch(tmp_path, _batch("a-1", "CartPole-v1", DAY))
    write_batch(tmp_path, _batch("a-2", "CartPole-v1", DAY + timedelta(days=3)))
    write_batch(tmp_path, _batch("b-1", "Acrobot-v1", DAY + timedelta(days=3)))
    _poison(tmp_path / "episodes" / "env_name=Pendulum-v1" / "date=2026-04-09")
    _poison(tmp_path / "episodes" / "env_name=CartPole-v1" / "date=2026-03-01")
    frame = readers.read(tmp_path, "episodes", envs=["CartPole-v1", "Acrobot-v1"], since=DAY,
                         columns=["batch_id", "env_name", "return"])
    assert list(frame.columns) == ["batch_id", "env_name", "return"]
    assert sorted(frame.batch_id.unique()) == ["a-1", "a-2", "b-1"]
    later = readers.read(tmp_path, "episodes", envs="CartPole-v1", since=DAY + timedelta(days=1))
    assert set(later.batch_id) == {"a-2"}
    with pytest.raises(Exception):  # noqa: B017 - the poisoned partition really is unreadable
        readers.read(tmp_path, "episodes")


def test_filters_and_columns(tmp_path):
    write_batch(tmp_path, _batch("a-1", value=1.0))
    write_batch(tmp_path, _batch("a-2", value=2.0, n=5))
    table = readers.read_table(tmp_path, "episodes", columns=["model_id", "return"], where='"return" > $at',
                               params={"at": 1.5})
    assert table.num_rows == 5 and table.column_names == ["model_id", "return"]
    assert readers.read(tmp_path, "evaluations").empty  # a dataset never written reads as empty
    assert list(readers.read(tmp_path, "evaluations", columns=["mean"]).columns) == ["mean"]


def test_the_newest_copy_of_a_batch_wins_across_compacted_and_single_files(tmp_path):
    for i in range(3):
        write_batch(tmp_path, _batch(f"b-{i}", value=float(i)))
    compaction.compact(tmp_path)
    write_batch(tmp_path, _batch("b-1", value=10.0, n=2))  # rewritten after compaction
    frame = readers.read(tmp_path, "episodes")
    assert sorted(frame.groupby("batch_id")["return"].sum().to_dict().items()) == \
        [("b-0", 0.0), ("b-1", 20.0), ("b-2", 6.0)]
    # an old copy of the same batch written under another date is older and loses too
    old = datetime(2026, 1, 1, tzinfo=UTC)
    path = write_batch(tmp_path, _batch("b-2", when=old, value=99.0))
    meta = pq.read_schema(path).metadata
    (version,) = json.loads(meta[FOOTER_BATCHES]).values()
    table = pq.read_table(path)
    old_table = table.set_column(1, "batch_version", pa.array([1] * table.num_rows, pa.int64()))
    pq.write_table(old_table.replace_schema_metadata({**meta, FOOTER_BATCHES: b'{"b-2": 1}'}), path)
    assert readers.read(tmp_path, "episodes").query("batch_id == 'b-2'")["return"].tolist() == [2.0] * 3


def test_equal_copies_mid_compaction_are_read_once(tmp_path):
    """Both a compaction's inputs and its merged file (inputs restored by hand): each batch once."""
    for i in range(3):
        write_batch(tmp_path, _batch(f"b-{i}"))
    directory = next((tmp_path / "episodes").rglob("date=*"))
    saved = {p.name: p.read_bytes() for p in directory.iterdir()}
    compaction.compact(tmp_path)
    for name, data in saved.items():
        (directory / name).write_bytes(data)
    assert len(os.listdir(directory)) == 4
    frame = readers.read(tmp_path, "episodes")
    assert len(frame) == 9 and frame.groupby("batch_id").size().tolist() == [3, 3, 3]


def test_version_1_files_are_read_through_the_current_schema(tmp_path):
    """Files as the first writer wrote them: no batch columns, no footer batches."""
    directory = tmp_path / "episodes" / "env_name=CartPole-v1" / "date=2026-02-02"
    directory.mkdir(parents=True)
    v1 = pa.table({"experiment_id": [1, 1], "phase": ["train", "train"], "episode": [0, 1], "return": [1.0, 2.0]})
    pq.write_table(v1.replace_schema_metadata({"resimhub.schema_version": "1"}), directory / "experiment-1-x.parquet")
    write_batch(tmp_path, _batch("b-9", when=datetime(2026, 2, 2, tzinfo=UTC)))
    frame = readers.read(tmp_path, "episodes")
    assert len(frame) == 5 and frame.query("experiment_id == 1")["agent"].isna().all()
    compaction.compact(tmp_path)
    frame = readers.read(tmp_path, "episodes")
    assert sorted(frame.batch_id.unique()) == ["b-9", "experiment-1-x"] and len(frame) == 5


def test_hidden_temporary_files_and_locks_are_never_read(tmp_path):
    write_batch(tmp_path, _batch("b-1"))
    directory = next((tmp_path / "episodes").rglob("date=*"))
    (directory / ".tmp-half-written.parquet").write_bytes(b"PAR1 half a file")
    (directory / "_scratch.parquet").write_bytes(b"not data")
    assert len(readers.read(tmp_path, "episodes")) == 3


def test_a_folder_in_another_layout_is_refused_not_read_as_empty(tmp_path):
    """Partitioned by env only: every read would otherwise answer an empty table."""
    directory = tmp_path / "episodes" / "env_name=CartPole-v1"
    directory.mkdir(parents=True)
    pq.write_table(pa.table({"phase": ["eval"], "return": [1.0]}), directory / "b-1.parquet")
    with pytest.raises(SnapshotUnreadable, match="env_name=<env>/date=<YYYY-MM-DD>.*b-1.parquet"):
        readers.read(tmp_path, "episodes")


def test_files_of_another_schema_are_refused(tmp_path):
    directory = tmp_path / "episodes" / "env_name=CartPole-v1" / "date=2026-04-02"
    directory.mkdir(parents=True)
    pq.write_table(pa.table({"reward": [1.0, 2.0], "step_count": [3, 4]}), directory / "foreign.parquet")
    with pytest.raises(SnapshotUnreadable, match="not ReSimHub's episodes dataset"):
        readers.read(tmp_path, "episodes", columns=["model_id", "return"])
    (directory / "foreign.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SnapshotUnreadable):
        readers.read(tmp_path, "episodes")


def test_a_change_waits_for_the_reads_in_flight_and_new_reads_wait_for_it(tmp_path):
    write_batch(tmp_path, _batch("b-1"))
    root = tmp_path / "episodes"
    events = []
    with layout.reading(root):
        changer = threading.Thread(target=lambda: _change(root, events))
        changer.start()
        time.sleep(0.3)
        assert events == []  # the change waits for this read
        later = threading.Thread(target=lambda: (readers.read(tmp_path, "episodes"), events.append("read")))
        later.start()
        time.sleep(0.3)
        assert events == []  # a new read queues behind the waiting change
    changer.join(10)
    later.join(10)
    assert events == ["changed", "read"]


def _change(root, events):
    with layout.change(root):
        time.sleep(0.1)
        events.append("changed")
