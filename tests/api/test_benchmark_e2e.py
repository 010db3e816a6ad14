"""Benchmark end to end on the embedded hub: upload → validate_model → run → evaluate → recent/compare,
checked against the RL engine called directly, on both API layers."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from actors.rl.evaluation import evaluate
from actors.rl.modelfiles import load_policy
from actors.rl.nn import MLP
from actors.rl.policy import MLPPolicy, save_policy
from tests.support.fixtures import SEED_DQN_MODEL

FIXTURE = SEED_DQN_MODEL
ENV = "CartPole-v1"


def upload(client, path: Path, prefix: str = "", **fields) -> dict:
    with open(path, "rb") as fh:
        r = client.post(f"{prefix}/benchmark/upload_model", files={"file": (path.name, fh)}, data=fields)
    assert r.status_code == 202, r.text
    return r.json()


def upload_validated(hub, path: Path, **fields) -> str:
    body = upload(hub.client, path, env_name=ENV, **fields)
    task = hub.wait_task(body["task_id"])
    assert task["status"] == "succeeded", task
    return body["model_id"]


def angle_policy_file(tmp_path: Path) -> Path:
    """A linear CartPole policy that pushes toward the side the pole falls to: far better than the
    fixture (which always pushes left), so rankings have a known answer."""
    net = MLP([4, 2], "tanh")
    net.weights[0][:] = 0.0
    net.weights[0][2, 1] = net.weights[0][3, 1] = 1.0
    path = tmp_path / "angle.npz"
    save_policy(MLPPolicy(net, "discrete", (4,)), path, {"env_id": ENV})
    return path


def all_numbers_are_json_numbers(value) -> bool:
    if isinstance(value, dict):
        return all(all_numbers_are_json_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(all_numbers_are_json_numbers(v) for v in value)
    return not isinstance(value, str) or not value.startswith("np.")


def test_fixture_upload_validates_and_evaluates_exactly_like_the_engine(hub):
    body = upload(hub.client, FIXTURE, env_name=ENV, name="seed dqn")
    assert hub.client.get(body["location"]).status_code == 200
    assert body["model"]["status"] == "uploaded" and body["model"]["format"] == "torch-zip"
    assert body["model"]["sha256"] == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    task = hub.wait_task(body["task_id"])
    assert task["status"] == "succeeded", task
    assert task["kind"] == "validate_model" and task["result"]["status"] == "validated"

    model = hub.client.get(f"/benchmark/models/{body['model_id']}").json()
    assert model["status"] == "validated" and model["env_name"] == ENV and model["name"] == "seed dqn"
    assert model["activation"] == "relu"  # the documented default for state dicts
    assert model["shapes"]["net.0.weight"] == [64, 4] and model["shapes"]["net.4.weight"] == [2, 64]
    assert model["manifest"]["sizes"] == [4, 64, 64, 2] and model["size_bytes"] == FIXTURE.stat().st_size
    assert model["created_at"].endswith("Z")

    episodes, seed = 12, 1234
    r = hub.client.post("/benchmark/run", json={"model_id": body["model_id"], "env_name": ENV,
                                                "episodes": episodes, "seed": seed})
    assert r.status_code == 202, r.text
    run = r.json()
    assert r.headers["location"] == f"/api/tasks/{run['task_id']}" and run["status"] == "queued"
    task = hub.wait_task(run["task_id"])
    assert task["status"] == "succeeded", task
    result = task["result"]

    expected = evaluate(load_policy(FIXTURE, env_id=ENV).policy, ENV, episodes, seed).to_dict()
    assert result["returns"] == expected["returns"] and result["lengths"] == expected["lengths"]
    assert len(result["returns"]) == episodes and 7 <= result["mean_reward"] <= 11  # always pushes left
    for key in ("mean", "std", "median", "min", "max", "iqm", "ci95", "score", "mean_length", "total_steps"):
        assert result[key] == expected[key], key
    assert result["mean_reward"] == expected["mean"] and result["std_reward"] == expected["std"]
    assert result["median_reward"] == expected["median"] and result["total_episodes"] == episodes
    assert result["status"] == "completed" and result["evaluated_at"].endswith("Z")
    assert result["model_id"] == body["model_id"] and result["env_name"] == ENV
    assert result["model_sha256"] == model["sha256"] and result["seeds"] == list(range(seed, seed + episodes))
    assert result["env_version"] == 1 and result["gymnasium_version"] and result["mode"] == "exact"
    assert isinstance(result["latency_ms"], float) and result["latency_ms"] > 0
    assert result["steps_per_second"] > 0 and result["wall_time_s"] > 0
    assert math.isclose(result["score"], result["mean"] - result["std"])
    assert all_numbers_are_json_numbers(result)

    evaluation = hub.client.get(f"/benchmark/evaluations/{run['evaluation_id']}").json()
    assert evaluation["status"] == "completed" and evaluation["result"] == result
    assert evaluation["mean_reward"] == result["mean_reward"]

    model_events = hub.client.get("/api/events", params={"subject": f"models/{body['model_id']}"}).json()["events"]
    assert [e["type"] for e in model_events] == ["resimhub.model.uploaded", "resimhub.model.validated"]
    eval_events = hub.client.get("/api/events", params={"subject": f"evaluations/{run['evaluation_id']}"}).json()
    assert [e["type"] for e in eval_events["events"]] == ["resimhub.evaluation.requested",
                                                          "resimhub.evaluation.completed"]
    assert eval_events["events"][1]["data"]["mean_reward"] == result["mean_reward"]


def test_native_model_round_trips_byte_identical_and_evaluates(hub, tmp_path):
    path = angle_policy_file(tmp_path)
    model_id = upload_validated(hub, path)
    model = hub.client.get(f"/benchmark/models/{model_id}").json()
    assert model["format"] == "resimhub-npz" and model["activation"] == "tanh"

    r = hub.client.get(f"/benchmark/models/{model_id}/file")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.content == path.read_bytes()
    assert hashlib.sha256(r.content).hexdigest() == model["sha256"]
    assert f'model-{model_id}.npz' in r.headers["content-disposition"]
    legacy = hub.client.get(f"/api/v1/benchmark/models/{model_id}/file")
    assert legacy.status_code == 200 and legacy.content == path.read_bytes()

    r = hub.client.post("/benchmark/run", json={"model_id": model_id, "episodes": 8, "seed": 5, "wait": 30})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    expected = evaluate(load_policy(path).policy, ENV, 8, 5)
    assert result["returns"] == expected.returns and result["env_name"] == ENV  # env taken from the upload
    assert result["mean_reward"] > 100


def test_run_accepts_form_fields_json_and_fast_mode(hub):
    model_id = upload_validated(hub, FIXTURE)
    form = hub.client.post("/benchmark/run", data={"model_id": model_id, "env_name": ENV, "episodes": "6",
                                                   "seed": "2", "mode": "fast", "wait": ""})
    assert form.status_code == 202, form.text
    assert form.json()["episodes"] == 6 and form.json()["mode"] == "fast"
    done = hub.wait_task(form.json()["task_id"])
    assert done["status"] == "succeeded" and len(done["result"]["returns"]) == 6
    assert done["result"]["mode"] == "fast" and done["result"]["seeds"] == [2]

    inline = hub.client.post("/benchmark/run?wait=30", json={"model_id": model_id, "episodes": 3})
    assert inline.status_code == 200, inline.text
    body = inline.json()
    assert body["status"] == "succeeded" and body["result"]["total_episodes"] == 3 and body["error"] is None
    assert body["result"]["seed"] == 0  # defaults: seed 0, exact mode
    assert body["result"]["seeds"] == [0, 1, 2]

    multipart = hub.client.post("/benchmark/run", files={"model_id": (None, model_id), "episodes": (None, "2"),
                                                         "wait": (None, "30")})
    assert multipart.status_code == 200 and multipart.json()["result"]["total_episodes"] == 2

    documented = hub.client.get("/openapi.json").json()["paths"]["/benchmark/run"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded", "multipart/form-data"} <= set(documented)


def test_recent_and_compare_rank_the_better_policy_first(hub, tmp_path):
    fixture_id = upload_validated(hub, FIXTURE)
    angle_id = upload_validated(hub, angle_policy_file(tmp_path))
    for model_id in (fixture_id, angle_id):
        r = hub.client.post("/benchmark/run", json={"model_id": model_id, "episodes": 20, "seed": 7, "wait": 30})
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    # An older evaluation of the fixture on another env must not be picked for CartPole-v1.
    other = hub.client.post("/benchmark/run", json={"model_id": fixture_id, "env_name": "CartPole-v0",
                                                    "episodes": 4, "wait": 30})
    assert other.status_code == 200 and other.json()["status"] == "succeeded"

    recent = hub.client.get("/benchmark/recent").json()
    assert [e["env_name"] for e in recent] == ["CartPole-v0", ENV, ENV]
    assert [e["model_id"] for e in recent[1:]] == [angle_id, fixture_id]
    assert set(recent[0]) >= {"model_id", "env_name", "mean_reward", "std_reward", "median_reward", "latency_ms",
                              "total_episodes", "status", "evaluated_at"}
    assert recent[1]["total_episodes"] == 20 and recent[1]["status"] == "completed"
    assert isinstance(recent[1]["std_reward"], float) and recent[1]["evaluated_at"].endswith("Z")
    assert len(hub.client.get("/benchmark/recent", params={"limit": 1}).json()) == 1
    assert [e["env_name"] for e in hub.client.get("/benchmark/recent", params={"env": ENV}).json()] == [ENV, ENV]

    cmp = hub.client.get("/benchmark/compare", params={"model_ids": f"{fixture_id},{angle_id}", "env": ENV})
    assert cmp.status_code == 200, cmp.text
    body = cmp.json()
    assert body["env_name"] == ENV and "iqm" in body["ranking"]
    assert [m["model_id"] for m in body["models"]] == [angle_id, fixture_id]
    assert [m["rank"] for m in body["models"]] == [1, 2]
    best, worst = body["models"]
    assert best["iqm"] > worst["iqm"] and best["iqm_ci95"][0] <= best["iqm"] <= best["iqm_ci95"][1]
    assert worst["episodes"] == 20 and worst["mean"] < 12
    (pair,) = body["pairs"]
    assert (pair["a"], pair["b"]) == (angle_id, fixture_id) and pair["paired_episodes"] is True
    assert pair["probability_of_improvement"] == 1.0 and pair["mean_difference"] > 100
    assert pair["mann_whitney_u"]["p_value"] < 1e-4 and pair["welch_t"]["p_value"] < 1e-4

    # Without env the models' common upload env is used.
    assert hub.client.get("/benchmark/compare", params={"model_ids": f"{fixture_id},{angle_id}"}).json() == body

    # Unknown ids are listed and the known ones compared; only when none is known is it a 404.
    partial = hub.client.get("/benchmark/compare", params={"model_ids": f"{fixture_id},nope,{angle_id},gone",
                                                           "env": ENV})
    assert partial.status_code == 200, partial.text
    assert partial.json() == {**body, "unknown_model_ids": ["nope", "gone"]}
    missing = hub.client.get("/benchmark/compare", params={"model_ids": "nope,gone", "env": ENV})
    assert missing.status_code == 404
    assert missing.json()["error"]["details"]["unknown_model_ids"] == ["nope", "gone"]
    assert "nope" in missing.json()["error"]["message"]
    unevaluated = hub.client.get("/benchmark/compare", params={"model_ids": f"{fixture_id},{angle_id}",
                                                               "env": "CartPole-v0"})
    assert unevaluated.status_code == 422 and unevaluated.json()["error"]["code"] == "not_evaluated"
    assert unevaluated.json()["error"]["details"]["model_ids"] == [angle_id]

    legacy = hub.client.get("/api/v1/benchmark/compare", params={"model_ids": f"{fixture_id},{angle_id}",
                                                                 "env": ENV})
    assert legacy.status_code == 200 and legacy.json() == body
    assert hub.client.get("/api/v1/benchmark/recent", params={"limit": 3}).json() == recent


def test_legacy_layer_uploads_runs_and_reads(hub, tmp_path):
    body = upload(hub.client, FIXTURE, prefix="/api/v1", env_name=ENV, activation="relu")
    assert hub.wait_task(body["task_id"])["status"] == "succeeded"
    model_id = body["model_id"]
    legacy_model = hub.client.get(f"/api/v1/benchmark/models/{model_id}").json()
    assert legacy_model == hub.client.get(f"/benchmark/models/{model_id}").json()
    assert legacy_model["status"] == "validated"

    r = hub.client.post("/api/v1/benchmark/run", data={"model_id": model_id, "episodes": "4", "seed": "9"})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/api/tasks/{r.json()['task_id']}"
    task = hub.wait_task(r.json()["task_id"])
    expected = evaluate(load_policy(FIXTURE, env_id=ENV).policy, ENV, 4, 9)
    assert task["result"]["returns"] == expected.returns
    inline = hub.client.post("/api/v1/benchmark/run", json={"model_id": model_id, "episodes": 2, "wait": 30})
    assert inline.status_code == 200 and inline.json()["result"]["total_episodes"] == 2
    evaluation = hub.client.get(f"/api/v1/benchmark/evaluations/{r.json()['evaluation_id']}").json()
    assert evaluation["result"]["returns"] == expected.returns
    assert [e["evaluation_id"] for e in hub.client.get("/api/v1/benchmark/recent").json()] == [
        inline.json()["evaluation_id"], r.json()["evaluation_id"]]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_activation_is_applied_to_state_dicts(hub, tmp_path, activation):
    """The same weights are a different function under relu and tanh; the evaluation must use the one
    the upload named."""
    net = MLP([4, 8, 2], activation, rng=np.random.default_rng(3))
    path = tmp_path / "sd.npz"
    np.savez(path, **net.state_dict())
    model_id = upload_validated(hub, path, activation=activation)
    assert hub.client.get(f"/benchmark/models/{model_id}").json()["activation"] == activation
    r = hub.client.post("/benchmark/run", json={"model_id": model_id, "episodes": 5, "seed": 11, "wait": 30})
    expected = evaluate(MLPPolicy(net, "discrete", (4,)), ENV, 5, 11)
    assert r.json()["result"]["returns"] == expected.returns


def test_a_benchmark_run_joins_the_evaluations_snapshot(hub):
    import time

    from analytics import readers

    fixture = FIXTURE
    with open(fixture, "rb") as fh:
        up = hub.client.post("/benchmark/upload_model", files={"file": ("m.pt", fh)}, data={"env_name": "CartPole-v1"})
    model_id = up.json()["model_id"]
    hub.wait_task(up.json()["task_id"])
    run = hub.client.post("/benchmark/run", json={"model_id": model_id, "env_name": "CartPole-v1", "episodes": 7,
                                                  "seed": 3, "wait": 30}).json()
    evaluation_id = run["evaluation_id"]
    deadline = time.monotonic() + 20
    frame = None
    while time.monotonic() < deadline:
        frame = readers.read(hub.settings.snapshots_dir, "evaluations")
        if frame is not None and len(frame) and evaluation_id in set(frame["evaluation_id"]):
            break
        time.sleep(0.1)
    assert frame is not None and evaluation_id in set(frame["evaluation_id"])
    row = frame[frame["evaluation_id"] == evaluation_id].iloc[0]
    assert row["model_id"] == model_id and row["episodes"] == 7
