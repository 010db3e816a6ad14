"""Files saved by real Stable-Baselines3, CleanRL-style PyTorch and ONNX exporters, uploaded over
HTTP to an embedded hub, validated and evaluated in the sandbox: the hub's per-episode returns equal
the ones the framework itself computed on the same seeds (tests/fixtures/*/make_fixtures.py), and
what the hub assumed is on the model and beside the score. Hostile files end as rejected models
with a clear code and nothing executed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.fixtures import FIXTURES
from tests.support.hubs import running_hub, settings_for

SB3 = json.loads((FIXTURES / "sb3" / "returns.json").read_text())
CLEANRL = json.loads((FIXTURES / "cleanrl" / "returns.json").read_text())
ONNX = json.loads((FIXTURES / "onnx" / "returns.json").read_text())


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    settings = settings_for(tmp_path_factory.mktemp("framework"), RESIMHUB_WRITE_RATE="0")
    with running_hub(settings) as h:
        yield h


def upload(hub, path: Path, env: str, files: dict | None = None, **fields) -> tuple[str, dict]:
    with open(path, "rb") as fh:
        r = hub.client.post("/benchmark/upload_model", files={"file": (path.name, fh), **(files or {})},
                            data={"env_name": env, **fields})
    assert r.status_code == 202, r.text
    return r.json()["model_id"], hub.wait_task(r.json()["task_id"], timeout=90)


def evaluate(hub, model_id: str, env: str, episodes: int, seed: int) -> dict:
    r = hub.client.post("/benchmark/run", json={"model_id": model_id, "env_name": env, "episodes": episodes,
                                                "seed": seed, "wait": 60})
    body = r.json()
    if body.get("status") not in ("succeeded", "failed"):
        body = hub.wait_task(body["task_id"], timeout=120)
    assert body["status"] == "succeeded", body
    return body["result"]


def assert_same_returns(got: list[float], expected: list[float], box: bool) -> None:
    if not box:
        assert got == expected  # discrete actions: exactly the framework's episodes
    else:
        # float32 arithmetic in another order, amplified over 200 Pendulum steps; SB3 disagrees with
        # itself by more between batched and single-observation predict (returns_batched).
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("name, file", [
    ("ppo_cartpole", "ppo_cartpole.zip"),
    ("dqn_cartpole", "dqn_cartpole.zip"),
    ("dqn_cartpole", "dqn_cartpole_state_dict.pth"),
    ("a2c_cartpole", "a2c_cartpole_state_dict.pth"),
    ("sac_pendulum", "sac_pendulum.zip"),
    ("td3_pendulum", "td3_pendulum_state_dict.pth"),
])
def test_stable_baselines3_files_score_as_sb3_itself(hub, name, file):
    case = SB3[name]
    model_id, task = upload(hub, FIXTURES / "sb3" / file, case["env_id"])
    assert task["status"] == "succeeded", task
    result = evaluate(hub, model_id, case["env_id"], case["episodes"], case["seed"])
    assert_same_returns(result["returns"], case["returns"], box=case["env_id"] == "Pendulum-v1")
    model = hub.client.get(f"/benchmark/models/{model_id}").json()
    assert result["assumptions"] == model["assumptions"]
    names = {a["name"] for a in model["assumptions"]}
    assert "observation_normalization" in names  # nothing in an SB3 file says whether VecNormalize was used


def test_vecnormalize_statistics_ride_along_as_json_and_the_pickle_is_refused(hub):
    case = SB3["ppo_cartpole_vecnormalize"]
    folder = FIXTURES / "sb3"
    with open(folder / "ppo_cartpole_vecnormalize_vecnormalize.pkl", "rb") as pickle_file:
        with open(folder / "ppo_cartpole_vecnormalize.zip", "rb") as fh:
            r = hub.client.post("/benchmark/upload_model", data={"env_name": case["env_id"]},
                                files={"file": ("m.zip", fh), "normalization": ("vec.pkl", pickle_file)})
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "vecnormalize_pickle"
    assert "obs_rms" in r.json()["error"]["message"]
    with open(folder / "ppo_cartpole_vecnormalize_stats.json", "rb") as stats:
        model_id, task = upload(hub, folder / "ppo_cartpole_vecnormalize.zip", case["env_id"],
                                files={"normalization": ("stats.json", stats)})
    assert task["status"] == "succeeded", task
    result = evaluate(hub, model_id, case["env_id"], case["episodes"], case["seed"])
    assert result["returns"] == case["returns"]
    model = hub.client.get(f"/benchmark/models/{model_id}").json()
    assert "normalization" in model["options"]


def test_a_cleanrl_tanh_agent_uploaded_without_an_activation_is_read_as_tanh_and_says_so(hub):
    case = CLEANRL["ppo_agent_cartpole"]
    model_id, task = upload(hub, FIXTURES / "cleanrl" / "ppo_agent_cartpole.pth", case["env_id"])
    assert task["status"] == "succeeded", task
    result = evaluate(hub, model_id, case["env_id"], case["episodes"], case["seed"])
    assert result["returns"] == case["returns"]
    activation = [a for a in result["assumptions"] if a["name"] == "activation"]
    assert activation and activation[0]["value"] == "tanh"
    # ... and beside the score wherever it is listed.
    recent = hub.client.get("/benchmark/recent", params={"limit": 50}).json()
    row = next(r for r in recent if r["model_id"] == model_id)
    assert row["assumptions"] == result["assumptions"]
    board = hub.client.get("/benchmark/compare", params={"model_ids": f"{model_id},nope", "env": case["env_id"]})
    assert board.status_code == 200, board.text
    assert board.json()["models"][0]["assumptions"] == result["assumptions"]


def test_onnx_exports_score_as_sb3_itself(hub):
    cartpole = ONNX["models"]["ppo_cartpole"]
    for kind in ("sb3", "dynbatch"):
        model_id, task = upload(hub, FIXTURES / "onnx" / cartpole["files"][kind], cartpole["env_id"])
        assert task["status"] == "succeeded", task
        result = evaluate(hub, model_id, cartpole["env_id"], ONNX["episodes"], ONNX["seed"])
        assert result["returns"] == cartpole["returns"]
    pendulum = ONNX["models"]["sac_pendulum"]
    path = FIXTURES / "onnx" / pendulum["files"]["sb3"]
    model_id, task = upload(hub, path, pendulum["env_id"])  # a tanh-ended graph, no action_scaling
    assert task["status"] == "failed" and task["error"]["code"] == "onnx_action_scaling", task
    model_id, task = upload(hub, path, pendulum["env_id"], action_scaling="squashed")
    assert task["status"] == "succeeded", task
    result = evaluate(hub, model_id, pendulum["env_id"], ONNX["episodes"], ONNX["seed"])
    assert_same_returns(result["returns"], pendulum["returns"], box=True)


def test_an_ambiguous_state_dict_lists_its_candidates_and_prefix_chooses(hub, tmp_path):
    import io

    stack = {f"{name}.{i}.{kind}": np.zeros((2, 4) if i == 0 and kind == "weight" else
                                             (2,) if kind == "bias" else (2, 2), dtype=np.float32)
             for name in ("left", "right") for i in (0, 2) for kind in ("weight", "bias")}
    for name in ("left", "right"):
        stack[f"{name}.2.weight"] = np.zeros((2, 2), dtype=np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **stack)
    path = tmp_path / "two_stacks.npz"
    path.write_bytes(buffer.getvalue())
    _, task = upload(hub, path, "CartPole-v1", activation="relu")
    assert task["status"] == "failed" and task["error"]["code"] == "ambiguous_layers", task
    assert set(task["error"]["details"]["candidates"]) >= {"left", "right"}
    assert task["error"]["details"]["field"] == "prefix"
    model_id, task = upload(hub, path, "CartPole-v1", activation="relu", prefix="right")
    assert task["status"] == "succeeded", task
    assert hub.client.get(f"/benchmark/models/{model_id}").json()["options"] == {"prefix": "right"}


@pytest.mark.parametrize("path, code", [
    (FIXTURES / "sb3" / "hostile_unsafe_global_policy.zip", "unsafe_global"),
    (FIXTURES / "onnx" / "hostile" / "external_relative.onnx", "onnx_external_data"),
    (FIXTURES / "onnx" / "hostile" / "external_in_loop.onnx", "onnx_external_data"),
    (FIXTURES / "onnx" / "hostile" / "custom_domain.onnx", "onnx_custom_domain"),
    (FIXTURES / "onnx" / "hostile" / "constant_of_shape_bomb.onnx", "onnx_too_large"),
])
def test_hostile_files_end_as_rejected_models_with_a_clear_code(hub, path, code):
    _, task = upload(hub, path, "CartPole-v1")
    assert task["status"] == "failed", task
    assert task["error"]["code"] == code, task


def test_a_cloudpickle_payload_in_an_sb3_zip_is_never_run(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the payload would `touch resimhub_payload_ran` in the working directory
    _, task = upload(hub, FIXTURES / "sb3" / "hostile_payload_in_data.zip", "CartPole-v1")
    # The plain JSON fields are enough to rebuild the policy; the serialized blob is never decoded.
    assert task["status"] == "succeeded", task
    assert not (tmp_path / "resimhub_payload_ran").exists()
