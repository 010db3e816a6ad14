"""Evaluating a stored model: N greedy, seeded episodes, summarised as
docs/architecture.md, "The evaluation protocol" says.

Two producers ask for evaluations and they differ in who owns the task. A ``/benchmark/run``
request creates a task of its own, which this actor finishes. A training run's evaluation shares
the experiment's task, which the aggregate actor finishes once every seed is in; for those this
actor only stores the result on the ``Evaluation`` row and emits the event.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from actors.bus import transient
from actors.cancellation import TaskCancelled
from actors.handling import consumer
from actors.sandboxing import loader_options, open_model
from storage import evaluations, ledger, tasks
from storage.db import Database
from storage.evaluations import EvaluationStatus
from storage.events import Envelope, EvaluationRequested, rfc3339
from storage.models import Evaluation, Model, utcnow

if TYPE_CHECKING:
    from actors.runtime import Runtime

log = logging.getLogger(__name__)

CONSUMER = "evaluate"
#: Task progress is written at most this often; every write is a database transaction and a Redis
#: publish, and a poller gains nothing from more than one update a second.
PROGRESS_INTERVAL_S = 1.0


class _Progress:
    """Writes ``{"fraction", "episodes", "total_episodes"}`` to the task, throttled; best effort,
    because a lost progress update must never cost the evaluation it describes."""

    def __init__(self, db: Database, task_id: str, interval: float | None = None) -> None:
        self.db = db
        self.task_id = task_id
        self.interval = PROGRESS_INTERVAL_S if interval is None else interval
        self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.interval or done >= total:
            return
        self.last = now
        try:
            with self.db.session() as session:
                task = tasks.get(session, self.task_id)
                if task is not None and task.status not in tasks.TERMINAL:
                    tasks.set_progress(session, task, {"fraction": done / total, "episodes": done,
                                                       "total_episodes": total})
                    session.commit()
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            log.warning("progress update for task %s failed: %s", self.task_id, exc)


def _result(event: EvaluationRequested, model_sha256: str, model_format: str, run: dict[str, Any]) -> dict:
    """The stored result: the summary fields clients of the original API read, every metric of the
    evaluation protocol under the engine's own names, and what is needed to reproduce the run."""
    exact = run["mode"] == "exact"
    return {
        "evaluation_id": event.evaluation_id,
        "model_id": event.model_id,
        "env_name": event.env_name,
        "mean_reward": run["mean"],
        "std_reward": run["std"],
        "median_reward": run["median"],
        "latency_ms": run["latency_ms"],
        "total_episodes": run["episodes"],
        "status": EvaluationStatus.COMPLETED.value,
        "evaluated_at": rfc3339(utcnow()),
        **run,
        "seeds": [run["seed"] + i for i in range(run["episodes"])] if exact else [run["seed"]],
        "seeding": ("episode i is reset with seed + i" if exact
                    else "the vector environment is reset once with seed; episodes are not tied to seeds"),
        "model_sha256": model_sha256,
        "model_format": model_format,
        "experiment_id": event.experiment_id,
        "run_id": event.run_id,
    }


def _run(runtime: Runtime, event: EvaluationRequested, job: dict[str, Any], progress: _Progress | None) -> dict:
    from actors.rl.errors import ModelFileError
    from actors.rl.evaluation import evaluate as run_episodes
    from actors.rl.modelfiles import Limits

    if job["status"] is None:
        raise ModelFileError("model_not_found", f"model {event.model_id} does not exist")
    if job["status"] == "rejected":
        raise ModelFileError("model_rejected", f"model {event.model_id} was rejected: {job['reason']}")
    storage = runtime.storage
    options = {**job["options"], "env_id": event.env_name}
    cancelled = TaskCancelled(storage, event.task_id)
    with open_model(runtime.sandbox, storage, job["path"], options, cancelled=cancelled,
                    trained_here=job["source"] == "training",
                    max_bytes=max(storage.settings.max_upload_bytes, Limits().max_bytes)) as policy:
        loaded = policy.loaded
        if job["sha256"] and loaded["sha256"] != job["sha256"]:
            raise ModelFileError("sha256_mismatch", f"the file of model {event.model_id} changed on disk since it "
                                 f"was stored (sha256 {loaded['sha256']}, expected {job['sha256']})")
        run = run_episodes(policy, event.env_name, event.episodes, event.seed, mode=event.mode,
                           progress=progress).to_dict()
    result = _result(event, loaded["sha256"], loaded["format"], run)
    # Beside every score: what the hub had to assume to read the file (docs/models.md).
    result["assumptions"] = (loaded.get("manifest") or {}).get("assumptions", [])
    result["sandboxed"] = job["source"] != "training"
    return result


@consumer(CONSUMER)
def evaluate(runtime: Runtime, envelope: Envelope) -> None:
    """Run the requested episodes and store every metric on the evaluation (and the task, if ours)."""
    event: EvaluationRequested = envelope.event()  # type: ignore[assignment]
    db = runtime.storage.db
    owns_task = event.experiment_id is None
    with db.session() as session:
        evaluation = session.get(Evaluation, event.evaluation_id)
        if evaluation is None or not evaluations.start(session, evaluation):
            return
        model = session.get(Model, event.model_id)
        task = tasks.get(session, event.task_id)
        if owns_task and task is not None and task.status == tasks.TaskStatus.QUEUED:
            tasks.mark_running(session, task)
        session.commit()
        job = {"status": model.status if model else None, "reason": model.reason if model else None,
               "path": model.path if model else None, "sha256": model.sha256 if model else None,
               "options": loader_options(model) if model else {}, "source": model.source if model else None}

    progress = _Progress(db, event.task_id) if owns_task else None
    result, error = None, None
    try:
        result = _run(runtime, event, job, progress)
    except Exception as exc:  # noqa: BLE001 - deterministic failures are recorded, never retried
        if transient(exc):
            raise
        error = tasks.error_document(exc, code=getattr(exc, "code", None) or "evaluation_error")
        if isinstance(exc, FileNotFoundError):
            error["code"] = "model_file_missing"
        if error["celery_type"] == "Exception":
            error["celery_type"] = "ValueError"
        error["retryable"] = False

    with db.session() as session:
        # The evaluation's lock, then our task's: a duplicate delivery finishing at the same time, a
        # give-up, or a cancel of the task, is seen here rather than overwritten.
        evaluation = session.get(Evaluation, event.evaluation_id, with_for_update=True)
        task = tasks.get(session, event.task_id, for_update=owns_task)
        if result is not None:
            finished = evaluations.complete(session, evaluation, result)
            if finished and owns_task and task is not None and task.status not in tasks.TERMINAL:
                tasks.succeed(session, task, result)
        else:
            finished = evaluations.fail(session, evaluation, error)
            if finished and owns_task and task is not None:
                tasks.fail(session, task, error)
        ledger.mark(session, envelope.id, CONSUMER)
        session.commit()
