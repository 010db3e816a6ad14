"""A policy trained with normalised observations scores the same through ``/benchmark/run`` as the
pipeline's own evaluation at the end of training: the statistics travel in the model file."""

import pytest


def test_a_normalised_policy_scores_the_same_on_the_benchmark(hub):
    hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
    body = {"name": "normalised", "env_name": "CartPole-v1", "agent": "PPO", "total_timesteps": 4_096,
            "eval_episodes": 5, "eval_seed": 31, "hyperparams": {"normalize_obs": True, "normalize_reward": True}}
    r = hub.client.post("/api/experiments", json=body)
    assert r.status_code == 201, r.text
    exp_id = r.json()["id"]
    task = hub.wait_task(hub.client.post(f"/api/experiments/{exp_id}/train").json()["task_id"], timeout=300)
    assert task["status"] == "succeeded", task
    results = hub.client.get(f"/api/experiments/{exp_id}").json()["results"]
    model_id = results["runs"][0]["model_id"]
    model = hub.client.get(f"/benchmark/models/{model_id}").json()
    normalization = model["shapes"]["policy"]["normalization"]
    assert normalization["source"] == "training" and normalization["clip_obs"] == 10.0
    r = hub.client.post("/benchmark/run", json={"model_id": model_id, "episodes": 5, "seed": 31, "wait": 60})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["mean_reward"] == pytest.approx(results["evaluation"]["mean"], rel=1e-12)


def test_bad_normalisation_settings_are_refused_before_training(hub):
    hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
    r = hub.client.post("/api/experiments", json={"name": "x", "env_name": "CartPole-v1", "agent": "PPO",
                                                  "hyperparams": {"clip_obs": -1}})
    assert r.status_code == 422 and "clip_obs" in r.json()["error"]["message"]
