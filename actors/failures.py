"""What happens when an actor gives up on a message (retries exhausted, time limit, a bug).

Dramatiq dead-letters the message and sends it here (``on_retry_exhausted``), so the task a client
is polling ends ``failed`` with a reason instead of staying ``running`` forever. The failure goes
through the outbox like any other, in the same transaction: ``TrainingFailed`` for a run the
``train`` actor gave up on, ``EvaluationFailed`` for an evaluation (which ``aggregate`` then folds
into its experiment, as it does an evaluation that failed on its own), and ``ExperimentFailed``
once for the experiment (:mod:`storage.experiments`), so the event log and webhooks see it too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from storage import evaluations, experiments, ledger, runs, tasks
from storage.models import Evaluation, Experiment, TrainingRun

if TYPE_CHECKING:
    from actors.runtime import Runtime

log = logging.getLogger(__name__)

#: The actors that own a step of some task. Giving up on delivering a webhook (``fan_out_webhooks``
#: sees every event, including ones that carry a ``task_id``) fails nobody's task.
STEP_ACTORS = frozenset({"verify_environment", "validate_model", "train", "evaluate", "aggregate"})
#: The steps of an experiment's training task, and the stage each one fails the experiment at.
EXPERIMENT_STAGES = {"train": "training", "evaluate": "evaluation", "aggregate": "aggregation"}


def record_give_up(runtime: Runtime, message: dict, retry_info: dict) -> None:
    actor_name = message.get("actor_name", "?")
    args = message.get("args") or []
    event = args[0] if args and isinstance(args[0], dict) else {}
    data = event.get("data") or {}
    reason = (message.get("options") or {}).get("traceback") or ""
    last_line = reason.strip().splitlines()[-1] if reason.strip() else "no traceback"
    if actor_name not in STEP_ACTORS:
        log.error("%s gave up on %s: %s", actor_name, event.get("id") or args, last_line)
        return
    with runtime.storage.db.session() as session:
        if event.get("id") and ledger.seen(session, event["id"], actor_name):
            return  # another delivery did the work (e.g. lost a race on the ledger row)
        error = {"type": "RetriesExhausted", "code": "gave_up", "retryable": False, "celery_type": "RuntimeError",
                 "message": f"{actor_name} gave up after {retry_info.get('retries', 0)} retries: {last_line}"[:1000]}
        stage = EXPERIMENT_STAGES.get(actor_name)
        # The experiment's lock first, before any other row changes: see storage/experiments.py.
        experiment = None
        if stage is not None and data.get("experiment_id") is not None:
            experiment = session.get(Experiment, data["experiment_id"], with_for_update=True)
        run_id = data.get("run_id")
        if run_id is not None and actor_name == "train":
            run = session.get(TrainingRun, run_id)
            if run is not None:
                runs.fail(session, run, error)  # TrainingFailed, unless the run already finished
        if data.get("evaluation_id") and actor_name == "evaluate":
            evaluation = session.get(Evaluation, data["evaluation_id"], with_for_update=True)
            if evaluation is not None:
                evaluations.fail(session, evaluation, error)  # EvaluationFailed, unless it already finished
        task = tasks.get(session, data["task_id"]) if data.get("task_id") else None
        if task is not None:
            tasks.fail(session, task, error)
        if experiment is not None:
            experiments.fail(session, experiment, task_id=data.get("task_id"), stage=stage, error=error,
                             run_id=run_id)
        session.commit()
    log.error("%s gave up on event %s: %s", actor_name, event.get("id"), last_line)
