"""Compaction: many small batch files of a partition merged into one, with no reader ever seeing a
batch missing or twice.

Per partition: read the candidates (through open file descriptors, so each is read as one version
of the file), keep the newest copy of every batch, sort, write the merged file under a hidden
name, then, inside one change (:func:`analytics.layout.change`: no read lists or scans the
partition meanwhile), rename it into place and remove the candidates that are still the files
that were read. A read therefore sees the inputs or the merged file, never both or neither. A
candidate rewritten meanwhile stays: its ``batch_version`` is newer than the merged copy's, so
readers take it.

One compaction (or rebuild) per dataset runs at a time, under ``_compact.lock``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analytics import layout
from analytics.errors import CompactionBusy
from analytics.schemas import DATASETS, Dataset, dataset
from analytics.snapshots import FOOTER_BATCHES, write_file

log = logging.getLogger(__name__)

#: Compacted files smaller than this are merged again with the next small files; bigger ones are
#: left alone, so each row is rewritten a bounded number of times.
TARGET_ROWS = 4_000_000


@dataclass
class PartitionResult:
    dataset: str
    env_name: str
    date: str
    inputs: int
    rows: int
    output: str | None
    #: Inputs rewritten by a writer while being merged, and therefore kept.
    kept: int = 0


@contextlib.contextmanager
def exclusive(root: Path, *, wait: bool = False) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(layout.flock(root / layout.COMPACT_LOCK, exclusive=True, blocking=wait))
        except layout.LockBusy:
            raise CompactionBusy(f"another compaction or rebuild is running on {root}") from None
        yield


def _identity(st: os.stat_result) -> tuple:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read_candidate(ds: Dataset, path: Path) -> tuple[pa.Table, dict[str, int], tuple] | None:
    """The file's rows in the current schema, its batches and the identity of what was read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        identity = _identity(os.fstat(handle.fileno()))
        parquet = pq.ParquetFile(handle)
        raw = (parquet.schema_arrow.metadata or {}).get(FOOTER_BATCHES)
        table = parquet.read()
    if raw:
        batches = {str(k): int(v) for k, v in json.loads(raw).items()}
    else:  # schema version 1: one batch, named after the file, no batch columns
        batches = {path.name[: -len(layout.SUFFIX)]: identity[2]}
    return _conform(ds, table, batches), batches, identity


def _conform(ds: Dataset, table: pa.Table, batches: dict[str, int]) -> pa.Table:
    n = table.num_rows
    arrays = []
    for f in ds.schema:
        if f.name in table.column_names:
            arrays.append(table.column(f.name).cast(f.type))
        elif f.name == "batch_id" and len(batches) == 1:
            arrays.append(pa.array([next(iter(batches))] * n, f.type))
        elif f.name == "batch_version" and len(batches) == 1:
            arrays.append(pa.array([next(iter(batches.values()))] * n, f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(arrays, schema=ds.schema)


def _merge(ds: Dataset, inputs: list[tuple[pa.Table, dict[str, int]]]) -> tuple[pa.Table, dict[str, int]]:
    newest: dict[str, int] = {}
    for _, batches in inputs:
        for batch, version in batches.items():
            newest[batch] = max(version, newest.get(batch, version))
    seen: set[tuple[str, int]] = set()
    parts = []
    for table, batches in inputs:
        # older copies go, and so does a second copy of the same version (the same data twice)
        drop = [b for b, v in batches.items() if v < newest[b] or (b, v) in seen]
        seen.update(batches.items())
        if drop:
            table = table.filter(pc.invert(pc.is_in(table.column("batch_id"), pa.array(drop, pa.string()))))
        parts.append(table)
    merged = pa.concat_tables(parts)
    merged = merged.sort_by([(c, "ascending") for c in ds.sort_by])
    return merged, newest


def compact_partition(ds: Dataset, root: Path, directory: Path, env_name: str, day: str, *, min_files: int,
                      min_age_s: float, target_rows: int) -> PartitionResult | None:
    now = time.time()
    candidates = []
    for name in sorted(os.listdir(directory)):
        if not layout.is_data_name(name):
            continue
        path = directory / name
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if name.startswith(layout.COMPACTED_PREFIX):
            if pq.read_metadata(path).num_rows < target_rows:
                candidates.append(path)
        elif now - st.st_mtime >= min_age_s:
            candidates.append(path)
    if len(candidates) < min_files:
        return None
    inputs, identities = [], {}
    for path in candidates:
        got = _read_candidate(ds, path)
        if got is None:
            continue
        table, batches, identity = got
        inputs.append((table, batches))
        identities[path] = identity
    if len(inputs) < min_files:
        return None
    merged, versions = _merge(ds, inputs)
    output = directory / f"{layout.COMPACTED_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}" \
                         f"{layout.SUFFIX}"
    tmp = layout.temp_path(directory)
    kept = 0
    try:
        write_file(tmp, merged, ds, versions)
        with layout.change(root):
            os.replace(tmp, output)
            for path, identity in identities.items():
                try:
                    if _identity(path.stat()) == identity:
                        path.unlink()
                    else:
                        kept += 1
                except FileNotFoundError:
                    pass
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    layout.fsync_dir(directory)
    return PartitionResult(ds.name, env_name, day, len(identities), merged.num_rows, output.name, kept)


def compact(snapshots_dir: Path | str, datasets: Sequence[str] | None = None, *, min_files: int = 2,
            min_age_s: float = 0.0, target_rows: int = TARGET_ROWS, wait: bool = False,
            progress: Callable[[int, int], None] | None = None) -> list[PartitionResult]:
    """Compact every partition of the given datasets (all by default) holding at least ``min_files``
    files that are older than ``min_age_s`` (or compacted files under ``target_rows`` rows)."""
    names = list(datasets) if datasets else list(DATASETS)
    results: list[PartitionResult] = []
    work = []
    for name in names:
        ds = dataset(name)
        root = Path(snapshots_dir) / ds.name
        if root.is_dir():
            work.extend((ds, root, env, day, directory) for env, day, directory in layout.partitions(root))
    done = 0
    by_root: dict[Path, list] = {}
    for item in work:
        by_root.setdefault(item[1], []).append(item)
    for root, items in by_root.items():
        with exclusive(root, wait=wait):
            for ds, _, env, day, directory in items:
                result = compact_partition(ds, root, directory, env, day, min_files=min_files, min_age_s=min_age_s,
                                           target_rows=target_rows)
                if result is not None:
                    results.append(result)
                done += 1
                if progress is not None:
                    progress(done, len(work))
    return results


def retire_unlisted(root: Path, keep: set[Path], written_after_ns: int) -> int:
    """Remove the data files of a dataset that are neither in ``keep`` nor newer than
    ``written_after_ns`` (a rebuild's start, measured on this filesystem); the caller holds
    :func:`exclusive`. Returns the number of files removed."""
    stale = []
    for f in layout.list_files(root):
        try:
            if f.path not in keep and f.path.stat().st_mtime_ns < written_after_ns:
                stale.append(f.path)
        except FileNotFoundError:
            continue
    if stale:
        with layout.change(root):
            for path in stale:
                path.unlink(missing_ok=True)
    return len(stale)
