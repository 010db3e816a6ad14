"""Consistent reads of a snapshot dataset with DuckDB: only the partitions and columns asked for,
each batch once.

A read, under the dataset's read lock (:func:`analytics.layout.reading`, so no compaction or
rewrite swaps files under it):

1. lists the data files of the wanted partitions (env and date pruned by directory name; hidden
   temporary files are never data names), refusing a folder laid out otherwise;
2. decides which copy of each batch is current (the highest ``batch_version``; see
   :mod:`analytics.schemas`) from file names and the footers of compacted files, cached by file
   identity — a handful of footers, not the rows;
3. hands DuckDB exactly that file list as the relation ``rows``, with the stale batches of a
   compacted file filtered out inside the scan, and runs the caller's SQL on it.

The file list is the one the plan was made from: a glob evaluated later could take in a batch's
newer copy written meanwhile and count it twice. Files written before this project's current schema
(columns added since) are read with ``union_by_name``, missing columns as null. What DuckDB cannot
read as this dataset (not Parquet, other columns) is :class:`SnapshotUnreadable`, never an empty
answer.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analytics import engine, layout
from analytics.errors import SnapshotUnreadable
from analytics.schemas import TIMESTAMP, Dataset, dataset
from analytics.snapshots import FOOTER_BATCHES

#: Footers of files already read, keyed by identity (path, inode, size, mtime): a compacted file is
#: immutable under its name, so its batch list can be reused by every later read.
_footer_cache: OrderedDict[tuple, dict[str, int]] = OrderedDict()
_footer_lock = threading.Lock()
_FOOTER_CACHE_SIZE = 4096
_HIVE = "hive_partitioning = true, hive_types = {'env_name': 'VARCHAR', 'date': 'VARCHAR'}, filename = '_file'"


def file_batches(path: Path) -> dict[str, int]:
    """``{batch_id: batch_version}`` of a file. Files without the footer key (schema version 1) hold
    one batch named after the file, versioned by modification time."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _footer_lock:
        hit = _footer_cache.get(key)
        if hit is not None:
            _footer_cache.move_to_end(key)
            return hit
    try:
        meta = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as exc:
        raise SnapshotUnreadable(f"{path} is not a readable Parquet file: {exc}", path=str(path)) from None
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
            # A tie is the same data twice (a compaction's inputs restored by hand): keep the compacted copy.
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


def folder_state(snapshots_dir: Path | str) -> tuple:
    """The identity (path, inode, size, mtime) of every data file of every dataset: any write,
    rewrite or compaction changes it, so an answer computed from the folder can be kept under it."""
    from analytics.schemas import DATASETS

    out = []
    for ds in DATASETS.values():
        root = Path(snapshots_dir) / ds.name
        if not root.is_dir():
            continue
        for f in layout.list_files(root):
            try:
                st = f.path.stat()
            except FileNotFoundError:  # swapped out meanwhile: the next state says what replaced it
                continue
            out.append((str(f.path), st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def batch_state(snapshots_dir: Path | str, name: str, env: str) -> dict[str, int]:
    """``{batch_id: batch_version}`` of the current copy of every batch of ``env``'s partitions of
    dataset ``name``: what a result computed from them depends on (compaction keeps it)."""
    root = Path(snapshots_dir) / dataset(name).name
    state: dict[str, int] = {}
    if not root.is_dir():
        return state
    with layout.reading(root):
        for f in layout.list_files(root, envs={env}):
            for batch, version in file_batches(f.path).items():
                if version > state.get(batch, -1):
                    state[batch] = version
    return state


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _source(ds: Dataset, chosen: Plan, *, union: bool) -> tuple[str, dict[str, Any]]:
    """The SQL of the relation ``rows`` over the chosen files, and its parameters."""
    params: dict[str, Any] = {"_files": [str(p) for p in chosen.paths]}
    names = [_quote(n) for n in ds.full_schema.names]
    if union:  # files older than a column: it reads as null; version-1 files name their batch
        names[ds.full_schema.names.index("batch_id")] = \
            "coalesce(batch_id, regexp_extract(_file, '([^/]*)\\.parquet$', 1)) AS batch_id"
    where = []
    if chosen.partial:
        params["_stale"] = [f"{f.path}\n{b}" for f, stale in chosen.partial for b in stale]
        where.append("NOT list_contains($_stale, _file || chr(10) || batch_id)")
    sql = (f"SELECT {', '.join(names)} FROM read_parquet($_files, {_HIVE}{', union_by_name = true' if union else ''})"
           + (f" WHERE {' AND '.join(where)}" if where else ""))
    return sql, params


def _empty_source(ds: Dataset) -> str:
    casts = ", ".join(f"CAST(NULL AS {_duck_type(f.type)}) AS {_quote(f.name)}" for f in ds.full_schema)
    return f"SELECT {casts} WHERE false"


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_string(t):
        return "VARCHAR"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"
    if pa.types.is_list(t):
        return _duck_type(t.value_type) + "[]"
    raise TypeError(t)  # pragma: no cover - schemas.py holds only the types above


def query(snapshots_dir: Path | str, name: str, sql: str, *, params: Mapping[str, Any] | None = None,
          envs: Sequence[str] | str | None = None, since: datetime | date | None = None,
          batches: set[str] | None = None) -> pa.Table:
    """Run ``sql`` on the relation ``rows``: the current rows of dataset ``name``.

    ``envs`` and ``since`` prune partitions before any file is opened; ``since`` (a time) also
    filters ``rows`` on the dataset's time column. ``batches`` keeps only the files holding one
    of those batches (a compacted file holding others too is read whole: filter on ``batch_id``
    if that matters), so a question about a few new batches opens a few files, not the folder.
    ``params`` are DuckDB's named parameters (``$name``; names starting with ``_`` are the reader's own).
    """
    ds = dataset(name)
    root = Path(snapshots_dir) / ds.name
    if isinstance(envs, str):
        envs = [envs]
    env_set = set(envs) if envs is not None else None
    since_day = since.date() if isinstance(since, datetime) else since
    given = dict(params or {})
    time_filter = ""
    if isinstance(since, datetime):
        moment = pd.Timestamp(since)
        given["_since"] = (moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
                           ).to_pydatetime()
        time_filter = f" WHERE {_quote(ds.time_column)} >= $_since"
    empty = _with_rows(f"SELECT * FROM ({_empty_source(ds)}){time_filter}", sql)
    if not root.is_dir():
        return _run(root, empty, given)
    with layout.reading(root):
        files = layout.list_files(root, envs=env_set, since=since_day)
        if batches is not None:
            files = [f for f in files if (not batches.isdisjoint(file_batches(f.path)) if f.compacted
                                          else f.batch_id in batches)]
        chosen = plan(files)
        if not chosen.paths:
            return _run(root, empty, given)
        for union in (False, True):
            source, own = _source(ds, chosen, union=union)
            full = _with_rows(f"SELECT * FROM ({source}){time_filter}", sql)
            try:
                return _run(root, full, {**given, **own}, retry_union=not union)
            except _SchemasDiffer:
                continue
    raise AssertionError("unreachable")  # pragma: no cover


def _with_rows(rows: str, sql: str) -> str:
    """``sql`` with ``rows`` defined before its own common table expressions, if it has any."""
    head = sql.lstrip()
    if head[:5].upper() == "WITH ":
        return f"WITH rows AS NOT MATERIALIZED ({rows}), {head[5:]}"
    return f"WITH rows AS NOT MATERIALIZED ({rows}) {sql}"


class _SchemasDiffer(Exception):
    pass


def _run(root: Path, sql: str, params: dict[str, Any], *, retry_union: bool = False) -> pa.Table:
    cur = engine.cursor()
    try:
        table = cur.sql(sql, params=params).to_arrow_table() if params else cur.sql(sql).to_arrow_table()
    except (duckdb.BinderException, duckdb.InvalidInputException, duckdb.IOException,
            duckdb.ConversionException) as exc:
        if retry_union and ("union_by_name" in str(exc) or isinstance(exc, duckdb.BinderException)):
            raise _SchemasDiffer from None
        raise SnapshotUnreadable(f"the snapshot files under {root} are not ReSimHub's {root.name} dataset: "
                                 f"{str(exc).splitlines()[0]}", path=str(root)) from None
    finally:
        cur.close()
    return _utc(table)


def _utc(table: pa.Table) -> pa.Table:
    """DuckDB names UTC ``Etc/UTC``; the schemas say ``UTC``."""
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz is not None:
            table = table.set_column(i, f.name, table.column(i).cast(TIMESTAMP if f.type.unit == "us" else
                                                                      pa.timestamp(f.type.unit, tz="UTC")))
    return table


def read_table(snapshots_dir: Path | str, name: str, *, columns: Sequence[str] | None = None,
               envs: Sequence[str] | str | None = None, since: datetime | date | None = None,
               where: str | None = None, params: Mapping[str, Any] | None = None) -> pa.Table:
    """Rows of dataset ``name`` as a pyarrow table: ``columns`` (all by default) of the rows
    matching the SQL condition ``where``."""
    ds = dataset(name)
    columns = list(columns) if columns is not None else ds.full_schema.names
    sql = f"SELECT {', '.join(_quote(c) for c in columns)} FROM rows" + (f" WHERE {where}" if where else "")
    return query(snapshots_dir, name, sql, params=params, envs=envs, since=since)


def read(snapshots_dir: Path | str, name: str, **kwargs) -> pd.DataFrame:
    """:func:`read_table` as a pandas DataFrame (timestamps as UTC)."""
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
        counts = query(snapshots_dir, ds.name, "SELECT count(*) AS n, count(DISTINCT batch_id) AS b FROM rows")
        envs = sorted({f.env_name for f in files})
        out.append({
            "name": ds.name, "schema_version": ds.version, "description": ds.description,
            "files": len(files), "compacted_files": sum(f.compacted for f in files),
            "rows": int(counts.column("n")[0].as_py()), "batches": int(counts.column("b")[0].as_py()),
            "bytes": sum(_size(f.path) for f in files), "env_names": envs,
            "partitions": len({(f.env_name, f.date) for f in files}),
            "columns": [{"name": f.name, "type": str(f.type), "doc": ds.column_docs().get(f.name, "")}
                        for f in ds.full_schema],
        })
    return out
