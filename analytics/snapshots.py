"""Parquet snapshot datasets (ARCHITECTURE §7): one schema per dataset, owned here, versioned.

Datasets are hive-partitioned by ``env_name`` and ``date`` under ``<data_dir>/snapshots/<dataset>/``.
Each file is written to a temporary name and renamed into place, so readers never see half a file;
file names are deterministic per producer (e.g. ``experiment-12``) so a redelivered message that
writes again replaces its own file instead of doubling the rows.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
_TS = pa.timestamp("us", tz="UTC")

SCHEMAS: dict[str, pa.Schema] = {
    "episodes": pa.schema([
        ("experiment_id", pa.int64()), ("run_id", pa.int64()), ("task_id", pa.string()), ("model_id", pa.string()),
        ("agent", pa.string()), ("seed", pa.int64()), ("phase", pa.string()), ("episode", pa.int64()),
        ("return", pa.float64()), ("length", pa.int64()), ("recorded_at", _TS),
    ]),
    "evaluations": pa.schema([
        ("evaluation_id", pa.string()), ("model_id", pa.string()), ("experiment_id", pa.int64()),
        ("run_id", pa.int64()), ("agent", pa.string()), ("episodes", pa.int64()), ("seed", pa.int64()),
        ("mode", pa.string()), ("mean", pa.float64()), ("std", pa.float64()), ("median", pa.float64()),
        ("min", pa.float64()), ("max", pa.float64()), ("iqm", pa.float64()), ("ci_low", pa.float64()),
        ("ci_high", pa.float64()), ("score", pa.float64()), ("mean_length", pa.float64()),
        ("latency_ms", pa.float64()), ("steps_per_second", pa.float64()), ("wall_time_s", pa.float64()),
        ("evaluated_at", _TS),
    ]),
    "experiments": pa.schema([
        ("experiment_id", pa.int64()), ("name", pa.string()), ("agent", pa.string()), ("status", pa.string()),
        ("seeds", pa.list_(pa.int64())), ("total_timesteps", pa.int64()), ("episodes", pa.int64()),
        ("mean_return", pa.float64()), ("iqm", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
        ("best_return", pa.float64()), ("training_duration_s", pa.float64()), ("recorded_at", _TS),
    ]),
}
PARTITIONS = ("env_name", "date")


def _safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", value)


def write(snapshots_dir: Path, dataset: str, rows: list[dict], *, env_name: str, name: str,
          when: datetime | None = None) -> Path | None:
    """Write ``rows`` as one Parquet file of ``dataset``; returns its path (None for no rows)."""
    if not rows:
        return None
    schema = SCHEMAS[dataset]
    table = pa.Table.from_pylist(rows, schema=schema)
    day = (when or datetime.now(UTC)).strftime("%Y-%m-%d")
    directory = Path(snapshots_dir) / dataset / f"env_name={_safe(env_name)}" / f"date={day}"
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{_safe(name)}.parquet"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    try:
        pq.write_table(table.replace_schema_metadata({"resimhub.schema_version": str(SCHEMA_VERSION),
                                                      "resimhub.dataset": dataset}), tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
