"""Every kind of bad input gets a 4xx with the JSON error body, on both API layers, never a 500."""

import pytest


@pytest.fixture
def client(hub):
    hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
    return hub.client


GOOD = {"name": "x", "env_name": "CartPole-v1", "agent": "PPO", "total_timesteps": 1000}

CASES = [
    # (method, path, kwargs, status, code)
    ("post", "/api/environments", {"json": {"env_name": "CartPol-v1"}}, 422, "unknown_environment"),
    ("post", "/api/environments", {"content": b'{"env_name": ', "headers": {"content-type": "application/json"}},
     400, "malformed_json"),
    ("post", "/api/environments", {"json": {"env_name": 12}}, 422, "validation_error"),
    ("post", "/api/environments", {"json": {"env_name": ""}}, 422, "validation_error"),
    ("post", "/api/environments", {"json": {"env_name": "CartPole-v1", "extra": 1}}, 422, "validation_error"),
    ("post", "/api/environments", {"json": ["CartPole-v1"]}, 422, "validation_error"),
    ("post", "/api/environments", {"content": b"x" * 2_000_000, "headers": {"content-type": "application/json"}},
     413, "payload_too_large"),
    ("post", "/api/experiments", {"json": {**GOOD, "agent": "DDPG"}}, 422, "unknown_agent"),
    ("post", "/api/experiments", {"json": {**GOOD, "total_timesteps": -5}}, 422, "validation_error"),
    ("post", "/api/experiments", {"json": {**GOOD, "total_timesteps": 10**12}}, 422, "validation_error"),
    ("post", "/api/experiments", {"json": {**GOOD, "total_timesteps": "many"}}, 422, "validation_error"),
    ("post", "/api/experiments", {"json": {**GOOD, "episodes": 10}}, 422, "validation_error"),
    ("post", "/api/experiments", {"json": {**GOOD, "seeds": [1, 1]}}, 422, "validation_error"),
    ("post", "/api/experiments", {"json": {**GOOD, "seeds": list(range(100))}}, 422, "validation_error"),
    ("post", "/api/experiments", {"json": {**GOOD, "env_name": "Acrobot-v1"}}, 422, "environment_not_registered"),
    ("post", "/api/experiments", {"json": {**GOOD, "hyperparams": {"learning_rat": 0.1}}}, 422,
     "unknown_hyperparameter"),
    ("post", "/api/experiments", {"json": {**GOOD, "agent": "QLEARNING"}}, 422, "agent_env_mismatch"),
    ("post", "/api/experiments", {"json": {**GOOD, "agent": "CEM", "hyperparams": {"elite_frac": 5.0}}}, 422,
     "invalid_hyperparameter"),
    ("post", "/api/experiments", {"json": {**GOOD, "hyperparams": {"learning_rate": "fast"}}}, 422,
     "invalid_hyperparameter"),
    ("get", "/api/experiments/999", {}, 404, "not_found"),
    ("get", "/api/experiments/abc", {}, 422, "validation_error"),
    ("get", "/api/environments/999", {}, 404, "not_found"),
    ("get", "/api/tasks/nope", {}, 404, "not_found"),
    ("get", "/api/tasks/nope?wait=1000", {}, 422, "validation_error"),
    ("get", "/api/events?type=resimhub.nothing", {}, 422, "unknown_event_type"),
    ("get", "/api/events?limit=0", {}, 422, "validation_error"),
    ("get", "/api/nowhere", {}, 404, "not_found"),
    ("delete", "/api/environments", {}, 405, "method_not_allowed"),
    # the Flask layer
    ("post", "/api/v1/environments", {"json": {"env_name": "cartpole"}}, 422, "unknown_environment"),
    ("post", "/api/v1/environments", {"content": b"{oops", "headers": {"content-type": "application/json"}},
     400, "malformed_json"),
    ("post", "/api/v1/experiments", {"json": {**GOOD, "total_timesteps": 0}}, 422, "validation_error"),
    ("post", "/api/v1/experiments", {"json": {**GOOD, "agent": "DDPG"}}, 422, "unknown_agent"),
    ("post", "/api/v1/experiments", {"content": b"x" * 2_000_000, "headers": {"content-type": "application/json"}},
     413, "payload_too_large"),
    ("get", "/api/v1/experiments/999", {}, 404, "not_found"),
    ("get", "/api/v1/task_status/nope", {}, 404, "not_found"),
    ("get", "/api/v1/nowhere", {}, 404, "not_found"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), CASES,
                         ids=[f"{c[0]} {c[1]} {c[4]}" for c in CASES])
def test_bad_input(client, method, path, kwargs, status, code):
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    assert "Traceback" not in r.text


def test_unknown_env_names_close_matches(client):
    details = client.post("/api/environments", json={"env_name": "cartpole-v1"}).json()["error"]["details"]
    assert "CartPole-v1" in details["close_matches"]


def test_chunked_oversize_body_is_refused(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = client.post("/api/environments", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_chunked_json_reaches_the_flask_layer(client):
    def chunks():
        yield b'{"env_name": '
        yield b'"Acrobot-v1"}'

    r = client.post("/api/v1/environments", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 202, r.text


def test_chunked_oversize_body_is_refused_by_flask_too(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = client.post("/api/v1/environments", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
