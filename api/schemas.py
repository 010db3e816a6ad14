"""Request and response schemas, one family per resource (``…Create`` in, ``…Public`` out)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

from actors.rl.agents.common import MAX_TOTAL_TIMESTEPS
from storage.events import rfc3339
from storage.tasks import public_error

#: Training budgets (docs/agents.md): the engine's own step limit, an episode budget (whose step
#: allowance the train actor also caps at that limit) and seeds, each a run of its own.
MAX_TIMESTEPS = MAX_TOTAL_TIMESTEPS
MAX_EPISODES = 100_000
MAX_SEEDS = 20
MAX_SEED = 2**31 - 1


#: Every time the API shows: RFC 3339 in UTC with microseconds and a ``Z``, as the events carry it.
Timestamp = Annotated[datetime, PlainSerializer(rfc3339, return_type=str)]


class Public(BaseModel):
    """A response read from a stored row: ``EnvironmentPublic.model_validate(row)`` takes the row's
    attributes (or a mapping's keys); fields that are not columns are derived by the model."""

    # Every field of a response is always sent, defaults included, and the schema says so.
    model_config = ConfigDict(from_attributes=True, json_schema_serialization_defaults_required=True)

    @classmethod
    def dump(cls, row: Any) -> dict[str, Any]:
        """The JSON-ready view of ``row``, for the Flask routes (jsonify) and the CLI."""
        return cls.model_validate(row).model_dump(mode="json")


def version_of(env_name: str) -> str | None:
    """The version in a Gymnasium id, as the original ReSimHub API spelled it: ``v1`` for ``CartPole-v1``."""
    from gymnasium.envs.registration import parse_env_id

    try:
        version = parse_env_id(env_name)[2]
    except Exception:  # noqa: BLE001 - not a well-formed id: it has no version to speak of
        return None
    return None if version is None else f"v{version}"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL; psycopg2 refuses such a string with a bare ValueError,
        # which would surface as a 500 instead of the client's 422.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text may not contain NUL (\\u0000) characters")
        return value


class EnvironmentCreate(Strict):
    env_name: str = Field(min_length=1, max_length=200, description="A registered Gymnasium id, e.g. CartPole-v1")
    version: str | None = Field(default=None, min_length=1, max_length=20, description=(
        "Optional, as the original ReSimHub API sent it (\"v1\"); must be the version in env_name"))


class EnvironmentPublic(Public):
    id: int
    env_name: str
    version: str | None = Field(default_factory=lambda fields: version_of(fields["env_name"]),
                                description="the version in the Gymnasium id (v1 for CartPole-v1)")
    status: str
    spec: dict[str, Any] | None
    reason: str | None
    task_id: str | None
    created_at: Timestamp
    verified_at: Timestamp | None


class ExperimentCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    env_name: str | None = Field(default=None, min_length=1, max_length=200, description=(
        "A registered environment; may be left out when name is one, as the original ReSimHub API allowed"))
    agent: str = Field(min_length=1, max_length=20,
                       description="an agent GET /api/agents lists: PPO, A2C, DQN, CEM, QLEARNING, SAC, TD3")
    total_timesteps: int | None = Field(default=None, ge=1, le=MAX_TIMESTEPS)
    episodes: int | None = Field(default=None, ge=1, le=MAX_EPISODES,
                                 description="Training budget in episodes, instead of total_timesteps")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    seeds: list[int] | None = Field(default=None, min_length=1, max_length=MAX_SEEDS)
    hyperparams: dict[str, Any] = Field(default_factory=dict, description=(
        "The agent's hyperparameters; unknown ones are refused, and those that cost time or memory "
        "have upper bounds (docs/agents.md lists them per agent)"))
    eval_episodes: int = Field(default=100, ge=1, le=10_000)
    eval_seed: int = Field(default=10_000, ge=0, le=MAX_SEED)
    preset: bool = Field(default=False, description=(
        "start from RL-Zoo's tuned hyperparameters and budget for this agent and environment (GET "
        "/api/agents/{name} lists them); hyperparams and total_timesteps/episodes given here override them. "
        "Refused when the pair has no preset. The experiment records which preset it used"))

    @field_validator("seeds")
    @classmethod
    def _seeds_valid(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is None:
            return None
        if any(s < 0 or s > MAX_SEED for s in seeds):
            raise ValueError(f"seeds must be between 0 and {MAX_SEED}")
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds

    @model_validator(mode="after")
    def _one_budget_one_seed_form(self) -> ExperimentCreate:
        if self.total_timesteps is not None and self.episodes is not None:
            raise ValueError("give either total_timesteps or episodes, not both")
        if self.seed is not None and self.seeds is not None:
            raise ValueError("give either seed or seeds, not both")
        return self

    def seed_list(self) -> list[int]:
        if self.seeds is not None:
            return list(self.seeds)
        return [self.seed if self.seed is not None else 0]


class StartTraining(Strict):
    """``POST /api/v1/start_training``. The original API also sent ``env_name`` and ``algo``; they
    are accepted when they agree with the experiment and refused (409) when they do not."""

    experiment_id: int = Field(ge=1)
    env_name: str | None = Field(default=None, min_length=1, max_length=200)
    algo: str | None = Field(default=None, min_length=1, max_length=20, description="the agent, as the original "
                             "API called it")
    agent: str | None = Field(default=None, min_length=1, max_length=20)


class ExperimentPublic(Public):
    id: int
    name: str
    env_name: str
    environment_id: int
    agent: str
    total_timesteps: int | None
    episodes: int | None
    seeds: list[int]
    hyperparams: dict[str, Any]
    preset: dict[str, Any] | None = Field(default=None, description=(
        "the tuned preset the hyperparameters and budget started from (its source and what differs from it), "
        "or null"))
    eval_episodes: int
    eval_seed: int
    status: str
    results: dict[str, Any] | None
    created_at: Timestamp
    updated_at: Timestamp

    @field_validator("seeds", "hyperparams", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return [] if info.field_name == "seeds" else {}
        return value


class TaskPublic(Public):
    # The polling API's view of a task: GET /api/tasks/{id}, /api/v1/task_status/{id}, a waited-for run.
    task_id: str = Field(validation_alias=AliasChoices("task_id", "id"))
    kind: str
    subject: str | None
    status: str
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None

    @field_validator("error")
    @classmethod
    def _public_part(cls, error: dict[str, Any] | None) -> dict[str, Any] | None:
        return public_error(error) if error else None  # no traceback, no Celery type


class TaskAccepted(BaseModel):
    """What every ``202 Accepted`` starts with (:func:`api.responses.accepted`); each endpoint adds
    the ids and views of what it queued beside these, so that a client need not poll to learn them."""

    task_id: str
    status: str = Field(description="queued when just submitted; a waited-for run reports the task's status")
    location: str = Field(description="the task to poll, also sent as the Location header")


class EnvironmentAccepted(TaskAccepted):
    environment_id: int
    environment: EnvironmentPublic


class TrainingAccepted(TaskAccepted):
    experiment_id: int
    run_ids: list[int] = Field(description="one training run per seed")
    experiment: ExperimentPublic


MAX_KEY_NAME = 100


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=MAX_KEY_NAME, description="what the key is for, e.g. ci")
    scope: Literal["read", "write", "admin"] = Field(description="read ⊂ write ⊂ admin")


class ApiKeyPublic(Public):
    id: str
    name: str
    scope: str
    prefix: str
    active: bool = Field(validation_alias=AliasChoices("active", "revoked_at"))  # a row has revoked_at
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None

    @field_validator("active", mode="before")
    @classmethod
    def _until_revoked(cls, value: Any) -> Any:
        return value if isinstance(value, bool) else value is None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the secret; shown only in this answer")


#: The headers of a 202 (:func:`api.responses.accepted`), declared beside its body.
ACCEPTED_HEADERS: dict[str, Any] = {
    "Location": {"schema": {"type": "string"}, "description": "the task to poll"},
    "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait before polling"},
}


class CloudEvent(BaseModel):
    specversion: str
    id: str
    source: str
    type: str
    subject: str
    time: str
    datacontenttype: str
    data: dict[str, Any]
    seq: int


class EventPage(BaseModel):
    events: list[CloudEvent]
    next_cursor: int | None


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable, e.g. not_found, validation_error, database_unavailable")
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorDetail


#: Declared on every resource route, so that the OpenAPI document says what clients really get:
#: the error envelope (not FastAPI's default ``{"detail": …}``) for any 4xx, and 503 while the
#: database is unreachable.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "the request was refused; `error.code` says why"},
    422: {"model": ErrorBody, "description": "the request is not valid"},
    503: {"model": ErrorBody, "description": "the database is unavailable; retry after `Retry-After` seconds",
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
}
