"""Evaluation runs of stored models, the recent-results feed and model comparisons.

A run request only records the ``Evaluation`` row, its task and an ``EvaluationRequested`` event;
the ``evaluate`` actor does the episodes. Reading results and comparing them is done here, because
it is a database read plus a little statistics, with no environment involved.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from actors.rl import stats
from api.errors import Invalid, NotFound, pydantic_details
from api.responses import accepted
from api.schemas import TaskPublic
from api.schemas_benchmark import MAX_COMPARE, EvaluationCreate
from api.services import models as model_service
from api.services.catalog import require_known_env
from storage import outbox, tasks
from storage.evaluations import EvaluationStatus
from storage.events import EvaluationRequested, rfc3339
from storage.models import Evaluation, Model

#: How /benchmark/compare orders models. The IQM ignores the best and worst quarter of episodes, so
#: one lucky or unlucky episode cannot reorder models; equal IQMs (common when returns saturate,
#: e.g. CartPole at 500) go to the more consistent model, by mean − std.
RANKING = "iqm of episode returns, descending; ties broken by score = mean - std, descending"
#: Bootstrap resamples for the IQM interval in comparisons: enough for two-digit stability, cheap
#: enough that comparing the maximum number of 10 000-episode evaluations stays interactive.
COMPARE_RESAMPLES = 1000


def parse_run(payload: Mapping[str, Any]) -> EvaluationCreate:
    """Validate a run request from JSON or form fields (both arrive here as a mapping)."""
    if not isinstance(payload, Mapping):
        raise Invalid("the request body must be a JSON object or form fields",
                      details=[{"field": None, "message": "expected an object", "type": "dict_type"}])
    try:
        return EvaluationCreate.model_validate(dict(payload))
    except ValidationError as exc:
        raise Invalid("the request is not valid", details=pydantic_details(exc.errors())) from None


def form_payload(items: Mapping[str, Any]) -> dict[str, Any]:
    """Form fields as a run payload: empty fields count as absent, as an HTML form sends them."""
    out = {}
    for key, value in items.items():
        if not isinstance(value, str):
            raise Invalid(f"form field {key!r} must be a plain value, not a file",
                          details=[{"field": key, "message": "files are not accepted here", "type": "string_type"}])
        if value.strip() != "":
            out[key] = value
    return out


def submit(session: Session, body: EvaluationCreate) -> Evaluation:
    """Queue an evaluation of a stored model; the model may still be awaiting validation (the actor
    reads the file with the same safe loader either way) but not rejected."""
    model = model_service.get(session, body.model_id)
    if model.status == "rejected":
        raise Invalid(f"model {model.id} was rejected and cannot be evaluated: {model.reason}",
                      code="model_rejected", details={"model_id": model.id, "reason": model.reason})
    env_name = body.env_name or model.env_name
    if env_name is None:
        raise Invalid("env_name is required: the model was uploaded without one", code="validation_error",
                      details=[{"field": "env_name", "message": "required", "type": "missing"}])
    env_name = require_known_env(env_name)
    evaluation = Evaluation(id=str(uuid.uuid4()), model_id=model.id, env_name=env_name, episodes=body.episodes,
                            seed=body.seed, mode=body.mode, status=EvaluationStatus.QUEUED)
    session.add(evaluation)
    task = tasks.create(session, "evaluate", subject=f"evaluations/{evaluation.id}")
    evaluation.task_id = task.id
    outbox.record(session, EvaluationRequested(
        evaluation_id=evaluation.id, task_id=task.id, model_id=model.id, env_name=env_name,
        episodes=body.episodes, seed=body.seed, mode=body.mode))
    session.commit()
    return evaluation


def submission_answer(evaluation: Evaluation, task: TaskPublic | None) -> tuple[int, dict, dict[str, str]]:
    """Status, body and headers for a run request: 202 to poll, or 200 with the outcome when the
    client waited (``task`` is what the wait saw) and the task finished in time."""
    body, headers = accepted(evaluation.task_id, evaluation_id=evaluation.id, model_id=evaluation.model_id,
                             env_name=evaluation.env_name, episodes=evaluation.episodes, seed=evaluation.seed,
                             mode=evaluation.mode)
    if task is None:
        return 202, body, headers
    body["status"] = task.status
    body["progress"] = task.progress
    if task.status in tasks.TERMINAL:
        body["result"] = task.result
        body["error"] = task.error
        return 200, body, {"Location": headers["Location"]}
    return 202, body, headers


def get(session: Session, evaluation_id: str) -> Evaluation:
    evaluation = session.get(Evaluation, evaluation_id)
    if evaluation is None:
        raise NotFound(f"evaluation {evaluation_id} does not exist", details={"evaluation_id": evaluation_id})
    return evaluation


_RECENT_FIELDS = ("std_reward", "median_reward", "latency_ms", "iqm", "score", "evaluated_at")


def recent(session: Session, *, limit: int = 20, env_name: str | None = None) -> list[dict]:
    """Completed evaluations, newest first, with the summary fields only.

    The summary is read out of the JSON result in SQL so that a page of 10 000-episode evaluations
    does not load every per-episode return.
    """
    result = Evaluation.result
    columns = [result[name].as_string() if name == "evaluated_at" else result[name].as_float()
               for name in _RECENT_FIELDS]
    query = (select(Evaluation.id, Evaluation.model_id, Evaluation.env_name, Evaluation.mean_reward,
                    Evaluation.episodes, Evaluation.status, Evaluation.seed, Evaluation.mode,
                    Evaluation.experiment_id, Evaluation.run_id, Evaluation.finished_at, *columns,
                    result["assumptions"].as_json())
             .where(Evaluation.status == EvaluationStatus.COMPLETED)
             .order_by(Evaluation.finished_at.desc(), Evaluation.created_at.desc())
             .limit(limit))
    if env_name:
        query = query.where(Evaluation.env_name == env_name)
    out = []
    for row in session.execute(query):
        extra = dict(zip(_RECENT_FIELDS, row[11:11 + len(_RECENT_FIELDS)], strict=True))
        out.append({
            "evaluation_id": row.id,
            "model_id": row.model_id,
            "env_name": row.env_name,
            "mean_reward": row.mean_reward,
            "std_reward": extra["std_reward"],
            "median_reward": extra["median_reward"],
            "latency_ms": extra["latency_ms"],
            "total_episodes": row.episodes,
            "status": row.status,
            "evaluated_at": extra["evaluated_at"] or (rfc3339(row.finished_at) if row.finished_at else None),
            "seed": row.seed,
            "mode": row.mode,
            "iqm": extra["iqm"],
            "score": extra["score"],
            "experiment_id": row.experiment_id,
            "run_id": row.run_id,
            "assumptions": row[-1] or [],
        })
    return out


def parse_model_ids(raw: str) -> list[str]:
    ids = list(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    if len(ids) < 2:
        raise Invalid("model_ids needs at least two distinct comma-separated model ids",
                      details=[{"field": "model_ids", "message": "at least two ids", "type": "too_short"}])
    if len(ids) > MAX_COMPARE:
        raise Invalid(f"at most {MAX_COMPARE} models can be compared at once",
                      details=[{"field": "model_ids", "message": f"at most {MAX_COMPARE} ids", "type": "too_long"}])
    return ids


def _latest_completed(session: Session, model_id: str, env_name: str) -> Evaluation | None:
    return session.scalars(
        select(Evaluation)
        .where(Evaluation.model_id == model_id, Evaluation.env_name == env_name,
               Evaluation.status == EvaluationStatus.COMPLETED)
        .order_by(Evaluation.finished_at.desc(), Evaluation.created_at.desc())
        .limit(1)
    ).first()


def compare(session: Session, model_ids: list[str], env_name: str | None) -> dict:
    """Rank models by their latest completed evaluation on one env and test their differences.

    Ids that name no model are listed in ``unknown_model_ids`` and the others compared, as a client
    of the original API expects; only when none is known is the answer a 404.
    """
    found = {m.id: m for m in session.scalars(select(Model).where(Model.id.in_(model_ids)))}
    unknown = [m for m in model_ids if m not in found]
    if len(unknown) == len(model_ids):
        raise NotFound(f"unknown model ids: {', '.join(unknown)}", details={"unknown_model_ids": unknown})
    model_ids = [m for m in model_ids if m in found]
    if env_name is None:
        declared = {found[m].env_name for m in model_ids}
        if len(declared) != 1 or None in declared:
            raise Invalid("env is required: the models were not all uploaded for the same environment",
                          details=[{"field": "env", "message": "required", "type": "missing"}])
        env_name = declared.pop()
    env_name = require_known_env(env_name)
    latest = {m: _latest_completed(session, m, env_name) for m in model_ids}
    missing = [m for m, ev in latest.items() if ev is None]
    if missing:
        raise Invalid(f"no completed evaluation on {env_name} for: {', '.join(missing)}",
                      code="not_evaluated", details={"env_name": env_name, "model_ids": missing})
    return {**rank(env_name, {m: (found[m], latest[m]) for m in model_ids}), "unknown_model_ids": unknown}


def rank(env_name: str, entries: dict[str, tuple[Model, Evaluation]]) -> dict:
    rows = []
    returns: dict[str, list[float]] = {}
    for model_id, (model, evaluation) in entries.items():
        result = evaluation.result or {}
        values = [float(r) for r in result.get("returns") or []]
        returns[model_id] = values
        centre = stats.iqm(values)
        low, high = stats.bootstrap_ci(values, stats.iqm, n_resamples=COMPARE_RESAMPLES, seed=evaluation.seed)
        rows.append({
            "model_id": model_id,
            "name": model.name,
            "superseded": model.superseded_at is not None,
            # What the hub assumed to read the file, beside the score it produced (docs/models.md).
            "assumptions": result.get("assumptions", (model.manifest or {}).get("assumptions", [])),
            "evaluation_id": evaluation.id,
            "episodes": evaluation.episodes,
            "seed": evaluation.seed,
            "mode": evaluation.mode,
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "median": float(np.median(values)),
            "min": float(np.min(values)),
            "max": float(np.max(values)),
            "iqm": centre,
            "iqm_ci95": [low, high],
            "ci95": result.get("ci95"),
            "score": float(np.mean(values) - np.std(values)),
            "evaluated_at": result.get("evaluated_at"),
        })
    rows.sort(key=lambda r: (-r["iqm"], -r["score"], r["model_id"]))
    for i, row in enumerate(rows, start=1):
        row["rank"] = i
    by_id = {r["model_id"]: r for r in rows}
    pairs = []
    for first, second in itertools.combinations(rows, 2):
        a, b = first["model_id"], second["model_id"]
        test = stats.significance_test(returns[a], returns[b])
        # Exact-mode runs with the same seed and length start every episode from the same state, so
        # their episodes are matched pairs; that is worth knowing when reading the tests.
        paired = (first["mode"] == second["mode"] == "exact" and first["seed"] == second["seed"]
                  and first["episodes"] == second["episodes"])
        pairs.append({
            "a": a,
            "b": b,
            "paired_episodes": paired,
            "probability_of_improvement": test["probability_of_improvement"],
            "mean_difference": test["mean_difference"],
            "iqm_difference": by_id[a]["iqm"] - by_id[b]["iqm"],
            "welch_t": test["welch_t"],
            "mann_whitney_u": test["mann_whitney_u"],
        })
    return {"env_name": env_name, "ranking": RANKING, "models": rows, "pairs": pairs}
