"""The writer: one file per batch, atomic, idempotent on rewrite, schema-checked and versioned."""

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from analytics import readers, schemas
from analytics.snapshots import FOOTER_BATCHES, FOOTER_SCHEMA_VERSION, Batch, write_batch, write_batches

WHEN = datetime(2026, 5, 17, 8, 30, tzinfo=UTC)


def _rows(n, **extra):
    return [{"experiment_id": 1, "run_id": 2, "phase": "train", "episode": i, "return": float(i), "length": 3,
             **extra} for i in range(n)]


def test_a_batch_is_one_file_in_its_hive_partition_with_a_versioned_footer(tmp_path):
    path = write_batch(tmp_path, Batch("episodes", "experiment-1-abcd", "ALE/Pong-v5", WHEN, _rows(4)))
    assert path.relative_to(tmp_path).as_posix() == \
        "episodes/env_name=ALE%2FPong-v5/date=2026-05-17/experiment-1-abcd.parquet"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    meta = pq.read_schema(path).metadata
    assert meta[FOOTER_SCHEMA_VERSION] == str(schemas.EPISODES.version).encode()
    (version,) = json.loads(meta[FOOTER_BATCHES]).values()
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == schemas.EPISODES.schema.remove_metadata()
    assert set(table.column("batch_version").to_pylist()) == {version}
    # plain pyarrow decodes the partition values as ReSimHub wrote them
    plain = pads.dataset(tmp_path / "episodes", partitioning="hive").to_table()
    assert set(plain.column("env_name").to_pylist()) == {"ALE/Pong-v5"}


def test_writing_a_batch_again_replaces_it(tmp_path):
    batch = Batch("episodes", "experiment-1-abcd", "CartPole-v1", WHEN, _rows(5))
    write_batch(tmp_path, batch)
    write_batch(tmp_path, Batch("episodes", "experiment-1-abcd", "CartPole-v1", WHEN, _rows(3)))
    assert len(readers.read(tmp_path, "episodes")) == 3
    assert len(list(tmp_path.rglob("*.parquet"))) == 1


def test_a_batch_rewritten_on_another_day_leaves_one_copy(tmp_path):
    write_batch(tmp_path, Batch("experiments", "experiment-1", "CartPole-v1", WHEN, [{"experiment_id": 1}]))
    later = WHEN.replace(day=20)
    write_batch(tmp_path, Batch("experiments", "experiment-1", "CartPole-v1", later,
                                [{"experiment_id": 1}, {"experiment_id": 1}]))
    (path,) = tmp_path.rglob("*.parquet")
    assert "date=2026-05-20" in str(path) and len(readers.read(tmp_path, "experiments")) == 2


def test_columns_the_schema_does_not_know_are_refused_and_missing_ones_are_null(tmp_path):
    with pytest.raises(ValueError, match="unknown columns.*retrun"):
        write_batch(tmp_path, Batch("episodes", "b-1", "CartPole-v1", WHEN, [{"retrun": 1.0}]))
    write_batch(tmp_path, Batch("episodes", "b-1", "CartPole-v1", WHEN, {"return": [1.0, 2.0]}))
    frame = readers.read(tmp_path, "episodes")
    assert frame["return"].tolist() == [1.0, 2.0] and frame["agent"].isna().all()


def test_empty_batches_write_nothing_and_bad_batch_ids_are_refused(tmp_path):
    assert write_batch(tmp_path, Batch("episodes", "b-1", "CartPole-v1", WHEN, [])) is None
    assert not tmp_path.joinpath("episodes").exists()
    for bad in ("part-1", "../x", ".hidden", "a/b", ""):
        with pytest.raises(ValueError):
            write_batch(tmp_path, Batch("episodes", bad, "CartPole-v1", WHEN, _rows(1)))
    with pytest.raises(ValueError, match="unknown dataset"):
        write_batch(tmp_path, Batch("nope", "b-1", "CartPole-v1", WHEN, _rows(1)))


def test_write_batches_counts_rows_per_dataset(tmp_path):
    counts = write_batches(tmp_path, [Batch("episodes", "b-1", "CartPole-v1", WHEN, _rows(4)),
                                      Batch("evaluations", "b-1", "CartPole-v1", WHEN, []),
                                      Batch("experiments", "e-1", "CartPole-v1", WHEN,
                                            [{"experiment_id": 1, "status": "created", "recorded_at": WHEN}])])
    assert counts == {"episodes": 4, "evaluations": 0, "experiments": 1}


def test_every_dataset_schema_documents_its_columns_and_has_batch_columns():
    for ds in schemas.DATASETS.values():
        assert ds.schema.names[:2] == ["batch_id", "batch_version"]
        assert not set(ds.schema.names) & set(schemas.PARTITION_COLUMNS)
        assert set(ds.key) | set(ds.sort_by) | {ds.time_column} <= set(ds.schema.names)
        assert ds.full_schema.names[-2:] == ["env_name", "date"]
    assert pa.types.is_timestamp(schemas.EPISODES.schema.field("recorded_at").type)
