"""PostgreSQL cut off from the gateway: 503 with Retry-After meanwhile, recovery without a restart.

The gateway under test is a second app whose database URL goes through a proxy we control; the
workers and the relay keep their direct connection, so the rest of the hub goes on and the
gateway's recovery is its own (its pool must notice the dead connections and reconnect).
"""

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from api.app import create_app
from storage.context import open_storage
from storage.models import Experiment
from tests.chaos.common import CARTPOLE, register_cartpole, submit_training
from tests.support.cluster import running_cluster
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EXPERIMENT = {"name": "during", "env_name": CARTPOLE, "agent": "CEM", "total_timesteps": 2000, "eval_episodes": 3}


def _probes(exp_id: int, task_id: str):
    """Reads and writes on both the FastAPI routes and the Flask mount, each needing the database."""
    return [
        ("GET", "/api/experiments", None),
        ("GET", f"/api/experiments/{exp_id}", None),
        ("POST", "/api/experiments", EXPERIMENT),
        ("POST", f"/api/experiments/{exp_id}/train", None),
        ("GET", f"/api/tasks/{task_id}", None),
        ("GET", "/api/events", None),
        ("GET", "/api/environments", None),
        ("GET", "/benchmark/recent", None),
        ("GET", f"/api/v1/task_status/{task_id}", None),
        ("POST", "/api/v1/start_training", {"experiment_id": exp_id}),
    ]


def test_api_answers_503_while_postgres_is_cut_and_recovers_without_restart(tmp_path):
    with running_cluster(tmp_path, workers=1) as cluster:
        register_cartpole(cluster)
        proxy = TcpProxy("127.0.0.1", make_url(cluster.settings.database_url).port or 5432).up()
        proxied = make_url(cluster.settings.database_url).set(host="127.0.0.1", port=proxy.port)
        storage = open_storage(cluster.settings.with_overrides(
            database_url=proxied.render_as_string(hide_password=False)))
        gateway = TestClient(create_app(storage), raise_server_exceptions=False)
        try:
            exp_id, task_id = submit_training(gateway, "before", total_timesteps=2000, eval_episodes=3)
            assert cluster.wait_task(task_id, timeout=60)["status"] == "succeeded"

            proxy.down()
            for _round in range(2):  # the first finds pooled connections dead, the second cannot connect
                for method, path, body in _probes(exp_id, task_id):
                    start = time.monotonic()
                    r = gateway.request(method, path, json=body)
                    elapsed = time.monotonic() - start
                    assert r.status_code == 503, (method, path, r.status_code, r.text)
                    assert int(r.headers["retry-after"]) > 0, (method, path)
                    assert r.headers["content-type"].startswith("application/json")
                    assert r.json()["error"]["code"] == "database_unavailable", (method, path, r.text)
                    assert elapsed < 10, f"{method} {path} hung for {elapsed:.1f}s instead of failing fast"
            assert gateway.get("/health").status_code == 200  # alive, just not ready
            ready = gateway.get("/ready")
            assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False

            proxy.up()
            deadline = time.monotonic() + 15
            while (r := gateway.get("/api/experiments")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert r.status_code == 200, r.text
            assert gateway.get("/ready").status_code == 200
            # The same app instance takes work again, and that work flows through the hub.
            _exp2, task2 = submit_training(gateway, "after", total_timesteps=2000, eval_episodes=3)
            assert cluster.wait_task(task2, timeout=60)["status"] == "succeeded"
            legacy = gateway.get(f"/api/v1/task_status/{task2}")
            assert legacy.status_code == 200 and legacy.json()["status"] == "succeeded"
            with cluster.storage.db.session() as session:
                names = sorted(session.scalars(select(Experiment.name)))
                trained = session.scalar(select(func.count()).select_from(Experiment)
                                         .where(Experiment.status == "completed"))
            assert names == ["after", "before"], "a request refused with 503 still changed something"
            assert trained == 2
        finally:
            gateway.close()
            storage.close()
            proxy.down()
