"""Models of superseded trainings: marked when a retrain completes, and by migration 0008 for the
experiments retrained before it."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from storage import supersession
from storage.context import open_storage
from storage.migrate import upgrade
from storage.models import Environment, Experiment, Model
from tests.support.hubs import settings_for
from tests.support.services import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, tmp_path):
    if request.param == "sqlite":
        yield settings_for(tmp_path)
        return
    with fresh_postgres_database() as url:
        yield settings_for(tmp_path, RESIMHUB_DATABASE_URL=url)


def _model(i: int, task_id: str | None, experiment_id: int | None, source: str = "training") -> Model:
    return Model(id=f"m{i}", source=source, status="validated", format="resimhub-npz", sha256="0" * 64,
                 size_bytes=1, path=f"models/m{i}.bin", task_id=task_id, experiment_id=experiment_id)


def test_a_completing_training_supersedes_the_experiment_s_earlier_models_only(settings):
    upgrade(settings)
    storage = open_storage(settings)
    try:
        with storage.db.session() as session:
            env = Environment(env_name="CartPole-v1", status="verified")
            session.add(env)
            session.flush()
            a, b = (Experiment(name=n, environment_id=env.id, env_name="CartPole-v1", agent="CEM", seeds=[0])
                    for n in "ab")
            session.add_all([a, b])
            session.flush()
            session.add_all([_model(1, "t1", a.id), _model(2, "t2", a.id), _model(3, "t3", b.id),
                             _model(4, None, None, source="upload")])
            session.commit()
            assert supersession.supersede_earlier(session, a.id, "t2") == 1
            session.commit()
            assert supersession.supersede_earlier(session, a.id, "t2") == 0  # once
            session.commit()
            marked = {m.id: m.superseded_by_task_id for m in session.query(Model).order_by(Model.id)}
        assert marked == {"m1": "t2", "m2": None, "m3": None, "m4": None}
    finally:
        storage.close()


def test_migration_0008_marks_what_earlier_retrains_replaced(settings):
    upgrade(settings, "0007")
    engine = create_engine(settings.database_url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO environments (id, env_name, status, created_at) "
                              "VALUES (1, 'CartPole-v1', 'verified', :t)"), {"t": t0})
            conn.execute(text("INSERT INTO experiments (id, name, environment_id, env_name, agent, seeds, hyperparams,"
                              " eval_episodes, eval_seed, status, created_at, updated_at) VALUES (1, 'e', 1, "
                              "'CartPole-v1', 'CEM', '[0]', '{}', 5, 0, 'completed', :t, :t)"), {"t": t0})
            # Three trainings: two succeeded, the last one still running.
            for i, status in enumerate(("succeeded", "succeeded", "running"), start=1):
                when = t0 + timedelta(hours=i)
                conn.execute(text("INSERT INTO tasks (id, kind, status, cancel_requested, created_at, updated_at, "
                                  "finished_at) VALUES (:id, 'train', :s, false, :t, :t, :f)"),
                             {"id": f"t{i}", "s": status, "t": when, "f": when if status == "succeeded" else None})
                conn.execute(text("INSERT INTO training_runs (id, experiment_id, task_id, seed, status, timesteps, "
                                  "episodes, episode_returns, episode_lengths, attempts) VALUES (:i, 1, :t, 0, "
                                  "'completed', 1, 1, '[]', '[]', 1)"), {"i": i, "t": f"t{i}"})
                conn.execute(text("INSERT INTO models (id, source, status, format, sha256, size_bytes, path, "
                                  "task_id, experiment_id, run_id, created_at) VALUES (:m, 'training', 'validated', "
                                  "'npz', 'x', 1, 'p', :t, 1, :i, :c)"),
                             {"m": f"m{i}", "t": f"t{i}", "i": i, "c": when})
        upgrade(settings)
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT id, superseded_by_task_id FROM models ORDER BY id")).all())
        assert rows == {"m1": "t2", "m2": None, "m3": None}
    finally:
        engine.dispose()
