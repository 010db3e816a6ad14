"""The event catalogue: every event the hub emits, as a frozen dataclass, and its CloudEvents form.

An event's wire ``type`` is derived from its class name (``ExperimentCreated`` →
``resimhub.experiment.created``) and its ``subject`` from the id field it is about, so adding an
event is adding a class here and nothing else.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

SOURCE = "resimhub"
SPECVERSION = "1.0"


def type_name(cls_name: str) -> str:
    words = re.findall(r"[A-Z][a-z0-9]*", cls_name)
    return "resimhub." + ".".join(w.lower() for w in words)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and a ``Z``. Stored times arrive aware
    (:class:`storage.models.UtcDateTime`), so a naive one is a bug: guessing its zone would shift it."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: its time zone is unknown")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Event:
    """Base of the catalogue. Subclasses name the collection and the id field of their subject."""

    subject_collection: ClassVar[str] = ""
    subject_key: ClassVar[str] = ""

    @classmethod
    def event_type(cls) -> str:
        return type_name(cls.__name__)

    @property
    def subject(self) -> str:
        return f"{self.subject_collection}/{getattr(self, self.subject_key)}"

    def data(self) -> dict[str, Any]:
        return asdict(self)


# -- environments ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _EnvironmentEvent(Event):
    subject_collection: ClassVar[str] = "environments"
    subject_key: ClassVar[str] = "environment_id"


@dataclass(frozen=True)
class EnvironmentRegistered(_EnvironmentEvent):
    environment_id: int
    env_name: str
    task_id: str


@dataclass(frozen=True)
class EnvironmentVerified(_EnvironmentEvent):
    environment_id: int
    env_name: str
    task_id: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class EnvironmentRejected(_EnvironmentEvent):
    environment_id: int
    env_name: str
    task_id: str
    reason: str


# -- experiments and training --------------------------------------------------------------------
@dataclass(frozen=True)
class _ExperimentEvent(Event):
    subject_collection: ClassVar[str] = "experiments"
    subject_key: ClassVar[str] = "experiment_id"


@dataclass(frozen=True)
class ExperimentCreated(_ExperimentEvent):
    experiment_id: int
    name: str
    env_name: str
    agent: str
    seeds: list[int]
    total_timesteps: int | None = None
    episodes: int | None = None
    hyperparams: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingRequested(_ExperimentEvent):
    experiment_id: int
    task_id: str
    run_id: int
    seed: int


@dataclass(frozen=True)
class TrainingStarted(_ExperimentEvent):
    experiment_id: int
    task_id: str
    run_id: int
    seed: int
    resumed_from: int | None = None


@dataclass(frozen=True)
class TrainingProgressed(_ExperimentEvent):
    experiment_id: int
    task_id: str
    run_id: int
    timesteps: int
    episodes: int
    fraction: float
    latest_return: float | None = None


@dataclass(frozen=True)
class TrainingCompleted(_ExperimentEvent):
    experiment_id: int
    task_id: str
    run_id: int
    model_id: str
    timesteps: int
    episodes: int
    wall_time_s: float


@dataclass(frozen=True)
class TrainingFailed(_ExperimentEvent):
    experiment_id: int
    task_id: str
    run_id: int
    error: dict[str, Any]


@dataclass(frozen=True)
class TrainingCancelled(_ExperimentEvent):
    experiment_id: int
    task_id: str
    run_id: int


# -- models and evaluation -----------------------------------------------------------------------
@dataclass(frozen=True)
class _ModelEvent(Event):
    subject_collection: ClassVar[str] = "models"
    subject_key: ClassVar[str] = "model_id"


@dataclass(frozen=True)
class ModelUploaded(_ModelEvent):
    model_id: str
    task_id: str
    format: str
    sha256: str
    env_name: str | None = None
    activation: str | None = None


@dataclass(frozen=True)
class ModelValidated(_ModelEvent):
    model_id: str
    task_id: str
    format: str
    shapes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRejected(_ModelEvent):
    model_id: str
    task_id: str
    reason: str


@dataclass(frozen=True)
class _EvaluationEvent(Event):
    subject_collection: ClassVar[str] = "evaluations"
    subject_key: ClassVar[str] = "evaluation_id"


@dataclass(frozen=True)
class EvaluationRequested(_EvaluationEvent):
    evaluation_id: str
    task_id: str
    model_id: str
    env_name: str
    episodes: int
    seed: int
    mode: str = "exact"
    experiment_id: int | None = None
    run_id: int | None = None


@dataclass(frozen=True)
class EvaluationCompleted(_EvaluationEvent):
    evaluation_id: str
    task_id: str
    model_id: str
    env_name: str
    mean_reward: float
    std_reward: float
    episodes: int
    experiment_id: int | None = None
    run_id: int | None = None


@dataclass(frozen=True)
class EvaluationFailed(_EvaluationEvent):
    evaluation_id: str
    task_id: str
    model_id: str
    error: dict[str, Any]
    experiment_id: int | None = None
    run_id: int | None = None


@dataclass(frozen=True)
class SnapshotWritten(_ExperimentEvent):
    experiment_id: int
    datasets: list[str]
    rows: int


@dataclass(frozen=True)
class ExperimentCompleted(_ExperimentEvent):
    """Every seed of a training task is trained and evaluated; the statistics are the experiment's
    ``results`` as the aggregate computed them (IQM and CI across seeds, or across the evaluation
    episodes of a single seed, as ``statistics_over`` says). Emitted once per training task."""

    experiment_id: int
    task_id: str
    env_name: str
    agent: str
    mean_return: float
    iqm: float
    ci95: list[float]
    statistics_over: str
    seeds: list[int]
    final_returns: list[float]
    #: One entry per seed: ``run_id``, ``seed``, ``model_id``, the evaluation's ``mean`` and ``episodes``.
    runs: list[dict[str, Any]]
    #: Evaluation episodes over all runs.
    episodes: int
    training_episodes: int
    timesteps: int
    solved: bool | None = None
    reward_threshold: float | None = None


@dataclass(frozen=True)
class ExperimentFailed(_ExperimentEvent):
    """A training task of the experiment failed: the first run that failed, at which ``stage``
    (``training``, ``evaluation`` or ``aggregation``), and why. Emitted once per training task,
    however many of its runs fail."""

    experiment_id: int
    task_id: str | None
    stage: str
    reason: str
    error: dict[str, Any]
    run_id: int | None = None


# -- webhooks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _WebhookEvent(Event):
    subject_collection: ClassVar[str] = "webhooks"
    subject_key: ClassVar[str] = "webhook_id"


@dataclass(frozen=True)
class WebhookPinged(_WebhookEvent):
    """``POST /api/webhooks/{id}/test``: delivered to that subscription only, whatever it subscribes to."""

    webhook_id: int


@dataclass(frozen=True)
class WebhookRedeliveryRequested(_WebhookEvent):
    """A command carried by the outbox so the API never enqueues; delivered to no subscriber."""

    webhook_id: int
    delivery_id: int


@dataclass(frozen=True)
class WebhookPaused(_WebhookEvent):
    webhook_id: int
    url: str
    reason: str
    consecutive_failures: int


@dataclass(frozen=True)
class WebhookDisabled(_WebhookEvent):
    webhook_id: int
    url: str
    reason: str
    status_code: int | None = None


def _catalogue() -> dict[str, type[Event]]:
    found: dict[str, type[Event]] = {}
    pending = list(Event.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.__name__.startswith("_"):
            found[cls.event_type()] = cls
    return found


CATALOGUE: dict[str, type[Event]] = _catalogue()


@dataclass(frozen=True)
class Envelope:
    """An event as it travels: the CloudEvents 1.0 attributes around the event's data."""

    id: str
    type: str
    subject: str
    time: datetime
    data: dict[str, Any]

    @classmethod
    def wrap(cls, event: Event, *, moment: datetime | None = None) -> Envelope:
        return cls(
            id=str(uuid.uuid4()),
            type=event.event_type(),
            subject=event.subject,
            time=moment or datetime.now(UTC),
            data=event.data(),
        )

    def to_cloudevent(self) -> dict[str, Any]:
        return {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": SOURCE,
            "type": self.type,
            "subject": self.subject,
            "time": rfc3339(self.time),
            "datacontenttype": "application/json",
            "data": self.data,
        }

    @classmethod
    def from_cloudevent(cls, doc: dict[str, Any]) -> Envelope:
        time_text = doc["time"].replace("Z", "+00:00")
        return cls(id=doc["id"], type=doc["type"], subject=doc["subject"],
                   time=datetime.fromisoformat(time_text), data=dict(doc["data"]))

    def event(self) -> Event:
        """The typed event; unknown fields from a newer producer are ignored, not fatal."""
        cls = CATALOGUE[self.type]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in self.data.items() if k in names})
