"""Writing snapshot batches (docs/analytics.md, "The folder").

A batch is written whole, as one Parquet file named after it, to a hidden temporary file that is
renamed into place: a reader sees the whole batch or none of it. Writing a batch again (a
redelivered message, a rebuild) replaces its file, so rows are never doubled; replacing or removing
a file is a change (:func:`analytics.layout.change`), which no read overlaps, because a directory
listing taken during a rename may miss the name altogether.

The pipeline's aggregate step and ``resimhub analytics snapshot`` build their batches with the same
function (:func:`analytics.rows.experiment_batches`), so a rebuild writes exactly what the pipeline
wrote.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analytics import layout
from analytics.schemas import DATASETS, Dataset, dataset

FOOTER_DATASET = b"resimhub.dataset"
FOOTER_SCHEMA_VERSION = b"resimhub.schema_version"
#: JSON ``{batch_id: batch_version}`` of every batch in the file.
FOOTER_BATCHES = b"resimhub.batches"
COMPRESSION = "zstd"
ROW_GROUP_ROWS = 1 << 20

_version_lock = threading.Lock()
_last_version = 0


def new_version() -> int:
    """Nanoseconds since the epoch, strictly increasing within the process, so that a batch written
    twice in quick succession still has a newer second copy."""
    global _last_version
    with _version_lock:
        _last_version = max(time.time_ns(), _last_version + 1)
        return _last_version


Rows = list[dict[str, Any]] | Mapping[str, Any] | pa.Table


@dataclass
class Batch:
    dataset: str
    batch_id: str
    env_name: str
    #: Decides the ``date`` partition; take it from the data (e.g. when the task finished) so that a
    #: rebuild puts the batch where the pipeline did.
    when: datetime
    rows: Rows = field(default_factory=list)

    def __len__(self) -> int:
        return _row_count(self.rows)


def _row_count(rows: Rows) -> int:
    if isinstance(rows, pa.Table):
        return rows.num_rows
    if isinstance(rows, Mapping):
        return max((len(v) for v in rows.values()), default=0)
    return len(rows)


def _constant(value: Any, type_: pa.DataType, n: int) -> pa.Array:
    if pa.types.is_string(type_):
        return pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int32), pa.array([value], pa.string())
                                              ).cast(pa.string())
    return pa.array(np.full(n, value), type=type_)


def to_table(ds: Dataset, rows: Rows, *, batch_id: str, version: int) -> pa.Table:
    """The rows as a table of exactly the dataset's schema, with the batch columns filled in.

    Columns the producer did not give are null; a column it gave that the schema does not know is an
    error (a typo must not silently drop data).
    """
    if isinstance(rows, pa.Table):
        columns = {name: rows.column(name) for name in rows.column_names}
    elif isinstance(rows, Mapping):
        columns = dict(rows)
    else:
        names = list(dict.fromkeys(k for row in rows for k in row))
        columns = {k: [row.get(k) for row in rows] for k in names}
    unknown = sorted(set(columns) - set(ds.schema.names) - {"env_name", "date"})
    if unknown:
        raise ValueError(f"{ds.name}: unknown columns {unknown}")
    n = _row_count(rows)
    arrays = []
    for f in ds.schema:
        if f.name == "batch_id":
            arrays.append(_constant(batch_id, f.type, n))
        elif f.name == "batch_version":
            arrays.append(_constant(version, f.type, n))
        elif f.name in columns:
            value = columns[f.name]
            arrays.append(value.cast(f.type) if isinstance(value, pa.Array | pa.ChunkedArray)
                          else pa.array(value, type=f.type))
        else:
            arrays.append(pa.nulls(n, type=f.type))
    return pa.Table.from_arrays(arrays, schema=ds.schema)


def footer(ds: Dataset, batches: Mapping[str, int]) -> dict[bytes, bytes]:
    return {FOOTER_DATASET: ds.name.encode(), FOOTER_SCHEMA_VERSION: str(ds.version).encode(),
            FOOTER_BATCHES: json.dumps(dict(batches), sort_keys=True).encode()}


def write_file(path: Path, table: pa.Table, ds: Dataset, batches: Mapping[str, int]) -> None:
    """Write and flush a Parquet file (to a temporary path; the caller renames it)."""
    table = table.replace_schema_metadata(footer(ds, batches))
    with open(path, "wb") as sink:
        pq.write_table(table, sink, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
        sink.flush()
        os.fsync(sink.fileno())


def write_batch(snapshots_dir: Path | str, batch: Batch, *, version: int | None = None) -> Path | None:
    """Write one batch as one file; returns its path (None for an empty batch, which writes nothing)."""
    ds = dataset(batch.dataset)
    layout.check_batch_id(batch.batch_id)
    if len(batch) == 0:
        return None
    version = version or new_version()
    table = to_table(ds, batch.rows, batch_id=batch.batch_id, version=version)
    root = Path(snapshots_dir) / ds.name
    directory = layout.partition_dir(root, batch.env_name, batch.when)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{batch.batch_id}{layout.SUFFIX}"
    tmp = layout.temp_path(directory)
    try:
        write_file(tmp, table, ds, {batch.batch_id: version})
        if target.exists():
            with layout.change(root):
                os.replace(tmp, target)
        else:
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    layout.fsync_dir(directory)
    # A batch rewritten on another day (an experiment's history after a second training) leaves
    # its older copy in the old date partition; readers would skip it, but external engines need
    # the folder to hold one copy.
    older = [p for p in directory.parent.glob(f"date=*/{target.name}") if p != target]
    if older:
        with layout.change(root):
            for path in older:
                path.unlink(missing_ok=True)
    return target


def write_batches(snapshots_dir: Path | str, batches: Iterable[Batch]) -> dict[str, int]:
    """Write every batch; rows written per dataset (every dataset named, zero included)."""
    counts = dict.fromkeys(DATASETS, 0)
    for batch in batches:
        if write_batch(snapshots_dir, batch) is not None:
            counts[batch.dataset] += len(batch)
    return counts
