"""Embedded end to end: register → event → relay → actor → verified, seen through every read path."""

import importlib.util


def test_register_cartpole_end_to_end(hub):
    r = hub.client.post("/api/environments", json={"env_name": "CartPole-v1"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == f"/api/tasks/{body['task_id']}" and r.headers["retry-after"]
    task = hub.wait_task(body["task_id"])
    assert task["status"] == "succeeded", task
    spec = task["result"]["spec"]
    assert spec["observation_space"]["shape"] == [4]
    assert spec["action_space"] == {**spec["action_space"], "type": "Discrete", "n": 2}
    assert spec["reward_threshold"] == 475.0 and spec["max_episode_steps"] == 500
    assert spec["gymnasium_version"]

    env = hub.client.get(f"/api/environments/{body['environment_id']}").json()
    assert env["status"] == "verified" and env["verified_at"].endswith("Z")

    events = hub.client.get("/api/events", params={"subject": f"environments/{env['id']}"}).json()["events"]
    assert [e["type"] for e in events] == ["resimhub.environment.registered", "resimhub.environment.verified"]
    assert events[1]["data"]["spec"]["action_space"]["n"] == 2

    legacy = hub.client.get("/api/v1/environments")
    assert legacy.status_code == 200
    assert [e["env_name"] for e in legacy.json()] == ["CartPole-v1"]


def test_a_box2d_env_is_verified_with_the_extra_installed(hub):
    task = hub.wait_task(hub.client.post("/api/environments", json={"env_name": "LunarLander-v3"}).json()["task_id"])
    assert task["status"] == "succeeded", task
    assert task["result"]["spec"]["observation_space"]["shape"] == [8]


def test_registering_twice_is_idempotent(hub):
    first = hub.client.post("/api/environments", json={"env_name": "Acrobot-v1"})
    hub.wait_task(first.json()["task_id"])
    again = hub.client.post("/api/v1/environments", json={"env_name": "Acrobot-v1"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["environment_id"]
    assert len(hub.client.get("/api/environments").json()) == 1


def test_an_env_that_cannot_be_built_is_rejected_with_the_reason(hub):
    # Registered in Gymnasium, but needs the MuJoCo extra, which the test environment leaves out.
    assert importlib.util.find_spec("mujoco") is None, "this test needs an environment without MuJoCo"
    r = hub.client.post("/api/environments", json={"env_name": "HalfCheetah-v5"})
    assert r.status_code == 202, r.text
    task = hub.wait_task(r.json()["task_id"])
    assert task["status"] == "failed" and task["error"]["code"] == "environment_rejected"
    assert "pip install -e '.[mujoco]'" in task["error"]["message"]
    env = hub.client.get(f"/api/environments/{r.json()['environment_id']}").json()
    assert env["status"] == "rejected" and "mujoco" in env["reason"]
    types = [e["type"] for e in hub.client.get("/api/events").json()["events"]]
    assert types[-1] == "resimhub.environment.rejected"


def test_event_log_filters_and_paginates(hub):
    for name in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0"):
        hub.wait_task(hub.client.post("/api/environments", json={"env_name": name}).json()["task_id"])
    seen, cursor = [], None
    while True:
        page = hub.client.get("/api/events", params={"limit": 2, **({"after": cursor} if cursor else {})}).json()
        seen += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 6 and [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
    verified = hub.client.get("/api/events", params={"type": "resimhub.environment.verified"}).json()["events"]
    assert {e["data"]["env_name"] for e in verified} == {"CartPole-v1", "Acrobot-v1", "MountainCar-v0"}
    wildcard = hub.client.get("/api/events", params={"type": "resimhub.environment.*"}).json()["events"]
    assert len(wildcard) == 6


def test_experiment_on_a_registered_env(hub):
    hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
    r = hub.client.post("/api/experiments", json={"name": "ppo-run", "env_name": "CartPole-v1", "agent": "ppo",
                                                  "total_timesteps": 20000, "seeds": [0, 1, 2]})
    assert r.status_code == 201, r.text
    exp = r.json()
    assert exp["agent"] == "PPO" and exp["seeds"] == [0, 1, 2] and exp["status"] == "created"
    assert hub.client.get(f"/api/experiments/{exp['id']}").json() == exp
    assert hub.client.get("/api/v1/experiments").json()[0]["id"] == exp["id"]
    created = hub.client.get("/api/events", params={"type": "resimhub.experiment.created"}).json()["events"]
    assert created[0]["subject"] == f"experiments/{exp['id']}" and created[0]["data"]["agent"] == "PPO"


def test_health_and_readiness(hub):
    assert hub.client.get("/health").json() == {"status": "ok"}
    ready = hub.client.get("/ready").json()
    assert ready["ready"] is True and set(ready["checks"]) == {"database", "broker", "redis"}
    assert hub.client.get("/docs").status_code == 200
    assert "/api/environments" in hub.client.get("/openapi.json").json()["paths"]
