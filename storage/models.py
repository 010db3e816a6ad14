"""The SQL schema as SQLAlchemy 2.0 typed models.

The ``events`` table is both the queryable event log and the transactional outbox: a row is written
in the same transaction as the state change it describes, and ``published_at`` stays empty until the
relay has handed it to the bus.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

JsonType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit sequence.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Every timestamp column: written as UTC, read back as an aware UTC datetime on either database.

    SQLite keeps no offset (SQLAlchemy stores the wall time and returns it naive), and PostgreSQL
    returns ``timestamptz`` in the session's time zone; without this, every reader would have to
    patch what it got. A naive value written here is taken as UTC, the hub's only clock. The column
    stays ``DateTime(timezone=True)``, so the migrated schema is unchanged.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else _as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else _as_utc(value)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class Base(DeclarativeBase):
    # A ``Mapped[datetime]`` declared without a type still gets the UTC-aware one.
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType, datetime: UtcDateTime()}


class Environment(Base):
    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    env_name: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    spec: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    task_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"))
    env_name: Mapped[str] = mapped_column(String(200))
    agent: Mapped[str] = mapped_column(String(20))
    total_timesteps: Mapped[int | None] = mapped_column(Integer, default=None)
    episodes: Mapped[int | None] = mapped_column(Integer, default=None)
    seeds: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    hyperparams: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    #: The tuned preset the hyperparameters and budget started from (``preset: true``), else None.
    preset: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    eval_episodes: Mapped[int] = mapped_column(Integer, default=100)
    eval_seed: Mapped[int] = mapped_column(Integer, default=10_000)
    status: Mapped[str] = mapped_column(String(20), default="created")
    results: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class Task(Base):
    """One unit of long work a client can poll; mirrored to the Celery-compatible channel."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str | None] = mapped_column(String(200), default=None)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    progress: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class EventRecord(Base):
    """The event log and outbox in one table (see the module docstring).

    ``seq`` numbers rows as they are inserted, which on PostgreSQL is not the order they become
    visible in. ``position`` is the log's order and its public cursor (the ``seq`` of the event log
    API): it is assigned after commit, serially, by :func:`storage.outbox.sequence`, so a reader that
    sees position *p* already sees every position below it.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_position", "position", unique=True),
        # Small partial indexes: the rows still waiting for a position, and for the relay.
        Index("ix_events_unsequenced", "seq", postgresql_where=text("position IS NULL"),
              sqlite_where=text("position IS NULL")),
        Index("ix_events_unpublished", "position", postgresql_where=text("published_at IS NULL"),
              sqlite_where=text("published_at IS NULL")),
        Index("ix_events_type_position", "type", "position"),
        Index("ix_events_subject_position", "subject", "position"),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    position: Mapped[int | None] = mapped_column(BigInteger, default=None)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(200))
    time: Mapped[datetime] = mapped_column(UtcDateTime())
    data: Mapped[dict[str, Any]] = mapped_column(JsonType)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class ProcessedEvent(Base):
    """The idempotency ledger: a consumer records an event id in the same transaction as its effect."""

    __tablename__ = "processed_events"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(80), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class TrainingRun(Base):
    """One seed of an experiment's training; its checkpoint makes a redelivered message resume."""

    __tablename__ = "training_runs"
    __table_args__ = (Index("ix_training_runs_experiment", "experiment_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"))
    task_id: Mapped[str] = mapped_column(String(36))
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    timesteps: Mapped[int] = mapped_column(Integer, default=0)
    total_timesteps: Mapped[int | None] = mapped_column(Integer, default=None)
    episodes: Mapped[int] = mapped_column(Integer, default=0)
    episode_returns: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    episode_lengths: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    best_return: Mapped[float | None] = mapped_column(default=None)
    wall_time_s: Mapped[float | None] = mapped_column(default=None)
    model_id: Mapped[str | None] = mapped_column(String(36), default=None)
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    resumed_from: Mapped[int | None] = mapped_column(Integer, default=None)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class Model(Base):
    """A policy file in the artifact store: uploaded by a user or produced by a training run."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    source: Mapped[str] = mapped_column(String(20))  # "upload" | "training"
    status: Mapped[str] = mapped_column(String(20), default="uploaded")  # uploaded | validated | rejected
    format: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(500))  # relative to the artifacts directory
    env_name: Mapped[str | None] = mapped_column(String(200), default=None)
    activation: Mapped[str | None] = mapped_column(String(20), default=None)
    #: What the uploader stated beyond the activation: ``prefix``, ``action_scaling``, ``normalization``.
    options: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    shapes: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    task_id: Mapped[str | None] = mapped_column(String(36), default=None)
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id"), default=None)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    #: Set on a trained model once a later training of its experiment completed (storage/supersession.py).
    superseded_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    superseded_by_task_id: Mapped[str | None] = mapped_column(String(36), default=None)


class Evaluation(Base):
    """One evaluation of a model on an env (docs/architecture.md, "The evaluation protocol");
    ``result`` holds every metric."""

    __tablename__ = "evaluations"
    __table_args__ = (Index("ix_evaluations_model", "model_id"), Index("ix_evaluations_env_created", "env_name",
                                                                         "created_at"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    env_name: Mapped[str] = mapped_column(String(200))
    episodes: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(10), default="exact")
    status: Mapped[str] = mapped_column(String(20), default="queued")  # storage/evaluations.py
    task_id: Mapped[str | None] = mapped_column(String(36), default=None)
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id"), default=None)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"), default=None)
    mean_reward: Mapped[float | None] = mapped_column(default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonType, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


# -- webhooks (docs/webhooks.md) -----------------------------------------------------------------
class WebhookSubscription(Base):
    """A receiver's URL and what it wants. The secrets are kept in clear because every delivery
    signs with them; the API shows a secret only when it is created."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(500), default=None)
    event_types: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | paused | disabled
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100), default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    pause_after_failures: Mapped[int] = mapped_column(Integer, default=5)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class WebhookDelivery(Base):
    """One event for one subscription; unique on that pair so a repeated fan-out adds nothing.

    ``attempts`` doubles as the token a delivery message carries: a message whose token no longer
    matches (a duplicate, or one the sweep re-sent) finds nothing to do.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ux_webhook_deliveries_event_subscription", "event_id", "subscription_id", unique=True),
        Index("ix_webhook_deliveries_subscription", "subscription_id", "id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(100))
    message_id: Mapped[str] = mapped_column(String(40), unique=True)
    manual: Mapped[bool] = mapped_column(Boolean, default=False)  # a ping or a redelivery a user asked for
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|sending|delivered|failed|cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)  # of the schedule, since creation or redelivery
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class WebhookAttempt(Base):
    """One HTTP request of a delivery, as the delivery log shows it."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ux_webhook_attempts_delivery_number", "delivery_id", "number", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(BigId, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    latency_ms: Mapped[float] = mapped_column()
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


# -- API keys and the indexes scrape-time metrics rely on (docs/operations.md) ---------------------
class ApiKey(Base):
    """A key for the HTTP API. Only the sha256 of the secret is kept: the keys are long random
    strings, so a plain hash is enough to make a leaked table useless, and the secret is shown once,
    when the key is created."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(10))  # read | write | admin
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the secret's first characters, to recognise it in a list
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


# /metrics counts the tasks in flight on every scrape; without this, that is a scan of every task
# ever submitted.
Index("ix_tasks_status_kind", Task.status, Task.kind)
