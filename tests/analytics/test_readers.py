"""Reads touch only the partitions asked for and see every batch exactly once."""

import json
import os
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from analytics import compaction, layout, readers
from analytics.snapshots import FOOTER_BATCHES, Batch, write_batch

pytestmark = pytest.mark.usefixtures("read_mode")

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


def test_filters_and_dictionary_columns(tmp_path):
    write_batch(tmp_path, _batch("a-1", value=1.0))
    write_batch(tmp_path, _batch("a-2", value=2.0, n=5))
    table = readers.read_table(tmp_path, "episodes", columns=["model_id", "return"], dictionary=["model_id"],
                               filter=pc.field("return") > 1.5)
    assert table.num_rows == 5 and pa.types.is_dictionary(table.schema.field("model_id").type)
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
    """The instant after the merged file is renamed in and before the inputs go: both exist."""
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


def test_a_reader_waits_out_an_unfinished_change_and_a_crash_is_repaired(tmp_path):
    write_batch(tmp_path, _batch("b-1"))
    root = tmp_path / "episodes"
    layout._write_generation(root, 7)  # as a compactor killed mid-change would leave it
    assert len(readers.read(tmp_path, "episodes")) == 3  # after a few tries, under the shared lock
    with layout.visible_change(root):
        assert layout.read_generation(root) % 2 == 1
    assert layout.read_generation(root) == 8
