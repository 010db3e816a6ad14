"""The transitions of experiments, training runs and evaluations (storage/experiments.py,
storage/runs.py, storage/evaluations.py): the legal ones record their events in the caller's
transaction, and the races they guard end with the first outcome kept and nothing emitted twice."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from storage import evaluations, experiments, runs, tasks
from storage.context import open_storage
from storage.evaluations import EvaluationStatus
from storage.experiments import ExperimentStateError, ExperimentStatus
from storage.migrate import upgrade
from storage.models import Environment, Evaluation, EventRecord, Experiment, Model
from storage.runs import RunStateError, RunStatus
from tests.support.hubs import settings_for
from tests.support.services import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    if request.param == "sqlite":
        settings = settings_for(tmp_path)
        upgrade(settings)
        opened = open_storage(settings)
        yield opened
        opened.close()
        return
    with fresh_postgres_database() as url:
        settings = settings_for(tmp_path, RESIMHUB_DATABASE_URL=url)
        upgrade(settings)
        opened = open_storage(settings)
        yield opened
        opened.close()


def _experiment(session, seeds=(0, 1)) -> Experiment:
    env = Environment(env_name=f"CartPole-v1-{uuid.uuid4().hex[:6]}", status="verified")
    session.add(env)
    session.flush()
    experiment = Experiment(name="e", environment_id=env.id, env_name=env.env_name, agent="CEM", seeds=list(seeds))
    session.add(experiment)
    session.flush()
    return experiment


def _train(session, experiment):
    task = tasks.create(session, "train", subject=f"experiments/{experiment.id}")
    task_runs = runs.request(session, experiment, task.id)
    experiments.queue(session, experiment)
    return task, task_runs


def _trained(timesteps=10):
    return SimpleNamespace(timesteps=timesteps, episodes=2, episode_returns=[1.0, 3.0], episode_lengths=[5, 5],
                           wall_time_s=0.5, resumed_from=None)


def _types(session) -> list[str]:
    return list(session.scalars(select(EventRecord.type).order_by(EventRecord.seq)))


def _evaluation(session, experiment, run) -> Evaluation:
    model = Model(id=str(uuid.uuid4()), source="training", status="validated", format="resimhub-npz",
                  sha256="0" * 64, size_bytes=1, path="models/x", experiment_id=experiment.id, run_id=run.id,
                  task_id=run.task_id)
    session.add(model)
    session.flush()
    evaluation = Evaluation(id=str(uuid.uuid4()), model_id=model.id, env_name=experiment.env_name, episodes=2,
                            seed=0, task_id=run.task_id, experiment_id=experiment.id, run_id=run.id)
    session.add(evaluation)
    session.flush()
    return evaluation


def test_an_experiment_goes_through_its_states_once_per_training(storage):
    with storage.db.session() as session:
        experiment = _experiment(session)
        assert experiment.status == ExperimentStatus.CREATED
        task, (first, second) = _train(session, experiment)
        assert experiment.status == ExperimentStatus.QUEUED and {first.status, second.status} == {RunStatus.QUEUED}
        with pytest.raises(ExperimentStateError):
            experiments.queue(session, experiment)  # a training is under way

        for run in (first, second):
            runs.start(session, run, total_timesteps=10, resumed_from=None)
            experiments.start_training(session, experiment)
        assert experiment.status == ExperimentStatus.TRAINING and first.attempts == 1

        runs.complete(session, first, model_id="m0", result=_trained())
        session.flush()
        assert not runs.all_trained(session, task.id)
        runs.complete(session, second, model_id="m1", result=_trained())
        session.flush()
        assert runs.all_trained(session, task.id) and experiments.start_evaluating(session, experiment)
        assert experiment.status == ExperimentStatus.EVALUATING and first.best_return == 3.0
        session.commit()

        assert _types(session) == ["resimhub.training.requested"] * 2 + ["resimhub.training.started"] * 2 + [
            "resimhub.training.completed"] * 2
        with pytest.raises(RunStateError):  # a duplicate delivery cannot complete a run twice
            runs.complete(session, first, model_id="m2", result=_trained())
        assert runs.cancel(session, first) is None and runs.fail(session, first, {"code": "x"}) is None
        assert first.status == RunStatus.COMPLETED and first.model_id == "m0"
        assert not experiments.cancel(session, SimpleNamespace(status=ExperimentStatus.COMPLETED))


def test_a_cancel_keeps_what_already_finished_and_a_late_failure_changes_nothing(storage):
    with storage.db.session() as session:
        experiment = _experiment(session)
        task, (done, running) = _train(session, experiment)
        for run in (done, running):
            runs.start(session, run, total_timesteps=10, resumed_from=None)
        experiments.start_training(session, experiment)
        runs.complete(session, done, model_id="m0", result=_trained())
        session.commit()

        tasks.cancel(session, task)
        cancelled = [runs.cancel(session, r) for r in (done, running)]
        assert cancelled[0] is None and cancelled[1] is not None  # one TrainingCancelled, for the running run
        assert experiments.cancel(session, experiment) and experiment.status == ExperimentStatus.CANCELLED
        assert running.finished_at is None  # its worker records when it stopped ...
        runs.cancel(session, running, trained=_trained(timesteps=7))
        assert running.finished_at is not None and running.timesteps == 7  # ... here
        session.commit()

        # Failures arriving after the cancel: the run stays cancelled, no TrainingFailed, no ExperimentFailed.
        assert runs.fail(session, running, {"code": "training_failed", "message": "late"}) is None
        assert experiments.fail(session, experiment, task_id=task.id, stage="training", error={"message": "late"}) \
            is None
        session.commit()
        assert running.status == RunStatus.CANCELLED and experiment.status == ExperimentStatus.CANCELLED
        assert _types(session).count("resimhub.training.cancelled") == 1
        assert "resimhub.training.failed" not in _types(session)


def test_a_failure_of_an_earlier_training_does_not_fail_the_current_one(storage):
    with storage.db.session() as session:
        experiment = _experiment(session, seeds=(0,))
        old_task, (old_run,) = _train(session, experiment)
        tasks.cancel(session, old_task)
        runs.cancel(session, old_run)
        experiments.cancel(session, experiment)
        session.commit()
        new_task, _ = _train(session, experiment)  # trained again
        session.commit()

        stale = experiments.fail(session, experiment, task_id=old_task.id, stage="evaluation",
                                 error={"code": "evaluation_failed", "message": "old"})
        assert stale is None and experiment.status == ExperimentStatus.QUEUED
        current = experiments.fail(session, experiment, task_id=new_task.id, stage="training",
                                   error={"code": "training_failed", "message": "now", "traceback": "..."})
        assert current is not None and experiment.status == ExperimentStatus.FAILED
        assert "traceback" not in current.data["error"]
        assert experiments.fail(session, experiment, task_id=new_task.id, stage="training", error={}) is None


def test_complete_refuses_an_experiment_that_is_not_under_way(storage):
    with storage.db.session() as session:
        experiment = _experiment(session, seeds=(0,))
        with pytest.raises(ExperimentStateError):
            experiments.complete(session, experiment, task_id="t", results={})
        assert not experiments.start_evaluating(session, experiment)
        assert experiment.status == ExperimentStatus.CREATED


def test_an_evaluation_finishes_once(storage):
    with storage.db.session() as session:
        experiment = _experiment(session, seeds=(0,))
        _task, (run,) = _train(session, experiment)
        evaluation = _evaluation(session, experiment, run)
        assert evaluation.status == EvaluationStatus.QUEUED
        assert evaluations.start(session, evaluation) and evaluation.status == EvaluationStatus.RUNNING
        result = {"mean_reward": 2.0, "std_reward": 0.5}
        event = evaluations.complete(session, evaluation, result)
        assert event is not None and event.data["task_id"] == run.task_id and event.data["run_id"] == run.id
        session.commit()
        # A redelivered message that ran the episodes again, or a give-up racing the result: nothing.
        assert evaluations.complete(session, evaluation, {"mean_reward": 9.0, "std_reward": 0.0}) is None
        assert evaluations.fail(session, evaluation, {"code": "gave_up"}) is None
        assert not evaluations.start(session, evaluation)
        session.commit()
        assert evaluation.status == EvaluationStatus.COMPLETED and evaluation.mean_reward == 2.0
        assert session.scalar(select(func.count()).select_from(EventRecord)
                              .where(EventRecord.type == "resimhub.evaluation.completed")) == 1

        # A failed evaluation fails its trained run after all, with no event of its own.
        other = _evaluation(session, experiment, run)
        failed = evaluations.fail(session, other, {"code": "x", "message": "broke", "celery_type": "ValueError"})
        assert failed is not None and other.error == {"code": "x", "message": "broke"}
        runs.start(session, run, total_timesteps=10, resumed_from=None)
        runs.complete(session, run, model_id=other.model_id, result=_trained())
        assert runs.fail_evaluation(session, run, {"message": "broke"}) and run.status == RunStatus.FAILED
        assert not runs.fail_evaluation(session, run, {"message": "again"})


def test_a_cancel_that_arrives_after_the_completion_is_refused(storage):
    """The API's cancel decides on the rows as they are under the experiment's lock, not on what its
    session read before: here that session last saw the task running, and the aggregation has
    completed it since."""
    from api.errors import Conflict
    from api.services import training
    from api.services.tasks import get as get_task

    with storage.db.session() as session:
        experiment = _experiment(session, seeds=(0,))
        task, (run,) = _train(session, experiment)
        runs.start(session, run, total_timesteps=10, resumed_from=None)
        experiments.start_training(session, experiment)
        tasks.mark_running(session, task)
        session.commit()
        task_id, experiment_id = task.id, experiment.id

    with storage.db.session() as stale:
        seen = get_task(stale, task_id)
        assert seen.status == tasks.TaskStatus.RUNNING
        stale.commit()  # its copy of the task stays in the session (expire_on_commit=False) while held
        with storage.db.session() as session:  # meanwhile, the run and the experiment complete
            run = runs.of_task(session, task_id)[0]
            runs.complete(session, run, model_id="m0", result=_trained())
            experiment = session.get(Experiment, experiment_id)
            experiments.complete(session, experiment, task_id=task_id, results={
                "env_name": experiment.env_name, "agent": "CEM", "mean_return": 1.0, "iqm": 1.0, "ci95": [1, 1],
                "statistics_over": "evaluation episodes", "seeds": [0], "final_returns": [1.0], "runs": [],
                "training_episodes": 2, "timesteps": 10})
            tasks.succeed(session, tasks.get(session, task_id), {})
            session.commit()
        with pytest.raises(Conflict):
            training.cancel(stale, task_id)
        assert seen.status == tasks.TaskStatus.SUCCEEDED  # read again under the lock
        stale.rollback()

    with storage.db.session() as session:
        assert tasks.get(session, task_id).status == tasks.TaskStatus.SUCCEEDED
        assert session.get(Experiment, experiment_id).status == ExperimentStatus.COMPLETED
        assert runs.of_task(session, task_id)[0].status == RunStatus.COMPLETED
