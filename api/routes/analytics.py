"""``/api/analytics/*``: experiments, leaderboards and comparisons computed from the Parquet snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import StorageDep
from api.services import analytics

router = APIRouter(prefix="/api/analytics", tags=["analytics"])

_ENV = Query(None, max_length=200, description="only this Gymnasium id")
_AGENT = Query(None, max_length=20, description="only this agent (PPO, A2C, DQN, CEM, QLEARNING)")
_SINCE = Query(None, description="only data recorded from this time on (ISO 8601; a naive time is UTC)")
_RESAMPLES = Query(1000, ge=0, le=analytics.MAX_RESAMPLES, description="bootstrap resamples (0: no intervals)")


class RecentSummary(BaseModel):
    total_experiments: int
    avg_reward: float | None
    avg_duration: float | None


class ExperimentSummary(BaseModel):
    id: int
    name: str | None
    env_name: str | None
    agent: str | None
    status: str | None
    avg_reward: float | None
    iqm: float | None
    ci95: list[float | None] | None
    statistics_over: str | None
    best_return: float | None
    episodes: int | None
    timesteps: int | None
    seeds: list[int]
    duration: float | None
    reward_threshold: float | None
    solved: bool | None
    created_at: str | None
    updated_at: str | None


class RecentExperiments(BaseModel):
    summary: RecentSummary
    experiments: list[ExperimentSummary]


class CurvePoint(BaseModel):
    """One bin of the learning curve (docs/analytics.md, "The learning curve")."""

    step: int = Field(description="environment steps at the bin's right edge")
    seeds: int = Field(description="seeds with an episode ending in the bin; the statistics are across them")
    episodes: int
    mean_return: float | None
    iqm_return: float | None
    ci95: list[float] | None = Field(description="95% percentile bootstrap interval of the IQM across seeds; "
                                                 "null with one seed")
    min_return: float | None
    max_return: float | None
    per_seed: dict[str, float] = Field(description="each seed's mean return over its episodes ending in the bin")


class ExperimentAnalytics(ExperimentSummary):
    experiment_id: int
    task_id: str | None
    average_return: float | None
    final_return: float | None
    final_training_return: float | None
    learning_curve: list[CurvePoint]
    convergence_step: int | None
    convergence_steps: dict[str, int | None]
    convergence_window: int
    duration_total: float | None
    evaluations: list[dict[str, Any]]
    history: list[dict[str, Any]]


class Leaderboards(BaseModel):
    ranking: str
    agent_unit: str
    model_unit: str
    ci: str | None
    leaderboards: list[dict[str, Any]]


class AgentComparison(BaseModel):
    env_name: str
    unit: str
    ranking: str
    agents: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    missing: list[str]


@router.get("/recent")
def recent_experiments(storage: StorageDep, env: str | None = _ENV, agent: str | None = _AGENT,
                       since: datetime | None = _SINCE, limit: int = Query(20, ge=1, le=analytics.MAX_LIMIT)
                       ) -> RecentExperiments:
    """Experiments by latest state, newest first, with a summary over all that match the filters."""
    return analytics.recent(storage, env=env, agent=agent, since=since, limit=limit)


@router.get("/experiments/{experiment_id}")
def experiment_analytics(experiment_id: int, storage: StorageDep,
                         bins: int = Query(20, ge=1, le=500, description="learning-curve bins")
                         ) -> ExperimentAnalytics:
    """Returns, binned learning curve and convergence step of one experiment's latest training."""
    return analytics.experiment(storage, experiment_id, bins=bins)


@router.get("/leaderboard")
def leaderboard(storage: StorageDep, env: str | None = _ENV, agent: str | None = _AGENT,
                since: datetime | None = _SINCE, limit: int = Query(20, ge=1, le=analytics.MAX_LIMIT),
                resamples: int = _RESAMPLES) -> Leaderboards:
    """Per env: agents ranked over their training runs and models over their evaluation episodes
    (mean, std, median, IQM with a bootstrap CI, count)."""
    return analytics.leaderboards(storage, env=env, agent=agent, since=since, limit=limit, resamples=resamples)


@router.get("/compare")
def compare_agents(storage: StorageDep, env: str = Query(..., max_length=200, description="Gymnasium id"),
                   agents: str | None = Query(None, max_length=200, description="comma-separated; default: all"),
                   since: datetime | None = _SINCE, resamples: int = _RESAMPLES) -> AgentComparison:
    """Agents on one env compared across seeds: probability of improvement with a bootstrap CI and
    Welch / Mann–Whitney tests for every pair."""
    return analytics.compare(storage, env=env, agents=agents, since=since, resamples=resamples)


@router.get("/datasets")
def snapshot_datasets(storage: StorageDep) -> list[dict[str, Any]]:
    """The snapshot datasets: schema (with version), rows, batches, files and bytes on disk."""
    return analytics.datasets(storage)
