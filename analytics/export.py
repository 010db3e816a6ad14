"""``resimhub analytics report``: one env's leaderboards, comparison and learning curves as files.

Tables go out in the format asked for (Markdown, CSV, JSON or Parquet); learning curves, one chart
per agent, as SVG beside them. Everything is computed from the snapshot folder alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analytics import plots, readers, reports

FORMATS = ("md", "csv", "json", "parquet")


def _flat(entries: list[dict]) -> pd.DataFrame:
    """Report rows as a flat table: intervals become ``*_low``/``*_high`` columns."""
    flat = []
    for entry in entries:
        row = {}
        for key, value in entry.items():
            if key == "ci95":
                low, high = value or (None, None)
                row["ci95_low"], row["ci95_high"] = low, high
            elif isinstance(value, list | dict):
                row[key] = json.dumps(value)
            else:
                row[key] = value
        flat.append(row)
    return pd.DataFrame(flat)


def _curve_series(snapshots_dir: Path, env: str, agent: str, states: pd.DataFrame) -> list[plots.Series]:
    mine = states[(states["agent"] == agent) & states["task_id"].notna()]
    if mine.empty:
        return []
    tasks = [str(t) for t in mine["task_id"]]
    episodes = readers.read(snapshots_dir, "episodes", envs=[env],
                            columns=["experiment_id", "task_id", "seed", "episode", "step", "return"],
                            where="phase = 'train' AND list_contains($tasks, task_id)", params={"tasks": tasks})
    out = []
    for row in mine.sort_values("experiment_id").itertuples():
        group = episodes[episodes["task_id"] == row.task_id]
        curve = reports.learning_curve(group)
        if not curve:
            continue
        seeds = len(row.seeds) if row.seeds is not None else 0
        out.append(plots.Series(
            label=f"#{row.experiment_id} {row.name} ({seeds} seed{'s' if seeds != 1 else ''})",
            x=[p["step"] for p in curve], y=[p["mean_return"] for p in curve],
            low=[p["min_return"] for p in curve] if seeds > 1 else None,
            high=[p["max_return"] for p in curve] if seeds > 1 else None))
    return out


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_none_\n"

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _atomic_text(path: Path, content: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content)
    os.replace(tmp, path)


def write_report(snapshots_dir: Path | str, out_dir: Path | str, *, env: str, fmt: str = "md",
                 agent: str | None = None, since: datetime | None = None, plot: bool = True,
                 ci_resamples: int = reports.CI_RESAMPLES,
                 progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write the report files into ``out_dir``; returns their paths."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    snapshots_dir, out_dir = Path(snapshots_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    states = reports.experiment_states(snapshots_dir, env=env, agent=agent, since=since)
    agents_seen = sorted({str(a) for a in states["agent"].dropna()}) if not states.empty else []
    steps = 4 + (len(agents_seen) if plot else 0)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, steps)

    agents = reports.agent_leaderboard(snapshots_dir, env, agent=agent, since=since, ci_resamples=ci_resamples)
    tick()
    models = reports.model_leaderboard(snapshots_dir, env, agent=agent, since=since, ci_resamples=ci_resamples)
    tick()
    try:
        comparison = reports.compare_agents(snapshots_dir, env, since=since, ci_resamples=ci_resamples)["pairs"] \
            if agent is None else []
    except reports.NotEnoughData:
        comparison = []
    tick()
    experiments = [reports.experiment_summary(r) for _, r in states.iterrows()] if not states.empty else []
    tick()
    tables = {"leaderboard_agents": agents, "leaderboard_models": models, "agent_comparison": comparison,
              "experiments": experiments}

    written: list[Path] = []
    charts: dict[str, str] = {}
    if plot:
        threshold = None
        if not states.empty:
            threshold = reports.num(states["reward_threshold"].dropna().iloc[0]) \
                if states["reward_threshold"].notna().any() else None
        (out_dir / "curves").mkdir(exist_ok=True)
        for name in agents_seen:
            series = _curve_series(snapshots_dir, env, name, states)
            if series:
                path = out_dir / "curves" / f"{_file_safe(name)}.svg"
                _atomic_text(path, plots.line_chart(f"{name} on {env}: training return", series,
                                                    threshold=threshold))
                charts[name] = path.relative_to(out_dir).as_posix()
                written.append(path)
            tick()

    generated = reports.rfc3339(pd.Timestamp.now(tz="UTC"))
    meta = {"env_name": env, "agent": agent, "since": reports.rfc3339(since) if since else None,
            "generated_at": generated, "ranking": reports.RANKING, "agent_unit": reports.AGENT_UNIT,
            "model_unit": reports.MODEL_UNIT, "curves": charts}
    if fmt == "json":
        path = out_dir / "report.json"
        _atomic_text(path, json.dumps({**meta, **tables}, indent=2, allow_nan=False) + "\n")
        written.append(path)
    elif fmt in ("csv", "parquet"):
        for name, entries in tables.items():
            frame = _flat(entries)
            path = out_dir / f"{name.replace('_', '-')}.{fmt}"
            if fmt == "csv":
                _atomic_text(path, frame.to_csv(index=False))
            else:
                tmp = path.with_name(f".{path.name}.tmp")
                pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
                os.replace(tmp, path)
            written.append(path)
    else:
        parts = [f"# {env}\n", f"Generated {generated} from the snapshot folder"
                 + (f", agent {agent}" if agent else "") + (f", since {meta['since']}" if since else "") + ".\n",
                 f"Ranking: {reports.RANKING}.\n",
                 f"## Agents\n\nOne value per {reports.AGENT_UNIT}; CI is the 95% bootstrap interval of the IQM.\n",
                 _markdown_table(_flat(agents)), "\n## Models\n\nOver every evaluation episode of the model.\n",
                 _markdown_table(_flat(models)),
                 "\n## Agent against agent\n\nprobability_of_improvement = P(a run of a beats a run of b).\n",
                 _markdown_table(_flat(comparison)), "\n## Experiments\n\n",
                 _markdown_table(_flat(experiments).drop(columns=["seeds", "ci95_low", "ci95_high"],
                                                         errors="ignore"))]
        if charts:
            parts.append("\n## Learning curves\n\n")
            parts += [f"### {name}\n\n![{name}]({chart})\n\n" for name, chart in charts.items()]
        path = out_dir / "report.md"
        _atomic_text(path, "\n".join(parts))
        written.append(path)
    return written


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "agent"
