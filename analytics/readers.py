"""Consistent reads of a snapshot dataset: only the partitions and columns asked for, each batch once.

A read lists the files of the wanted partitions, decides from file names and footers which copy of
each batch is current (the highest ``batch_version``; see :mod:`analytics.schemas`), and scans
those with pyarrow. It checks the dataset's generation before and after (see
:mod:`analytics.layout`) and reads again if a compaction or rewrite overlapped; after a few
optimistic tries it holds the shared write lock for one last read, so a reader cannot be starved.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from analytics import filecache, layout
from analytics.schemas import PARTITION_SCHEMA, Dataset, dataset
from analytics.snapshots import FOOTER_BATCHES

log = logging.getLogger(__name__)

OPTIMISTIC_TRIES = 5
_PARTITIONING = pads.partitioning(PARTITION_SCHEMA, flavor="hive")

#: Footers of files already read, keyed by identity (path, inode, size, mtime): a compacted file is
#: immutable under its name, so its batch list can be reused by every later read.
_footer_cache: OrderedDict[tuple, dict[str, int]] = OrderedDict()
_footer_lock = threading.Lock()
_FOOTER_CACHE_SIZE = 4096


class ChangedDuringRead(Exception):
    """The file set changed under a read; the read is repeated."""


def _identity(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def file_batches(path: Path) -> dict[str, int]:
    """``{batch_id: batch_version}`` of a file. Files without the footer key (schema version 1) hold
    one batch named after the file, versioned by modification time."""
    key = _identity_or_changed(path)
    with _footer_lock:
        hit = _footer_cache.get(key)
        if hit is not None:
            _footer_cache.move_to_end(key)
            return hit
    try:
        meta = pq.read_metadata(path).metadata or {}
    except FileNotFoundError as exc:
        raise ChangedDuringRead(str(path)) from exc
    raw = meta.get(FOOTER_BATCHES)
    batches = {str(k): int(v) for k, v in json.loads(raw).items()} if raw else \
        {path.name[: -len(layout.SUFFIX)]: key[3]}
    with _footer_lock:
        _footer_cache[key] = batches
        while len(_footer_cache) > _FOOTER_CACHE_SIZE:
            _footer_cache.popitem(last=False)
    return batches


@dataclass
class Plan:
    """What to scan: whole files, plus files of which some batches are stale and must be filtered."""

    files: list[layout.DataFile] = field(default_factory=list)
    partial: list[tuple[layout.DataFile, list[str]]] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files] + [f.path for f, _ in self.partial]


def plan(files: Sequence[layout.DataFile]) -> Plan:
    """Choose the current copy of every batch. One-batch files are named after their batch, so only
    compacted files' footers are read, plus the footers of the rare batches found twice."""
    holders: dict[str, list[tuple[layout.DataFile, int | None]]] = {}
    compacted: dict[Path, dict[str, int]] = {}
    for f in files:
        if f.compacted:
            compacted[f.path] = file_batches(f.path)
            for batch, version in compacted[f.path].items():
                holders.setdefault(batch, []).append((f, version))
        else:
            holders.setdefault(f.batch_id, []).append((f, None))
    losers: dict[Path, set[str]] = {}
    for batch, copies in holders.items():
        if len(copies) == 1:
            continue
        ranked = []
        for f, version in copies:
            if version is None:
                version = file_batches(f.path).get(batch, 0)
            # A tie is the same data twice (mid-compaction): keep the compacted copy, which stays.
            ranked.append((version, f.compacted, str(f.path), f))
        ranked.sort(key=lambda r: r[:3])
        for _, _, _, f in ranked[:-1]:
            losers.setdefault(f.path, set()).add(batch)
    out = Plan()
    for f in files:
        lost = losers.get(f.path)
        if not lost:
            out.files.append(f)
        elif f.compacted and len(lost) < len(compacted[f.path]):
            out.partial.append((f, sorted(lost)))
        # else: every batch of the file has a newer copy elsewhere: skip the file
    return out


def _scan(ds: Dataset, paths: list[Path], root: Path, columns: list[str], flt: pc.Expression | None,
          dictionary: Sequence[str]) -> pa.Table:
    fmt = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=list(dictionary)))
    schema = ds.full_schema
    if dictionary:
        schema = pa.schema([pa.field(f.name, pa.dictionary(pa.int32(), f.type)) if f.name in dictionary else f
                            for f in schema])
    data = pads.dataset([str(p) for p in paths], schema=schema, format=fmt, partitioning=_PARTITIONING,
                        partition_base_dir=str(root))
    return data.to_table(columns=columns, filter=flt, use_threads=True)


def _empty(ds: Dataset, columns: list[str], dictionary: Sequence[str]) -> pa.Table:
    fields = []
    for name in columns:
        f = ds.full_schema.field(name)
        fields.append(pa.field(name, pa.dictionary(pa.int32(), f.type)) if name in dictionary else f)
    return pa.schema(fields).empty_table()


def read_table(snapshots_dir: Path | str, name: str, *, columns: Sequence[str] | None = None,
               envs: Sequence[str] | str | None = None, since: datetime | date | None = None,
               filter: pc.Expression | None = None, dictionary: Sequence[str] = ()) -> pa.Table:
    """Rows of dataset ``name`` as a pyarrow table.

    ``envs`` and ``since`` prune partitions before any file is opened (``since`` also filters rows on
    the dataset's time column); ``filter`` is pushed into the scan; ``dictionary`` columns come back
    dictionary-encoded (cheap group keys).
    """
    ds = dataset(name)
    root = Path(snapshots_dir) / ds.name
    columns = list(columns) if columns is not None else ds.full_schema.names
    if isinstance(envs, str):
        envs = [envs]
    env_set = set(envs) if envs is not None else None
    since_day = since.date() if isinstance(since, datetime) else since
    flt = filter
    if isinstance(since, datetime):
        moment = pd.Timestamp(since)
        moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
        cond = pc.field(ds.time_column) >= pa.scalar(moment.to_pydatetime(), type=ds.schema.field(
            ds.time_column).type)
        flt = cond if flt is None else flt & cond
    if not root.is_dir():
        return _empty(ds, columns, dictionary)
    for attempt in range(OPTIMISTIC_TRIES + 1):
        last = attempt == OPTIMISTIC_TRIES
        if last:
            with layout.shared_write(root):
                return _read_once(ds, root, columns, env_set, since_day, flt, dictionary, check=False)
        before = layout.read_generation(root)
        if before % 2:
            time.sleep(0.005 * (attempt + 1))
            continue
        try:
            table = _read_once(ds, root, columns, env_set, since_day, flt, dictionary, check=True)
        except ChangedDuringRead:
            continue
        if layout.read_generation(root) == before:
            return table
    raise AssertionError("unreachable")  # pragma: no cover


def _read_once(ds: Dataset, root: Path, columns: list[str], envs: set[str] | None, since: date | None,
               flt: pc.Expression | None, dictionary: Sequence[str], *, check: bool) -> pa.Table:
    try:
        listed = layout.list_files(root, envs=envs, since=since)
        chosen = plan(listed)
        if not chosen.files and not chosen.partial:
            return _empty(ds, columns, dictionary)
        cache = filecache.for_dataset(root)
        tables = []
        if cache is not None:
            tables, chosen = _from_cache(cache, ds, root, listed, chosen, columns, flt, dictionary)
        if chosen.files:
            tables.append(_scan(ds, [f.path for f in chosen.files], root, columns, flt, dictionary))
        for f, stale in chosen.partial:
            tables.append(_scan(ds, [f.path], root, columns, _without(stale, flt), dictionary))
    except (FileNotFoundError, ChangedDuringRead) as exc:
        if not check:
            raise
        log.debug("snapshot files changed during a read of %s: %s", ds.name, exc)
        raise ChangedDuringRead(str(exc)) from exc
    except OSError as exc:
        # pyarrow reports a vanished file as a plain OSError naming it
        if check and "No such file" in str(exc):
            raise ChangedDuringRead(str(exc)) from exc
        raise
    if not tables:
        return _empty(ds, columns, dictionary)
    if len(tables) == 1:
        return tables[0]
    if dictionary:
        return pa.concat_tables(tables).unify_dictionaries()
    return pa.concat_tables(tables)


def _without(stale: list[str], flt: pc.Expression | None) -> pc.Expression:
    keep = ~pc.field("batch_id").isin(pa.array(stale, pa.string()))
    return keep if flt is None else flt & keep


def _from_cache(cache: filecache.PartitionTables, ds: Dataset, root: Path, listed: Sequence[layout.DataFile],
                chosen: Plan, columns: list[str], flt: pc.Expression | None, dictionary: Sequence[str]
                ) -> tuple[list[pa.Table], Plan]:
    """Answer from the cache's partitions (bringing them up to date first); what it cannot hold is
    left to scan."""
    whole = {f.path for f in chosen.files}
    partial = {f.path: stale for f, stale in chosen.partial}
    by_dir: dict[Path, list[layout.DataFile]] = {}
    for f in listed:
        by_dir.setdefault(f.path.parent, []).append(f)
    pieces, rest = [], Plan()
    for directory, files in by_dir.items():
        entries = []
        for f in files:
            entries.append(filecache.Listed(f.path.name, _identity_or_changed(f.path)))

        def decode(name: str, identity: tuple, directory: Path = directory) -> pa.Table:
            path = directory / name
            table = _scan(ds, [path], root, ds.full_schema.names, None, ())
            if _identity_or_changed(path) != identity:
                raise ChangedDuringRead(str(path))
            return _strings_as_dictionaries(table)

        rows = cache.rows(directory, entries, decode)
        if rows is None:
            rest.files += [f for f in files if f.path in whole]
            rest.partial += [(f, partial[f.path]) for f in files if f.path in partial]
            continue
        if all(f.path in whole for f in files):
            pieces.append(rows.table)
            continue
        keep = np.zeros(rows.table.num_rows, dtype=bool)
        for f in files:
            start, n = rows.ranges[f.path.name]
            if f.path in whole:
                keep[start:start + n] = True
            elif f.path in partial:
                stale = pc.is_in(rows.table.column("batch_id").slice(start, n), pa.array(partial[f.path], pa.string()))
                keep[start:start + n] = ~stale.to_numpy(zero_copy_only=False)
        pieces.append(rows.table.filter(pa.array(keep)))
    if not pieces:
        return [], rest
    # A scan of the in-memory table reads only the columns asked for (and those the filter needs).
    table = pads.InMemoryDataset(pa.concat_tables(pieces)).to_table(columns=columns, filter=flt)
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type) and f.name not in dictionary:
            table = table.set_column(i, f.name, table.column(i).cast(f.type.value_type))
        elif f.name in dictionary and not pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.dictionary(pa.int32(), f.type)))
    return [table], rest


def _strings_as_dictionaries(table: pa.Table) -> pa.Table:
    """Kept string columns repeat a few values per batch (ids, agent, phase, env): as dictionaries
    they take a fraction of the memory."""
    for i, f in enumerate(table.schema):
        if pa.types.is_string(f.type):
            table = table.set_column(i, f.name, pc.dictionary_encode(table.column(i)))
    return table


def _identity_or_changed(path: Path) -> tuple:
    try:
        return _identity(path)
    except FileNotFoundError as exc:
        raise ChangedDuringRead(str(path)) from exc


def read(snapshots_dir: Path | str, name: str, **kwargs) -> pd.DataFrame:
    """:func:`read_table` as a pandas DataFrame (timestamps as UTC, dictionary columns as categoricals)."""
    return read_table(snapshots_dir, name, **kwargs).to_pandas()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def dataset_summary(snapshots_dir: Path | str) -> list[dict]:
    """Per dataset: version, files (one-batch and compacted), batches, rows and bytes on disk."""
    from analytics.schemas import DATASETS

    out = []
    for ds in DATASETS.values():
        root = Path(snapshots_dir) / ds.name
        files = layout.list_files(root) if root.is_dir() else []
        batches = read_table(snapshots_dir, ds.name, columns=["batch_id"], dictionary=["batch_id"]).column(0)
        envs = sorted({f.env_name for f in files})
        out.append({
            "name": ds.name, "schema_version": ds.version, "description": ds.description,
            "files": len(files), "compacted_files": sum(f.compacted for f in files),
            "rows": len(batches), "batches": len(pc.unique(batches.cast(pa.string()))),
            "bytes": sum(_size(f.path) for f in files), "env_names": envs,
            "partitions": len({(f.env_name, f.date) for f in files}), "generation": layout.read_generation(root),
            "columns": [{"name": f.name, "type": str(f.type), "doc": ds.column_docs().get(f.name, "")}
                        for f in ds.full_schema],
        })
    return out
