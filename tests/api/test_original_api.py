"""The requests the original ReSimHub README documents, sent verbatim by a migrating user, work on a
running hub (worker and relay included) on both databases; see "Coming from the original API" in
the README."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from actors.rl.nn import MLP
from actors.rl.policy import MLPPolicy, save_policy
from tests.support.hubs import running_hub, settings_for
from tests.support.services import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def running(request, tmp_path):
    env = {}
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            env["RESIMHUB_DATABASE_URL"] = stack.enter_context(fresh_postgres_database())
        yield stack.enter_context(running_hub(settings_for(tmp_path, **env)))


def test_the_documented_sequence(running):
    c = running.client
    # Register an environment, with the version beside the id as the original sent it.
    r = c.post("/api/environments", json={"env_name": "CartPole-v1", "version": "v1"})
    assert r.status_code == 202, r.text
    assert r.json()["environment"]["version"] == "v1"
    assert running.wait_task(r.json()["task_id"])["status"] == "succeeded"
    # Again, and on the Flask layer: already registered.
    again = c.post("/api/v1/environments", json={"env_name": "CartPole-v1", "version": "1"})
    assert again.status_code == 200 and again.json()["env_name"] == "CartPole-v1", again.text

    # Create an experiment named after its environment, without env_name.
    r = c.post("/api/experiments", json={"name": "CartPole-v1", "agent": "DQN", "episodes": 500})
    assert r.status_code == 201, r.text
    experiment = r.json()
    assert experiment["env_name"] == "CartPole-v1" and experiment["episodes"] == 500 and experiment["agent"] == "DQN"

    # Launch training via the Flask route with the fields the original sent.
    r = c.post("/api/v1/start_training", json={"experiment_id": experiment["id"], "env_name": "CartPole-v1",
                                                "algo": "DQN"})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.json()["task_id"]
    assert r.headers["location"] == f"/api/tasks/{r.json()['task_id']}"
    cancel = c.post(f"/api/tasks/{r.json()['task_id']}/cancel")
    assert cancel.status_code == 200, cancel.text

    # The analytics routes of the README answer too (empty until something finished).
    assert c.get("/api/v1/analytics/recent").status_code == 200


def test_a_version_that_is_not_the_ids_is_a_422_naming_both(running):
    before = running.client.get("/api/environments").json()
    for prefix in ("/api", "/api/v1"):
        r = running.client.post(f"{prefix}/environments", json={"env_name": "CartPole-v1", "version": "v0"})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "version_mismatch"
        assert "'v0'" in error["message"] and "CartPole-v1" in error["message"] and "v1" in error["message"]
        assert error["details"][0]["field"] == "version"
    assert running.client.get("/api/environments").json() == before


def test_an_experiment_without_env_name_needs_a_name_that_is_a_registered_environment(running):
    c = running.client
    for body in ({"name": "my-run", "agent": "DQN", "episodes": 500},
                 {"name": "Acrobot-v1", "agent": "DQN", "episodes": 500}):  # a Gymnasium id, not registered
        for prefix in ("/api", "/api/v1"):
            r = c.post(f"{prefix}/experiments", json=body)
            assert r.status_code == 422, r.text
            error = r.json()["error"]
            assert error["code"] == "validation_error"
            assert error["details"][0]["field"] == "env_name" and error["details"][0]["type"] == "missing"
    assert c.get("/api/experiments").json() == []


def test_start_training_refuses_fields_that_contradict_the_experiment(running):
    c = running.client
    assert c.post("/api/environments", json={"env_name": "CartPole-v1"}).status_code == 202
    experiment = c.post("/api/experiments", json={"name": "CartPole-v1", "agent": "DQN", "episodes": 5}).json()
    for field, value, actual in (("algo", "PPO", "DQN"), ("agent", "A2C", "DQN"),
                                 ("env_name", "Acrobot-v1", "CartPole-v1")):
        r = c.post("/api/v1/start_training", json={"experiment_id": experiment["id"], field: value})
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["code"] == "experiment_mismatch"
        assert error["details"] == {"field": field, "requested": value, "experiment": actual,
                                    "experiment_id": experiment["id"]}
        assert field in error["message"] and value in error["message"] and actual in error["message"]
    assert c.get(f"/api/experiments/{experiment['id']}").json()["status"] == "created"
    # Agreeing fields, agent names in any case, are accepted.
    r = c.post("/api/v1/start_training", json={"experiment_id": experiment["id"], "algo": "dqn",
                                                "env_name": "CartPole-v1"})
    assert r.status_code == 202, r.text
    c.post(f"/api/tasks/{r.json()['task_id']}/cancel")


def test_compare_answers_for_the_known_models_and_lists_the_unknown(running, tmp_path):
    c = running.client
    ids = []
    for seed in (0, 1):
        path = tmp_path / f"p{seed}.npz"
        save_policy(MLPPolicy(MLP([4, 8, 2], "tanh", rng=np.random.default_rng(seed)), "discrete", (4,)), path,
                    {"env_id": "CartPole-v1"})
        with path.open("rb") as fh:
            r = c.post("/benchmark/upload_model", files={"file": (path.name, fh)}, data={"env_name": "CartPole-v1"})
        assert r.status_code == 202, r.text
        assert running.wait_task(r.json()["task_id"])["status"] == "succeeded"
        ids.append(r.json()["model_id"])
        r = c.post("/benchmark/run", json={"model_id": ids[-1], "episodes": 5, "seed": 0, "wait": 30})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    for prefix in ("", "/api/v1"):
        r = c.get(f"{prefix}/benchmark/compare", params={"model_ids": f"{ids[0]},mdl_unknown,{ids[1]}",
                                                         "env": "CartPole-v1"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["unknown_model_ids"] == ["mdl_unknown"]
        assert sorted(m["model_id"] for m in body["models"]) == sorted(ids) and len(body["pairs"]) == 1
        one = c.get(f"{prefix}/benchmark/compare", params={"model_ids": f"{ids[0]},gone", "env": "CartPole-v1"})
        assert one.status_code == 200 and [m["model_id"] for m in one.json()["models"]] == [ids[0]], one.text
        assert one.json()["unknown_model_ids"] == ["gone"] and one.json()["pairs"] == []
        none = c.get(f"{prefix}/benchmark/compare", params={"model_ids": "gone,lost", "env": "CartPole-v1"})
        assert none.status_code == 404 and none.json()["error"]["details"]["unknown_model_ids"] == ["gone", "lost"]


def test_the_root_links_to_the_docs_health_and_api(running):
    c = running.client
    r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert {"docs": "/docs", "health": "/health", "ready": "/ready"}.items() <= body["links"].items()
    assert body["api_roots"]["legacy"] == "/api/v1" and body["resources"]["experiments"] == "/api/experiments"
    for url in (*body["links"].values(), *(u for u in body["resources"].values() if "{" not in u)):
        if url in ("/benchmark/upload_model", "/benchmark/run"):
            continue  # POST only
        assert c.get(url).status_code in (200, 503), url  # /ready is 503 when something is down
    page = c.get("/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="/docs"' in page.text
    assert c.get("/", headers={"accept": "*/*"}).json() == body
