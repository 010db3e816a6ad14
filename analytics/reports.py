"""The analyses behind the analytics API and the report job, computed from the snapshot folder alone.

Every function takes the snapshot directory and answers JSON-safe values (built-in numbers, ``None``
for undefined statistics, RFC 3339 UTC times), reading only the datasets, partitions and columns
it needs. The scans, filters and the grouping of the big table (episodes) run in DuckDB
(:mod:`analytics.readers`); the statistics are :mod:`actors.rl.stats`' on what the scans return.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actors.rl import stats
from analytics import layout, model_stats, readers
from analytics.errors import NotEnoughData

#: Gymnasium's convention for "solved": the mean over 100 consecutive episodes reaches the threshold.
CONVERGENCE_WINDOW = 100
CURVE_BINS = stats.CURVE_BINS
CI_RESAMPLES = 1000
#: Entries per board when the reader does not say (the API's default too).
LEADERBOARD_LIMIT = 20
RANKING = "iqm descending; ties broken by mean - std (score), descending"
AGENT_UNIT = "training run (one seed): the mean return of its final evaluation"
MODEL_UNIT = "evaluation episode of the model"
_STATE_ORDER = {"created": 0, "queued": 1, "training": 2, "evaluating": 3, "completed": 4, "failed": 4,
                "cancelled": 4}


# -- JSON-safe values ---------------------------------------------------------------------------------

def num(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def integer(value: Any) -> int | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


def text(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def rfc3339(value: Any) -> str | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _interval(low: Any, high: Any) -> list[float | None] | None:
    low, high = num(low), num(high)
    return None if low is None and high is None else [low, high]


def _envs(env: str | Sequence[str] | None) -> list[str] | None:
    if env is None:
        return None
    return [env] if isinstance(env, str) else list(env)


# -- experiments ----------------------------------------------------------------------------------

_STATE_COLUMNS = ["experiment_id", "name", "agent", "status", "task_id", "seeds", "training_episodes", "timesteps",
                  "mean_return", "iqm", "ci_low", "ci_high", "statistics_over", "best_return", "training_duration_s",
                  "training_duration_total_s", "reward_threshold", "max_episode_steps", "solved", "created_at",
                  "recorded_at", "env_name"]


def experiment_states(snapshots_dir: Path | str, *, env: str | Sequence[str] | None = None, agent: str | None = None,
                      since: datetime | None = None, experiment_id: int | None = None) -> pd.DataFrame:
    """The latest state of every experiment (one row each), newest first."""
    where, params = [], {}
    if experiment_id is not None:
        where.append("experiment_id = $experiment_id")
        params["experiment_id"] = experiment_id
    if agent is not None:
        where.append("agent = $agent")
        params["agent"] = agent
    rows = readers.read(snapshots_dir, "experiments", columns=_STATE_COLUMNS, envs=_envs(env), since=since,
                        where=" AND ".join(where) or None, params=params)
    if rows.empty:
        return rows
    rows["_order"] = rows["status"].map(_STATE_ORDER).fillna(5)
    rows = rows.sort_values(["experiment_id", "recorded_at", "_order"], kind="stable")
    latest = rows.groupby("experiment_id", sort=False).tail(1)
    return latest.drop(columns="_order").sort_values(["recorded_at", "experiment_id"], ascending=False)


def experiment_summary(row: pd.Series) -> dict:
    return {
        "id": int(row["experiment_id"]), "name": text(row["name"]), "env_name": text(row["env_name"]),
        "agent": text(row["agent"]), "status": text(row["status"]), "avg_reward": num(row["mean_return"]),
        "iqm": num(row["iqm"]), "ci95": _interval(row["ci_low"], row["ci_high"]),
        "statistics_over": text(row["statistics_over"]), "best_return": num(row["best_return"]),
        "episodes": integer(row["training_episodes"]), "timesteps": integer(row["timesteps"]),
        "seeds": [int(s) for s in row["seeds"]] if row["seeds"] is not None else [],
        "duration": num(row["training_duration_s"]), "reward_threshold": num(row["reward_threshold"]),
        "solved": None if pd.isna(row["solved"]) else bool(row["solved"]),
        "created_at": rfc3339(row["created_at"]), "updated_at": rfc3339(row["recorded_at"]),
    }


def recent(snapshots_dir: Path | str, *, env: str | None = None, agent: str | None = None,
           since: datetime | None = None, limit: int = 20) -> dict:
    """Experiments by their latest state, newest first, and a summary over all that match.

    ``avg_reward`` is an experiment's mean final evaluation return over its seeds (null until it is
    completed); ``duration`` its training wall time in seconds (the slowest seed).
    """
    states = experiment_states(snapshots_dir, env=env, agent=agent, since=since)
    if states.empty:
        return {"summary": {"total_experiments": 0, "avg_reward": None, "avg_duration": None}, "experiments": []}
    summary = {"total_experiments": int(len(states)), "avg_reward": num(states["mean_return"].mean()),
               "avg_duration": num(states["training_duration_s"].mean())}
    return {"summary": summary, "experiments": [experiment_summary(r) for _, r in states.head(limit).iterrows()]}


def learning_curve(episodes: pd.DataFrame, bins: int = CURVE_BINS) -> list[dict]:
    """Training returns by environment step (by episode for snapshots written without lengths):
    :func:`actors.rl.stats.learning_curve`, the curve an experiment's results hold too."""
    if episodes.empty:
        return []
    x = episodes["step"] if episodes["step"].notna().all() else episodes["episode"] + 1
    frame = pd.DataFrame({"x": x.to_numpy(dtype=float), "seed": episodes["seed"].to_numpy(),
                          "episode": episodes["episode"].to_numpy(),
                          "return": episodes["return"].to_numpy(dtype=float)})
    curves = {int(s): (g["x"].to_numpy(), g["return"].to_numpy())
              for s, g in frame.sort_values("episode", kind="stable").groupby("seed")}
    return stats.learning_curve(curves, bins=bins, seed=0)


def convergence(episodes: pd.DataFrame, threshold: float | None, window: int = CONVERGENCE_WINDOW) -> dict:
    """Per seed, the first step at which the mean of the last ``window`` training returns (fewer for
    a shorter run) reaches the threshold; the experiment has converged at the step by which every
    seed has (null if some seed never did, or the env has no threshold)."""
    if threshold is None or episodes.empty:
        return {"convergence_step": None, "convergence_steps": {}}
    steps: dict[str, int | None] = {}
    for seed, group in episodes.sort_values("episode").groupby("seed"):
        returns = group["return"].to_numpy(dtype=float)
        w = max(1, min(window, returns.size))
        moving = np.convolve(returns, np.ones(w) / w, mode="valid")  # moving[i] ends at episode i + w - 1
        hit = np.flatnonzero(moving >= threshold)
        x = group["step"] if group["step"].notna().all() else group["episode"] + 1
        steps[str(int(seed))] = int(x.to_numpy()[hit[0] + w - 1]) if hit.size else None
    values = list(steps.values())
    overall = max(values) if values and all(v is not None for v in values) else None
    return {"convergence_step": overall, "convergence_steps": steps}


def experiment(snapshots_dir: Path | str, experiment_id: int, *, bins: int = CURVE_BINS,
               window: int = CONVERGENCE_WINDOW) -> dict | None:
    """One experiment, from its latest training task's episodes; None if the snapshots do not know it."""
    history = readers.read(snapshots_dir, "experiments", where="experiment_id = $id", params={"id": experiment_id})
    if history.empty:
        return None
    history["_order"] = history["status"].map(_STATE_ORDER).fillna(5)
    history = history.sort_values(["recorded_at", "_order"], kind="stable")
    latest = history.iloc[-1]
    env = str(latest["env_name"])
    task_ids = history["task_id"].dropna()
    task_id = str(task_ids.iloc[-1]) if not task_ids.empty else None
    body = experiment_summary(latest)
    body.update({"experiment_id": int(experiment_id), "task_id": task_id, "episodes": 0, "average_return": None,
                 "final_return": num(latest["mean_return"]), "final_training_return": None,
                 "learning_curve": [], "convergence_step": None, "convergence_steps": {},
                 "convergence_window": window, "duration_total": num(latest["training_duration_total_s"]),
                 "evaluations": [],
                 "history": [{"status": text(r.status), "task_id": text(r.task_id), "at": rfc3339(r.recorded_at)}
                             for r in history.itertuples()]})
    if task_id is None:
        return body
    scope = "experiment_id = $id AND task_id = $task"
    ids = {"id": experiment_id, "task": task_id}
    episodes = readers.read(snapshots_dir, "episodes", envs=[env], columns=["seed", "episode", "step", "return"],
                            where=f"{scope} AND phase = 'train'", params=ids)
    if not episodes.empty:
        finals = episodes.sort_values("episode").groupby("seed")["return"].apply(
            lambda r: r.iloc[-max(1, min(window, len(r))):].mean())
        body.update({"episodes": int(len(episodes)), "average_return": num(episodes["return"].mean()),
                     "final_training_return": num(finals.mean()),
                     "learning_curve": learning_curve(episodes, bins)})
        body.update(convergence(episodes, num(latest["reward_threshold"]), window))
    evaluations = readers.read(snapshots_dir, "evaluations", envs=[env], where=scope, params=ids,
                               columns=["evaluation_id", "run_id", "run_seed", "model_id", "episodes", "seed", "mean",
                                        "std", "median", "iqm", "ci_low", "ci_high", "evaluated_at"])
    body["evaluations"] = [{
        "evaluation_id": text(r.evaluation_id), "run_id": integer(r.run_id), "run_seed": integer(r.run_seed),
        "model_id": text(r.model_id), "episodes": integer(r.episodes), "seed": integer(r.seed), "mean": num(r.mean),
        "std": num(r.std), "median": num(r.median), "iqm": num(r.iqm), "ci95": _interval(r.ci_low, r.ci_high),
        "evaluated_at": rfc3339(r.evaluated_at)} for r in evaluations.sort_values("run_id").itertuples()]
    return body


# -- leaderboards -------------------------------------------------------------------------------------

def latest_training_mask(frame: pd.DataFrame) -> np.ndarray:
    """Which rows of ``frame`` (``experiment_id``, ``task_id``, ``evaluated_at``, optionally ``source``)
    count: benchmark rows and, of an experiment's rows, those of its latest training task (the one
    evaluated last). A retrain supersedes the experiment's earlier tasks (storage/supersession.py);
    the snapshots are append-only, so their rows stay and are left out here. Rows without an
    experiment or a task always count."""
    keep = np.ones(len(frame), dtype=bool)
    if frame.empty:
        return keep
    scoped = frame["experiment_id"].notna() & frame["task_id"].notna()
    if "source" in frame:
        scoped &= frame["source"] == "experiment"
    if not scoped.any():
        return keep
    sub = frame.loc[scoped, ["experiment_id", "task_id", "evaluated_at"]].astype(
        {"experiment_id": "int64", "task_id": "string"})
    last = (sub.groupby(["experiment_id", "task_id"], observed=True)["evaluated_at"].max().reset_index()
            .sort_values(["evaluated_at", "task_id"]).drop_duplicates("experiment_id", keep="last"))
    current = dict(zip(last["experiment_id"], last["task_id"], strict=True))
    keep[np.flatnonzero(scoped.to_numpy())] = (sub["experiment_id"].map(current) == sub["task_id"]).to_numpy(
        dtype=bool, na_value=False)
    return keep


#: What the leaderboards need of the evaluations dataset, read once per env and shared.
_EVALUATION_COLUMNS = ["source", "agent", "experiment_id", "task_id", "run_id", "model_id", "model_name", "mean",
                       "episodes", "evaluated_at"]


def _evaluations(snapshots_dir: Path | str, env: str) -> pd.DataFrame:
    return readers.read(snapshots_dir, "evaluations", envs=[env], columns=_EVALUATION_COLUMNS)


def _superseded_in(evaluations: pd.DataFrame) -> set[str]:
    mine = evaluations[evaluations["source"] == "experiment"]
    if mine.empty:
        return set()
    keep = latest_training_mask(mine[["experiment_id", "task_id", "evaluated_at"]])
    return {str(m) for m in mine.loc[~keep, "model_id"].dropna()}


def superseded_models(snapshots_dir: Path | str, env: str) -> set[str]:
    """The models of the trainings of ``env``'s experiments that a later training superseded."""
    return _superseded_in(_evaluations(snapshots_dir, env))


def _rank(entries: list[dict]) -> list[dict]:
    def key(e: dict) -> tuple:
        iqm_, score = e["iqm"], e["score"]
        return (-(iqm_ if iqm_ is not None else -math.inf), -(score if score is not None else -math.inf))

    entries.sort(key=key)
    return [{"rank": i, **entry} for i, entry in enumerate(entries, start=1)]


def _summaries(labels: pd.Series, values: np.ndarray) -> tuple[list[str], dict[str, np.ndarray]]:
    cat = labels.astype("category") if not isinstance(labels.dtype, pd.CategoricalDtype) else labels
    names = [str(c) for c in cat.cat.categories]
    return names, stats.grouped_summary(cat.cat.codes.to_numpy(), values, len(names))


def _entry(summary: dict[str, np.ndarray], g: int) -> dict:
    mean, std = num(summary["mean"][g]), num(summary["std"][g])
    return {"iqm": num(summary["iqm"][g]), "ci95": None, "mean": mean, "std": std,
            "median": num(summary["median"][g]), "min": num(summary["min"][g]), "max": num(summary["max"][g]),
            "score": None if mean is None or std is None else mean - std}


def agent_leaderboard(snapshots_dir: Path | str, env: str, *, agent: str | None = None,
                      since: datetime | None = None, ci_resamples: int = CI_RESAMPLES, seed: int = 0,
                      evaluations: pd.DataFrame | None = None) -> list[dict]:
    """Agents on one env, over training runs: IQM across runs with a bootstrap CI across runs.
    ``evaluations`` is the env's evaluations dataset when the caller has read it already."""
    frame = _evaluations(snapshots_dir, env) if evaluations is None else evaluations
    every = frame[frame["source"] == "experiment"]
    runs = every if agent is None else every[every["agent"] == agent]
    if since is not None:
        runs = runs[runs["evaluated_at"] >= pd.Timestamp(since)]
    runs = runs.dropna(subset=["agent", "mean"])
    if runs.empty:
        return []
    if since is None:
        runs = runs[latest_training_mask(runs)]
    else:  # an experiment's latest training is judged over all its rows, not only those since
        stale = set(every.loc[~latest_training_mask(every), "run_id"].dropna())
        runs = runs[~runs["run_id"].isin(stale).to_numpy()]
    runs = runs.sort_values("evaluated_at").drop_duplicates("run_id", keep="last")
    names, summary = _summaries(runs["agent"], runs["mean"].to_numpy(dtype=float))
    codes = runs["agent"].astype("category").cat.codes.to_numpy()
    values = runs["mean"].to_numpy(dtype=float)
    out = []
    for g, name in enumerate(names):
        if summary["count"][g] == 0:
            continue
        mine = values[codes == g]
        entry = {"agent": name, "runs": int(summary["count"][g]), **_entry(summary, g),
                 "experiments": int(runs.loc[codes == g, "experiment_id"].nunique()),
                 "evaluation_episodes": int(runs.loc[codes == g, "episodes"].sum())}
        if ci_resamples:
            entry["ci95"] = list(stats.bootstrap_ci(mine, stats.iqm, n_resamples=ci_resamples, seed=seed))
        out.append(entry)
    return _rank(out)


def _current(snapshots_dir: Path | str, env: str, runs: pd.DataFrame, since: datetime | None) -> np.ndarray:
    """:func:`latest_training_mask` of experiment ``runs``; with ``since``, an experiment's latest
    training is judged over all its rows, not only over those read."""
    if since is None:
        return latest_training_mask(runs)
    every = readers.read(snapshots_dir, "evaluations", envs=[env], where="source = 'experiment'",
                         columns=["experiment_id", "task_id", "run_id", "evaluated_at"])
    stale = set(every.loc[~latest_training_mask(every), "run_id"].dropna())
    return ~runs["run_id"].isin(stale).to_numpy()


_SUMMARY_COLUMNS = ["env_name", "model_id", "count", "mean", "std", "median", "iqm", "min", "max"]


def model_statistics(snapshots_dir: Path | str, *, env: str | Sequence[str] | None = None,
                     agent: str | None = None, since: datetime | None = None,
                     include_superseded: bool = False) -> pd.DataFrame:
    """Per (env, model): count, mean, std, median, IQM, min and max of evaluation episode returns,
    by env then model id.

    The episodes a superseded training (an experiment retrained since) evaluated are left out unless
    ``include_superseded``; a superseded model's benchmark runs still count.

    One partition-pruned DuckDB scan of four columns, filtered and grouped there, answering each
    group's returns as one list (:func:`analytics.model_stats.scan`); the order statistics are
    index arithmetic on the sorted lists (DuckDB's exact IQM needs a sort of every group inside SQL,
    which is slower: tests/benchmarks/bench_analytics.py).
    """
    envs = _envs(env)
    params: dict = {}
    where = "phase = 'eval' AND model_id IS NOT NULL"
    if agent is not None:
        where += " AND agent = $agent"
        params["agent"] = agent
    if not include_superseded:
        scope = envs if envs is not None else sorted({e for e, _, _ in _partitions(snapshots_dir, "evaluations")})
        where += " AND " + model_stats.superseded_sql(_superseded(snapshots_dir, scope), params)
    found = model_stats.scan(snapshots_dir, where=where, params=params, envs=envs, since=since)
    if not len(found):
        return pd.DataFrame(columns=_SUMMARY_COLUMNS)
    return pd.DataFrame({"env_name": found.env_name, "model_id": found.model_id, **found.summary()})


def _superseded(snapshots_dir: Path | str, envs: Sequence[str]) -> set[str]:
    if not envs:
        return set()
    return _superseded_in(readers.read(snapshots_dir, "evaluations", envs=envs, where="source = 'experiment'",
                                       columns=["source", "experiment_id", "task_id", "model_id", "evaluated_at"]))


def _partitions(snapshots_dir: Path | str, name: str):
    return layout.partitions(Path(snapshots_dir) / name)


def _model_rows(snapshots_dir: Path | str, env: str, superseded: set[str], *, agent: str | None,
                since: datetime | None) -> tuple[list[tuple[str, dict]], model_stats.Board | None]:
    """(model, summary) of every model on ``env``; unfiltered reads come from (and refresh) the kept
    board, filtered ones scan."""
    if agent is None and since is None:
        kept = model_stats.board(snapshots_dir, env, superseded)
        return [(m, row.summary) for m, row in sorted(kept.rows.items())], kept
    table = model_statistics(snapshots_dir, env=env, agent=agent, since=since)
    return [(row["model_id"], row) for row in table.to_dict("records")], None


def model_leaderboard(snapshots_dir: Path | str, env: str, *, agent: str | None = None,
                      since: datetime | None = None, limit: int | None = None, ci_resamples: int = CI_RESAMPLES,
                      seed: int = 0, evaluations: pd.DataFrame | None = None) -> list[dict]:
    """Models on one env over all their evaluation episodes, ranked; the bootstrap CI of the IQM is
    computed for the ranked entries returned (``limit``), as it costs a resampling per model, and
    kept with the board (:mod:`analytics.model_stats`) for the next read. ``evaluations`` is the
    env's evaluations dataset when the caller has read it already."""
    frame = _evaluations(snapshots_dir, env) if evaluations is None else evaluations
    superseded = _superseded_in(frame)
    rows, kept = _model_rows(snapshots_dir, env, superseded, agent=agent, since=since)
    if not rows:
        if kept is not None:
            model_stats.save(snapshots_dir, kept)
        return []
    info = frame[["model_id", "model_name", "agent", "source", "evaluated_at"]]
    if superseded:  # a superseded model may still be on the board through its benchmark runs
        info = info[~((info["source"] == "experiment") & info["model_id"].isin(superseded))]
    info = info.sort_values("evaluated_at")
    evaluations = info.groupby("model_id").size()
    info = info.drop_duplicates("model_id", keep="last")
    meta = {m: (text(name), text(agent_), text(source)) for m, name, agent_, source in
            zip(info["model_id"], info["model_name"], info["agent"], info["source"], strict=True)}
    out = []
    for model, row in rows:
        name, agent_, source = meta.get(model, (None, None, None))
        mean, std = num(row["mean"]), num(row["std"])
        out.append({"model_id": model, "model_name": name, "agent": agent_, "source": source,
                    "superseded": model in superseded,
                    "evaluations": int(evaluations.get(model, 0)), "episodes": int(row["count"]),
                    "iqm": num(row["iqm"]), "ci95": None, "mean": mean, "std": std,
                    "median": num(row["median"]), "min": num(row["min"]), "max": num(row["max"]),
                    "score": None if mean is None or std is None else mean - std})
    ranked = _rank(out)[:limit] if limit else _rank(out)
    if ci_resamples and ranked:
        wanted = [e["model_id"] for e in ranked]
        if kept is not None:
            found = model_stats.intervals(snapshots_dir, kept, wanted, resamples=ci_resamples, seed=seed,
                                          superseded=superseded)
        else:
            found = _filtered_intervals(snapshots_dir, env, wanted, superseded, since=since,
                                        resamples=ci_resamples, seed=seed)
        for entry in ranked:
            entry["ci95"] = list(found[entry["model_id"]])
    if kept is not None:
        model_stats.save(snapshots_dir, kept)
    return ranked


def _filtered_intervals(snapshots_dir: Path | str, env: str, models: list[str], superseded: set[str], *,
                        since: datetime | None, resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    params: dict = {"wanted": models}
    where = f"phase = 'eval' AND list_contains($wanted, model_id) AND {model_stats.superseded_sql(superseded, params)}"
    found = model_stats.scan(snapshots_dir, where=where, params=params, envs=[env], since=since)
    return {m: stats.iqm_ci(found.of(g), n_resamples=resamples, seed=seed) for g, m in enumerate(found.model_id)}


def keep_model_statistics(snapshots_dir: Path | str, envs: Sequence[str] | None = None) -> list[str]:
    """Bring the kept model statistics of ``envs`` (default: every env with episodes) up to date for
    a default leaderboard read (its limit and intervals), so that the next reader finds them
    computed; envs whose batches did not change are left alone. Returns the envs refreshed."""
    if envs is None:
        envs = sorted({e for e, _, _ in _partitions(snapshots_dir, "episodes")})
    refreshed = []
    for env in envs:
        if not model_stats.is_current(snapshots_dir, env):
            model_leaderboard(snapshots_dir, env, limit=LEADERBOARD_LIMIT)
            refreshed.append(env)
    return refreshed


def leaderboards(snapshots_dir: Path | str, *, env: str | None = None, agent: str | None = None,
                 since: datetime | None = None, limit: int | None = LEADERBOARD_LIMIT,
                 ci_resamples: int = CI_RESAMPLES,
                 seed: int = 0) -> dict:
    """Per env: the agents (over training runs) and the models (over evaluation episodes)."""
    envs = [env] if env else sorted({e for name in ("episodes", "evaluations")
                                     for e, _, _ in _partitions(snapshots_dir, name)})
    boards = []
    for name in envs:
        evaluations = _evaluations(snapshots_dir, name)
        agents = agent_leaderboard(snapshots_dir, name, agent=agent, since=since, ci_resamples=ci_resamples,
                                   seed=seed, evaluations=evaluations)
        models = model_leaderboard(snapshots_dir, name, agent=agent, since=since, limit=limit,
                                   ci_resamples=ci_resamples, seed=seed, evaluations=evaluations)
        if agents or models:
            boards.append({"env_name": name, "agents": agents[:limit] if limit else agents, "models": models})
    return {"ranking": RANKING, "agent_unit": AGENT_UNIT, "model_unit": MODEL_UNIT,
            "ci": f"95% percentile bootstrap of the IQM, {ci_resamples} resamples, seed {seed}" if ci_resamples
            else None, "leaderboards": boards}


# -- agent against agent ------------------------------------------------------------------------------

def compare_agents(snapshots_dir: Path | str, env: str, agents: Sequence[str] | None = None, *,
                   since: datetime | None = None, ci_resamples: int = CI_RESAMPLES, seed: int = 0) -> dict:
    """Agents on one env compared across seeds: each agent's runs ranked by IQM, and for every pair
    the probability that a run of the first beats a run of the second, with a stratified bootstrap
    CI and Welch / Mann–Whitney tests."""
    board = agent_leaderboard(snapshots_dir, env, since=since, ci_resamples=ci_resamples, seed=seed)
    if agents:
        wanted = list(dict.fromkeys(agents))
        board = [e for e in board if e["agent"] in wanted]
        missing = sorted(set(wanted) - {e["agent"] for e in board})
    else:
        missing = []
    if len(board) < 2:
        have = ", ".join(e["agent"] for e in board) or "none"
        raise NotEnoughData(f"comparing needs completed runs of at least two agents on {env}; the snapshots have "
                            f"{have}" + (f" (no runs of {', '.join(missing)})" if missing else ""))
    runs = readers.read(snapshots_dir, "evaluations", envs=[env], since=since, where="source = 'experiment'",
                        columns=["agent", "experiment_id", "task_id", "run_id", "mean", "evaluated_at"]
                        ).dropna(subset=["agent", "mean"])
    runs = runs[_current(snapshots_dir, env, runs, since)]
    runs = runs.sort_values("evaluated_at").drop_duplicates("run_id", keep="last")
    scores = {e["agent"]: runs.loc[runs["agent"] == e["agent"], "mean"].to_numpy(dtype=float) for e in board}
    pairs = []
    for i, a in enumerate(board):
        for b in board[i + 1:]:
            xa, xb = scores[a["agent"]], scores[b["agent"]]
            ci = stats.improvement_ci(xa, xb, n_resamples=ci_resamples, seed=seed) if ci_resamples else None
            tests = stats.significance_test(xa, xb)
            pairs.append({"a": a["agent"], "b": b["agent"], "runs_a": int(xa.size), "runs_b": int(xb.size),
                          "probability_of_improvement": tests["probability_of_improvement"],
                          "ci95": list(ci) if ci else None, "welch_p": tests["welch_t"]["p_value"],
                          "mann_whitney_p": tests["mann_whitney_u"]["p_value"],
                          "mean_difference": tests["mean_difference"]})
    return {"env_name": env, "unit": AGENT_UNIT, "ranking": RANKING, "agents": board, "pairs": pairs,
            "missing": missing}
