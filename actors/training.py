"""The ``train`` actor: one seed of an experiment, really trained by the RL engine.

The message is acknowledged only after this function returns, so a worker killed mid-training
leaves it on the queue; the next delivery finds the run's checkpoint and resumes from it. The
processed-event ledger and the run's status make sure a run completes once, however often its
message arrives.

Every run is bounded: its hyperparameters by the agent's limits (refused when the experiment was
created), its steps by the engine's ``MAX_TOTAL_TIMESTEPS``, and its wall time by the
``training_time_limit`` setting, after which it stops, keeps its checkpoint and fails with
``training_time_limit``.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from actors.bus import transient
from actors.cancellation import TaskCancelled
from actors.handling import consumer
from storage import experiments, ledger, outbox, runs, tasks
from storage.artifacts import sha256_file
from storage.context import Storage
from storage.db import Database
from storage.events import Envelope, EvaluationRequested, TrainingProgressed, TrainingRequested
from storage.models import Environment, Evaluation, Experiment, Model, Task, TrainingRun
from storage.runs import RunStatus
from storage.settings import MAX_TRAINING_TIME_LIMIT_S

if TYPE_CHECKING:
    from actors.runtime import Runtime

log = logging.getLogger(__name__)

CONSUMER = "train"
PROGRESS_INTERVAL_S = 1.0
#: The share of a train task's ``fraction`` that its runs' training fills; the evaluations and the
#: aggregation that follow take it to 1.0 when the task succeeds, so it never reads 1.0 before.
TRAINING_SHARE = 0.9
#: The train actor's Dramatiq time limit: only a backstop for a run stuck outside the engine's
#: loops, since the training time limit (at most MAX_TRAINING_TIME_LIMIT_S) stops it cleanly first.
ACTOR_TIME_LIMIT_MS = int((MAX_TRAINING_TIME_LIMIT_S + 3600) * 1000)


class TrainingTimeLimit(Exception):
    """A run trained for its whole wall-time allowance (the ``training_time_limit`` setting)."""

    code = "training_time_limit"

    def __init__(self, limit_s: float, timesteps: int, total_timesteps: int) -> None:
        super().__init__(f"training stopped after its time limit of {limit_s:g} s (RESIMHUB_TRAINING_TIME_LIMIT), "
                         f"at {timesteps} of {total_timesteps} timesteps; its checkpoint is kept")
        self.details = {"limit_s": limit_s, "timesteps": timesteps, "total_timesteps": total_timesteps}


class _Stopper:
    """``should_stop`` for the engine: the episode budget, the wall-time limit, and the task's
    cancel (:class:`~actors.cancellation.TaskCancelled`, read at most every ``CANCEL_POLL_S``). The
    engine asks inside its inner loops too, at most every ``STOP_POLL_S``, so a cancel or the time
    limit takes effect in about half a second."""

    def __init__(self, storage: Storage, task_id: str, episode_budget: int | None, time_limit_s: float) -> None:
        self.episode_budget = episode_budget
        self.episodes = 0
        self.time_limit_s = time_limit_s
        self.deadline = time.monotonic() + time_limit_s
        self.timed_out = False
        self._cancelled = TaskCancelled(storage, task_id)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.value

    def __call__(self) -> bool:
        if self.episode_budget is not None and self.episodes >= self.episode_budget:
            return True
        if time.monotonic() >= self.deadline:
            self.timed_out = True
            return True
        return self._cancelled()


def run_fraction(timesteps: int, episodes: int, total: int, episode_budget: int | None) -> float:
    """How far one run's training is: its timesteps of the budget, or, with an episode budget, its
    episodes of that budget (the step allowance of an episode budget is an upper bound the run
    rarely reaches, so its steps would read low and then jump to the end)."""
    fraction = timesteps / total if total else 0.0
    if episode_budget:
        fraction = max(fraction, episodes / episode_budget)
    return min(max(fraction, 0.0), 1.0)


def _aggregate_progress(session, task: Task, total: int, episode_budget: int | None) -> dict:
    """The task's progress over all its runs, started or not.

    Every run of a task has the same budget (``total``, ``episode_budget``: the experiment's), so a
    run still queued counts as not started instead of being left out; leaving it out made the
    fraction fall when a later seed started. A completed run counts as fully trained.
    """
    rows = session.execute(
        select(TrainingRun.status, TrainingRun.timesteps, TrainingRun.episodes).where(TrainingRun.task_id == task.id)
    ).all()
    fractions = [1.0 if r.status == RunStatus.COMPLETED
                 else run_fraction(r.timesteps, r.episodes, total, episode_budget) for r in rows]
    previous = task.progress or {}
    fraction = TRAINING_SHARE * sum(fractions) / len(fractions) if fractions else 0.0
    return {**previous, "fraction": round(fraction, 4), "timesteps": int(sum(r.timesteps for r in rows)),
            "episodes": int(sum(r.episodes for r in rows)), "runs": len(rows),
            "runs_trained": sum(1 for r in rows if r.status == RunStatus.COMPLETED)}


class _Reporter:
    """Turns the engine's progress callbacks into throttled task updates and events."""

    def __init__(self, db: Database, experiment_id: int, run_id: int, task_id: str, stopper: _Stopper, total: int,
                 episode_budget: int | None) -> None:
        self.db = db
        self.experiment_id, self.run_id, self.task_id = experiment_id, run_id, task_id
        self.stopper = stopper
        self.total, self.episode_budget = total, episode_budget
        self._last = 0.0

    def __call__(self, progress) -> None:
        self.stopper.episodes = progress.episodes
        now = time.monotonic()
        if now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        latest = None if progress.latest_return is None else float(progress.latest_return)
        try:
            with self.db.session() as session:
                # The task's lock first: another run's update waits and then reads this one's counts,
                # so the task's progress is computed from every run's latest report.
                task = tasks.get(session, self.task_id, for_update=True)
                run = session.get(TrainingRun, self.run_id)
                if run is None or task is None or task.status in tasks.TERMINAL:
                    return
                run.timesteps, run.episodes = int(progress.timesteps), int(progress.episodes)
                session.flush()
                summary = _aggregate_progress(session, task, self.total, self.episode_budget)
                summary["latest_return"] = latest
                tasks.set_progress(session, task, summary)
                outbox.record(session, TrainingProgressed(
                    experiment_id=self.experiment_id, task_id=self.task_id, run_id=self.run_id,
                    timesteps=int(progress.timesteps), episodes=int(progress.episodes),
                    fraction=round(run_fraction(int(progress.timesteps), int(progress.episodes), self.total,
                                                self.episode_budget), 4),
                    latest_return=latest))
                session.commit()
        except Exception as exc:  # noqa: BLE001 - progress is best effort; training goes on
            log.warning("progress update for run %s failed: %s", self.run_id, exc)


def _budget(experiment: Experiment, environment: Environment | None, default_timesteps: int) -> tuple[int, int | None]:
    """Timesteps to give the engine, and an episode budget to stop at when one was asked for.

    An episode budget's step allowance (every episode as long as the time limit allows) is capped
    at the engine's ``MAX_TOTAL_TIMESTEPS``, like any other budget.
    """
    from actors.rl.agents.common import MAX_TOTAL_TIMESTEPS

    if experiment.total_timesteps:
        return experiment.total_timesteps, None
    if experiment.episodes:
        max_steps = ((environment.spec or {}).get("max_episode_steps") if environment else None) or 1000
        return min(experiment.episodes * int(max_steps), MAX_TOTAL_TIMESTEPS), experiment.episodes
    return default_timesteps, None


@consumer(CONSUMER)
def train(runtime: Runtime, envelope: Envelope) -> None:
    """Train one run, save its policy as a model and ask for its evaluation."""
    from actors.rl.agents import get_agent

    event: TrainingRequested = envelope.event()  # type: ignore[assignment]
    storage = runtime.storage
    with storage.db.session() as session:
        # The experiment's lock first (storage/experiments.py): a cancel committing meanwhile is
        # seen here, instead of this start overwriting the cancelled run, task and experiment.
        experiment = session.get(Experiment, event.experiment_id, with_for_update=True)
        run = session.get(TrainingRun, event.run_id)
        task = session.get(Task, event.task_id)
        if run is None or experiment is None or task is None:
            raise LookupError(f"run {event.run_id} of experiment {event.experiment_id} does not exist")
        if run.status in runs.FINISHED or task.status in tasks.TERMINAL:
            runs.cancel(session, run)  # its task ended without it; a finished run keeps its outcome
            ledger.mark(session, envelope.id, CONSUMER)
            session.commit()
            return
        environment = session.get(Environment, experiment.environment_id)
        agent = get_agent(experiment.agent)
        total, episode_budget = _budget(experiment, environment, agent.DEFAULT_TIMESTEPS)
        checkpoint = storage.artifacts.checkpoint_path(run.id)
        resumed_from = run.timesteps if checkpoint.exists() else None
        if resumed_from is not None:
            log.info("training run %s resumes from its checkpoint (attempt %d; last reported at %d of %d timesteps)",
                     run.id, run.attempts + 1, run.timesteps, total)
        runs.start(session, run, total_timesteps=total, resumed_from=resumed_from)
        experiments.start_training(session, experiment)
        tasks.mark_running(session, task)
        session.commit()
        env_name, hyperparams, seed = experiment.env_name, dict(experiment.hyperparams or {}), run.seed
        agent_name, exp_id = experiment.agent, experiment.id

    time_limit_s = runtime.settings.training_time_limit
    stopper = _Stopper(storage, event.task_id, episode_budget, time_limit_s)
    reporter = _Reporter(storage.db, exp_id, event.run_id, event.task_id, stopper, total, episode_budget)
    try:
        result = agent.train(env_name, hyperparams, seed=seed, total_timesteps=total, progress=reporter,
                             checkpoint_path=str(checkpoint), checkpoint_every=max(1000, total // 20),
                             should_stop=stopper)
    except Exception as exc:
        if transient(exc):
            raise  # the checkpoint stays; the retried message resumes from it
        log.exception("training run %s failed", event.run_id)
        _record_failure(storage, envelope, event, exc)
        return

    if result.stopped and stopper.timed_out and not stopper.cancelled:
        log.warning("training run %s reached its time limit of %g s", event.run_id, time_limit_s)
        _record_failure(storage, envelope, event, TrainingTimeLimit(time_limit_s, int(result.timesteps), total),
                        code=TrainingTimeLimit.code, result=result)
        return
    if stopper.cancelled:
        with storage.db.session() as session:
            session.get(Experiment, event.experiment_id, with_for_update=True)  # the lock first, as everywhere
            runs.cancel(session, session.get(TrainingRun, event.run_id), trained=result)
            ledger.mark(session, envelope.id, CONSUMER)
            session.commit()
        return
    if result.resumed_from is not None:
        log.info("training run %s resumed at %d timesteps and finished at %d of %d", event.run_id,
                 result.resumed_from, result.timesteps, total)
    _record_success(storage, envelope, event, result, agent_name, env_name, checkpoint, (total, episode_budget))


def _record_failure(storage: Storage, envelope: Envelope, event: TrainingRequested, exc: Exception, *,
                    code: str = "training_failed", result=None) -> None:
    """Fail the run, its task and its experiment; ``result`` is what a stopped run trained."""
    error = tasks.error_document(exc, code=code)
    with storage.db.session() as session:
        # The experiment's lock first (storage/experiments.py): runs failing at once emit one ExperimentFailed.
        experiment = session.get(Experiment, event.experiment_id, with_for_update=True)
        runs.fail(session, session.get(TrainingRun, event.run_id), error, trained=result)
        tasks.fail(session, session.get(Task, event.task_id), error)
        experiments.fail(session, experiment, task_id=event.task_id, stage="training", error=error,
                         run_id=event.run_id)
        ledger.mark(session, envelope.id, CONSUMER)
        session.commit()


def _record_success(storage: Storage, envelope: Envelope, event: TrainingRequested, result, agent_name: str,
                    env_name: str, checkpoint: Path, budget: tuple[int, int | None]) -> None:
    from actors.rl.policy import save_policy

    store = storage.artifacts
    model_id = str(uuid.uuid4())
    relative = store.model_path(model_id)
    target = store.path(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_policy(result.policy, target, {
        "env_id": env_name, "agent": agent_name, "training_config": result.config,
        "experiment_id": event.experiment_id, "run_id": event.run_id, "seed": event.seed,
        "timesteps": result.timesteps,
    })
    with storage.db.session() as session:
        # The experiment's lock first (storage/experiments.py): a cancel, a failure or a duplicate
        # delivery that got here first has committed by now and is seen below.
        experiment = session.get(Experiment, event.experiment_id, with_for_update=True)
        run = session.get(TrainingRun, event.run_id)
        if run.status in runs.FINISHED:  # a duplicate delivery completed it first, or a cancel came first
            store.delete(relative)
            ledger.mark(session, envelope.id, CONSUMER)
            session.commit()
            return
        session.add(Model(
            id=model_id, name=f"{experiment.name} seed {event.seed}", source="training", status="validated",
            format="resimhub-npz", sha256=sha256_file(target), size_bytes=target.stat().st_size, path=relative,
            env_name=env_name, shapes={"policy": result.policy.describe()}, task_id=event.task_id,
            experiment_id=event.experiment_id, run_id=event.run_id,
        ))
        session.flush()
        runs.complete(session, run, model_id=model_id, result=result)  # records TrainingCompleted
        evaluation = Evaluation(id=str(uuid.uuid4()), model_id=model_id, env_name=env_name,
                                episodes=experiment.eval_episodes, seed=experiment.eval_seed, mode="exact",
                                task_id=event.task_id, experiment_id=experiment.id, run_id=run.id)
        session.add(evaluation)
        session.flush()
        task = tasks.get(session, event.task_id, for_update=True)
        if task.status not in tasks.TERMINAL:
            # The throttled reporter may have last written well before the end; record the final counts.
            tasks.set_progress(session, task, {**_aggregate_progress(session, task, *budget),
                                               "latest_return": run.episode_returns[-1] if run.episode_returns
                                               else None})
        outbox.record(session, EvaluationRequested(
            evaluation_id=evaluation.id, task_id=event.task_id, model_id=model_id, env_name=env_name,
            episodes=evaluation.episodes, seed=evaluation.seed, mode="exact", experiment_id=experiment.id,
            run_id=run.id))
        if runs.all_trained(session, event.task_id):  # the last seed to finish: only evaluations remain
            experiments.start_evaluating(session, experiment)
        ledger.mark(session, envelope.id, CONSUMER)
        session.commit()
    checkpoint.unlink(missing_ok=True)
