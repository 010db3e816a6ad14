"""What happens when an actor gives up on a message (retries exhausted, time limit, a bug).

Dramatiq dead-letters the message and sends it here (``on_retry_exhausted``), so the task a client
is polling ends ``failed`` with a reason instead of staying ``running`` forever.
"""

from __future__ import annotations

import logging

from actors.runtime import current
from storage import ledger, tasks
from storage.models import Evaluation, Experiment, TrainingRun, utcnow

log = logging.getLogger(__name__)


def record_give_up(message: dict, retry_info: dict) -> None:
    actor_name = message.get("actor_name", "?")
    args = message.get("args") or []
    event = args[0] if args and isinstance(args[0], dict) else {}
    data = event.get("data") or {}
    reason = (message.get("options") or {}).get("traceback") or ""
    last_line = reason.strip().splitlines()[-1] if reason.strip() else "no traceback"
    with current().storage.db.session() as session:
        if event.get("id") and ledger.seen(session, event["id"], actor_name):
            return  # another delivery did the work (e.g. lost a race on the ledger row)
        error = {"type": "RetriesExhausted", "code": "gave_up", "retryable": False, "celery_type": "RuntimeError",
                 "message": f"{actor_name} gave up after {retry_info.get('retries', 0)} retries: {last_line}"[:1000]}
        if data.get("run_id") is not None and actor_name == "train":
            run = session.get(TrainingRun, data["run_id"])
            if run is not None and run.status in ("queued", "running"):
                run.status, run.error, run.finished_at = "failed", error, utcnow()
        if data.get("evaluation_id"):
            evaluation = session.get(Evaluation, data["evaluation_id"])
            if evaluation is not None and evaluation.status in ("queued", "running"):
                evaluation.status, evaluation.error, evaluation.finished_at = "failed", error, utcnow()
        if data.get("experiment_id") is not None and actor_name in ("train", "evaluate", "aggregate"):
            experiment = session.get(Experiment, data["experiment_id"])
            if experiment is not None and experiment.status not in ("completed", "cancelled"):
                experiment.status = "failed"
        task = tasks.get(session, data["task_id"]) if data.get("task_id") else None
        if task is not None:
            tasks.fail(session, task, error)
        session.commit()
    log.error("%s gave up on event %s: %s", actor_name, event.get("id"), last_line)
