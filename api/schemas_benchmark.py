"""Schemas of the benchmark resources: uploaded models, evaluation runs, recent results, comparisons.

Kept apart from :mod:`api.schemas` so that the benchmark family can change without touching the
experiment and environment schemas.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from api.schemas import MAX_SEED, Public, Strict, TaskAccepted, Timestamp
from storage.models import Model
from storage.views import model_view

MAX_EVAL_EPISODES = 10_000
MAX_WAIT_S = 60.0
MAX_COMPARE = 20
ACTIVATIONS = ("relu", "tanh")


class EvaluationCreate(Strict):
    """``POST /benchmark/run``, as JSON or as form fields (form values arrive as strings and are
    coerced, so ``episodes=10`` in a form means the integer 10)."""

    model_id: str = Field(min_length=1, max_length=36, description="id returned by POST /benchmark/upload_model")
    env_name: str | None = Field(default=None, min_length=1, max_length=200,
                                 description="Gymnasium id; defaults to the env the model was uploaded for")
    episodes: int = Field(default=100, ge=1, le=MAX_EVAL_EPISODES)
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="episode i is reset with seed + i")
    mode: Literal["exact", "fast"] = Field(
        default="exact", description="exact: reproducible per-episode seeds; fast: gymnasium's native vector env")
    wait: float = Field(default=0.0, ge=0.0, le=MAX_WAIT_S,
                        description="block up to this many seconds and answer 200 with the result if it is done")


def _file_url(fields: dict[str, Any]) -> str | None:
    return None if fields["status"] == "rejected" else f"/benchmark/models/{fields['id']}/file"


class ModelPublic(Public):
    id: str
    name: str | None
    source: str
    status: str
    format: str
    sha256: str
    size_bytes: int
    env_name: str | None
    activation: str | None
    options: dict[str, Any] = Field(default_factory=dict, description="what the uploader stated: prefix, "
                                    "action_scaling, normalization")
    assumptions: list[dict[str, Any]] = Field(default_factory=list, description="what the hub assumed to read "
                                              "the file (name, value, reason); shown beside every score")
    shapes: dict[str, Any] | None
    manifest: dict[str, Any] | None
    reason: str | None
    task_id: str | None
    experiment_id: int | None
    run_id: int | None
    created_at: Timestamp
    superseded: bool = Field(default=False, description="a later training of the model's experiment completed "
                             "and replaced it; its run no longer counts in statistics or leaderboards")
    superseded_at: Timestamp | None = None
    superseded_by_task_id: str | None = Field(default=None, description="the training task that replaced it")
    file_url: str | None = Field(default_factory=_file_url)

    @model_validator(mode="before")
    @classmethod
    def _described(cls, data: Any) -> Any:
        # A row is read through storage.views.model_view, which the validation task's result uses too,
        # so that the two descriptions of a model cannot drift apart.
        return model_view(data) if isinstance(data, Model) else data


class EvaluationPublic(Public):
    id: str
    model_id: str
    env_name: str
    episodes: int
    seed: int
    mode: str
    status: str
    task_id: str | None
    experiment_id: int | None
    run_id: int | None
    mean_reward: float | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: Timestamp
    finished_at: Timestamp | None


class RecentEvaluation(BaseModel):
    evaluation_id: str
    model_id: str
    env_name: str
    mean_reward: float | None
    std_reward: float | None
    median_reward: float | None
    latency_ms: float | None
    total_episodes: int
    status: str
    evaluated_at: str | None
    seed: int
    mode: str
    iqm: float | None
    score: float | None
    experiment_id: int | None
    run_id: int | None
    assumptions: list[dict[str, Any]] = Field(default_factory=list, description="what the hub assumed to read "
                                              "the model's file (docs/models.md)")


class CompareEntry(BaseModel):
    rank: int
    model_id: str
    name: str | None
    superseded: bool = Field(default=False, description="a later training of the model's experiment replaced it")
    assumptions: list[dict[str, Any]] = Field(default_factory=list, description="what the hub assumed to read "
                                              "the model's file, beside its score (docs/models.md)")
    evaluation_id: str
    episodes: int
    seed: int
    mode: str
    mean: float | None
    std: float | None
    median: float | None
    min: float | None
    max: float | None
    iqm: float | None
    iqm_ci95: list[float | None]
    ci95: list[float | None] | None
    score: float | None
    evaluated_at: str | None


class ComparePair(BaseModel):
    a: str
    b: str
    paired_episodes: bool
    probability_of_improvement: float | None
    mean_difference: float | None
    iqm_difference: float | None
    welch_t: dict[str, Any]
    mann_whitney_u: dict[str, Any]


class Comparison(BaseModel):
    env_name: str
    ranking: str
    models: list[CompareEntry]
    pairs: list[ComparePair]
    unknown_model_ids: list[str] = Field(default_factory=list, description="requested ids that name no model; "
                                         "the others are compared")


class UploadAccepted(TaskAccepted):
    model_id: str
    model: ModelPublic


class RunAccepted(TaskAccepted):
    """``POST /benchmark/run`` before its task has finished; ``progress`` is there only when the
    client waited (``wait``) and the task had not finished by then."""

    evaluation_id: str
    model_id: str
    env_name: str
    episodes: int
    seed: int
    mode: str
    progress: dict[str, Any] | None = None


class RunOutcome(RunAccepted):
    """``POST /benchmark/run`` with ``wait`` when the task finished in time: its status is terminal
    and its result (or error) is inline, as ``GET /api/tasks/{id}`` would show it."""

    result: dict[str, Any] | None
    error: dict[str, Any] | None
