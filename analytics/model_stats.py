"""Per-model statistics of evaluation episodes: the scan that computes them, and the copy kept
between requests so that a leaderboard does not recompute what has not changed.

A model's row (count, mean, std, median, IQM, min, max, and the bootstrap interval of its IQM)
depends only on the batches holding its counted episodes and on whether its experiment episodes
count (a superseded training's do not). So each env's rows are kept, beside the datasets, in
``<snapshots>/_model_statistics/<env>.parquet`` with, per model, the batches it was computed from
and, in the footer, the version of every batch of the env at the time. A read compares that with
the env's batches now (file footers, cached by file identity) and recomputes only the models in a
batch that is new, rewritten or gone, or whose superseded flag changed; compaction keeps batch
versions, so it invalidates nothing. The interval is the costly part (a bootstrap of 1,000
resamples of every episode of the model), and it is kept for the one resampling setting it was
computed with. The relays refresh the envs whose batches changed in the background
(:func:`analytics.reports.keep_model_statistics`), so a reader rarely pays even that.

The copy is only ever a cache: it is written atomically, a missing, foreign or unreadable one is
recomputed, and a folder the process may not write to is read as if there were none. Filtered
reads (by agent, by time, with superseded episodes) are not kept and always scan.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actors.rl import stats
from analytics import layout, readers

log = logging.getLogger(__name__)

CACHE_DIR = "_model_statistics"
_FORMAT = b"resimhub.model_statistics.format"
_STATE = b"resimhub.model_statistics.batches"
_CI = b"resimhub.model_statistics.ci"
_FORMAT_VERSION = b"1"
SUMMARY = ("count", "mean", "std", "median", "iqm", "min", "max")

#: Evaluation returns per (env, model), as one list each: DuckDB groups the rows inside the scan,
#: so the returns arrive contiguous per group and no string column of millions of rows leaves it.
_RETURNS_BY_MODEL = """
SELECT env_name, model_id, list("return") AS returns{batches} FROM rows
WHERE {where} GROUP BY env_name, model_id ORDER BY env_name, model_id
"""


@dataclass
class Returns:
    """Each (env, model) group's evaluation returns, sorted, as slices of one flat array."""

    env_name: list[str]
    model_id: list[str]
    batches: list[list[str]]
    offsets: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.model_id)

    def of(self, g: int) -> np.ndarray:
        return self.values[self.offsets[g]: self.offsets[g + 1]]

    def summary(self) -> dict[str, np.ndarray]:
        """count, mean, population std, median, IQM, min and max per group: on sorted contiguous
        groups each order statistic is one index away, so nothing is sorted again."""
        counts = np.diff(self.offsets)
        n = len(self)
        out = {name: np.full(n, np.nan) for name in SUMMARY if name != "count"}
        out["count"] = counts
        if not n:
            return out
        starts = self.offsets[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            totals = np.add.reduceat(self.values, starts) if self.values.size else np.zeros(n)
            out["mean"] = totals / counts
            # Two passes (deviations from each group's mean), in place: one temporary of the values.
            dev = np.repeat(out["mean"], counts)
            np.subtract(self.values, dev, out=dev)
            np.multiply(dev, dev, out=dev)
            out["std"] = np.sqrt(np.add.reduceat(dev, starts) / counts) if dev.size else np.full(n, np.nan)
            out["median"] = 0.5 * (self.values[starts + (counts - 1) // 2] + self.values[starts + counts // 2])
            out["min"], out["max"] = self.values[starts], self.values[starts + counts - 1]
            k = counts // 4
            # Sums of each kept middle, one reduceat over (first kept, first trimmed top) pairs; a
            # last group with nothing trimmed ends at the array's end, where reduceat takes no index.
            bounds = np.column_stack([starts + k, starts + counts - k]).ravel()
            if bounds[-1] == self.values.size:
                bounds = bounds[:-1]
            kept = np.add.reduceat(self.values, bounds)[::2]
            out["iqm"] = kept / (counts - 2 * k)
        return out


def scan(snapshots_dir: Path | str, *, where: str, params: dict, envs: Sequence[str] | None,
         since: datetime | None = None, batches: bool = False, within: set[str] | None = None) -> Returns:
    """One partition-pruned DuckDB scan of the evaluation returns matching ``where``, grouped per
    (env, model) inside DuckDB, each group's values then sorted (DuckDB's threads fill a list in no
    fixed order; sorted values make every sum, so every answer, the same on every request); with
    ``batches``, also the batches each group's rows came from; with ``within``, only the files
    holding those batches are read."""
    sql = _RETURNS_BY_MODEL.format(where=where, batches=", list(DISTINCT batch_id) AS batches" if batches else "")
    groups = readers.query(snapshots_dir, "episodes", sql, params=params, envs=envs, since=since, batches=within)
    if groups.num_rows == 0:
        return Returns([], [], [], np.zeros(1, dtype=np.int64), np.zeros(0))
    returns = groups.column("returns").combine_chunks()
    offsets = returns.offsets.to_numpy().astype(np.int64)
    values = returns.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]].astype(np.float64)
    offsets = offsets - offsets[0]
    for start, end in zip(offsets[:-1], offsets[1:], strict=True):
        values[start:end].sort()
    found = [sorted(b) for b in groups.column("batches").to_pylist()] if batches else [[]] * groups.num_rows
    return Returns(groups.column("env_name").to_pylist(), groups.column("model_id").to_pylist(), found,
                   offsets, values)


def superseded_sql(superseded: set[str], params: dict) -> str:
    """The SQL condition that leaves out a superseded training's evaluation episodes."""
    if not superseded:
        return "true"
    params["superseded"] = sorted(superseded)
    return "NOT (source = 'experiment' AND list_contains($superseded, model_id))"


# -- the copy kept between requests ------------------------------------------------------------------

@dataclass
class Row:
    model_id: str
    superseded: bool
    batches: list[str]
    summary: dict[str, float]
    ci95: tuple[float, float] | None = None


@dataclass
class Board:
    """One env's per-model rows, what they were computed from, and the returns of the rows computed
    by this read (so that intervals need no second scan)."""

    env_name: str
    state: dict[str, int]
    ci_key: tuple[int, int] | None
    rows: dict[str, Row]
    fresh: dict[str, np.ndarray] = field(default_factory=dict)
    changed: bool = False


def _path(snapshots_dir: Path | str, env: str) -> Path:
    return Path(snapshots_dir) / CACHE_DIR / (layout.encode_env(env) + layout.SUFFIX)


def _load(path: Path, env: str) -> Board | None:
    try:
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        if meta.get(_FORMAT) != _FORMAT_VERSION:
            return None
        state = {str(k): int(v) for k, v in json.loads(meta[_STATE]).items()}
        raw_ci = json.loads(meta[_CI])
        columns = table.to_pydict()
    except FileNotFoundError:
        return None
    except (OSError, KeyError, ValueError, TypeError, pa.ArrowException) as exc:
        log.warning("model statistics cache %s ignored: %s", path, exc)
        return None
    rows = {}
    for i, model in enumerate(columns["model_id"]):
        low, high = columns["ci_low"][i], columns["ci_high"][i]
        rows[model] = Row(model, bool(columns["superseded"][i]), list(columns["batches"][i]),
                          {name: columns[name][i] for name in SUMMARY},
                          None if low is None or high is None else (float(low), float(high)))
    return Board(env, state, tuple(raw_ci) if raw_ci else None, rows)


def _save(snapshots_dir: Path | str, board: Board) -> None:
    path = _path(snapshots_dir, board.env_name)
    rows = [board.rows[m] for m in sorted(board.rows)]
    table = pa.table({
        "model_id": pa.array([r.model_id for r in rows], pa.string()),
        "superseded": pa.array([r.superseded for r in rows], pa.bool_()),
        "batches": pa.array([r.batches for r in rows], pa.list_(pa.string())),
        **{name: pa.array([r.summary[name] for r in rows], pa.int64() if name == "count" else pa.float64())
           for name in SUMMARY},
        "ci_low": pa.array([r.ci95[0] if r.ci95 else None for r in rows], pa.float64()),
        "ci_high": pa.array([r.ci95[1] if r.ci95 else None for r in rows], pa.float64()),
    }).replace_schema_metadata({_FORMAT: _FORMAT_VERSION, _STATE: json.dumps(board.state).encode(),
                                _CI: json.dumps(list(board.ci_key) if board.ci_key else None).encode()})
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        temp = layout.temp_path(path.parent)
        try:
            pq.write_table(table, temp)
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    except OSError as exc:  # a read-only snapshot folder: the statistics are computed on every read
        log.warning("model statistics cache %s not written: %s", path, exc)


def _models_in(snapshots_dir: Path | str, env: str, batches: Iterable[str]) -> set[str]:
    wanted = sorted(batches)
    if not wanted:
        return set()
    found = readers.query(snapshots_dir, "episodes",
                          "SELECT DISTINCT model_id FROM rows WHERE list_contains($batches, batch_id)",
                          params={"batches": wanted}, envs=[env], batches=set(wanted))
    return {m for m in found.column("model_id").to_pylist() if m is not None}


def board(snapshots_dir: Path | str, env: str, superseded: set[str]) -> Board:
    """``env``'s per-model rows, recomputing only the models whose inputs changed since they were kept."""
    state = readers.batch_state(snapshots_dir, "episodes", env)
    kept = _load(_path(snapshots_dir, env), env)
    if kept is None:
        kept = Board(env, {}, None, {}, changed=True)
        stale: set[str] | None = None  # everything
    else:
        moved = {b for b, v in state.items() if kept.state.get(b) != v} | (kept.state.keys() - state.keys())
        stale = {m for m, row in kept.rows.items()
                 if row.superseded != (m in superseded) or not moved.isdisjoint(row.batches)}
        stale |= _models_in(snapshots_dir, env, (b for b in moved if b in state))
    if stale is None or stale:
        params: dict = {}
        where = "phase = 'eval' AND model_id IS NOT NULL AND " + superseded_sql(superseded, params)
        within = None
        if stale is not None:
            where += " AND list_contains($stale, model_id)"
            params["stale"] = sorted(stale)
            # A stale model's rows are in the batches it was computed from or in a batch that moved.
            within = {b for b in moved if b in state}
            for model in stale:
                row = kept.rows.pop(model, None)
                if row is not None:
                    within.update(row.batches)
        else:
            kept.rows.clear()
        fresh = scan(snapshots_dir, where=where, params=params, envs=[env], batches=True, within=within)
        summary = fresh.summary()
        for g, model in enumerate(fresh.model_id):
            kept.rows[model] = Row(model, model in superseded, fresh.batches[g],
                                   {name: summary[name][g].item() for name in SUMMARY})
            kept.fresh[model] = fresh.of(g)
        kept.changed = True
    kept.state = state
    return kept


def intervals(snapshots_dir: Path | str, kept: Board, models: Sequence[str], *, resamples: int, seed: int,
              superseded: set[str]) -> dict[str, tuple[float, float]]:
    """The bootstrap interval of each model's IQM, computed only where the kept one is missing or was
    computed with another resampling setting; the board keeps the new ones."""
    key = (resamples, seed)
    if kept.ci_key != key:
        for row in kept.rows.values():
            row.ci95 = None
        kept.ci_key, kept.changed = key, True
    missing = [m for m in models if kept.rows[m].ci95 is None]
    unread = [m for m in missing if m not in kept.fresh]
    if unread:
        params: dict = {"wanted": sorted(unread)}
        where = f"phase = 'eval' AND list_contains($wanted, model_id) AND {superseded_sql(superseded, params)}"
        within = {b for m in unread for b in kept.rows[m].batches}
        extra = scan(snapshots_dir, where=where, params=params, envs=[kept.env_name], within=within)
        kept.fresh.update({m: extra.of(g) for g, m in enumerate(extra.model_id)})
    for model in missing:
        kept.rows[model].ci95 = stats.iqm_ci(kept.fresh[model], n_resamples=resamples, seed=seed)
        kept.changed = True
    return {m: kept.rows[m].ci95 for m in models}


def is_current(snapshots_dir: Path | str, env: str) -> bool:
    """Whether ``env``'s kept rows were computed from the env's batches as they are now (a footer
    read and a listing; no rows). A superseded flag changes only with a new batch of the retrain."""
    try:
        meta = pq.read_schema(_path(snapshots_dir, env)).metadata or {}
        if meta.get(_FORMAT) != _FORMAT_VERSION:
            return False
        kept = {str(k): int(v) for k, v in json.loads(meta[_STATE]).items()}
    except (OSError, KeyError, ValueError, TypeError, pa.ArrowException):
        return False
    return kept == readers.batch_state(snapshots_dir, "episodes", env)


def save(snapshots_dir: Path | str, kept: Board) -> None:
    if kept.changed:
        _save(snapshots_dir, kept)
