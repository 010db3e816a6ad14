"""Hostile policies through the whole pipeline: upload, validation and evaluation by a real embedded
hub. Each ends as a failed validation or evaluation with a clear code, a cancel stops a busy one
within about a second, and the worker answers the next request as usual."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.models import Evaluation
from tests.support.fixtures import FIXTURES, SEED_DQN_MODEL
from tests.support.hubs import running_hub, settings_for

ENV = "CartPole-v1"
HOSTILE = FIXTURES / "onnx" / "hostile"
DELAYED_BOMB = FIXTURES / "sandbox" / "delayed_loop_bomb.onnx"


@pytest.fixture
def hub(tmp_path):
    settings = settings_for(tmp_path, RESIMHUB_SANDBOX_LOAD_TIMEOUT="10", RESIMHUB_SANDBOX_STEP_TIMEOUT="2",
                            RESIMHUB_WRITE_RATE="0")
    with running_hub(settings) as h:
        yield h


def upload(hub, path: Path) -> tuple[str, dict]:
    with open(path, "rb") as fh:
        r = hub.client.post("/benchmark/upload_model", files={"file": (path.name, fh)}, data={"env_name": ENV})
    assert r.status_code == 202, r.text
    return r.json()["model_id"], hub.wait_task(r.json()["task_id"], timeout=60)


def run(hub, model_id: str, episodes: int = 5, wait: float = 30) -> dict:
    r = hub.client.post("/benchmark/run", json={"model_id": model_id, "env_name": ENV, "episodes": episodes,
                                                "seed": 0, "wait": wait})
    assert r.status_code in (200, 202), r.text
    return r.json()


def assert_healthy(hub) -> None:
    """The worker still serves: a good model validates and evaluates promptly."""
    model_id, task = upload(hub, SEED_DQN_MODEL)
    assert task["status"] == "succeeded", task
    start = time.monotonic()
    body = run(hub, model_id)
    assert body["status"] == "succeeded", body
    assert time.monotonic() - start < 20
    assert body["result"]["sandboxed"] is True


def test_a_graph_that_never_finishes_fails_with_policy_timeout_and_the_worker_goes_on(hub):
    model_id, task = upload(hub, HOSTILE / "loop_bomb.onnx")
    if task["status"] == "failed":  # the validation's probe run met the loop
        assert task["error"]["code"] == "policy_timeout", task
    else:
        body = hub.wait_task(run(hub, model_id, wait=0)["task_id"], timeout=60)
        assert body["status"] == "failed" and body["error"]["code"] == "policy_timeout", body
    assert_healthy(hub)


def test_a_bomb_that_waits_for_real_observations_fails_its_evaluation_not_the_hub(hub):
    model_id, task = upload(hub, DELAYED_BOMB)
    assert task["status"] == "succeeded", task
    body = hub.wait_task(run(hub, model_id, wait=0)["task_id"], timeout=60)
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "policy_timeout"
    assert_healthy(hub)


def test_a_cancel_stops_a_busy_policy_within_about_a_second(tmp_path):
    settings = settings_for(tmp_path, RESIMHUB_SANDBOX_STEP_TIMEOUT="120", RESIMHUB_WRITE_RATE="0")
    with running_hub(settings) as hub:
        model_id, task = upload(hub, DELAYED_BOMB)
        assert task["status"] == "succeeded", task
        task_id = run(hub, model_id, wait=0)["task_id"]
        deadline = time.monotonic() + 30
        while hub.client.get(f"/api/tasks/{task_id}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the bomb's first forward pass
        assert hub.client.post(f"/api/tasks/{task_id}/cancel").status_code == 200
        cancelled_at = time.monotonic()
        # The evaluation stops (its policy process killed) within about a second and records why.
        while True:
            with hub.storage.db.session() as session:
                row = session.scalars(select(Evaluation).where(Evaluation.task_id == task_id)).one()
            if row.status == "failed":
                break
            assert time.monotonic() - cancelled_at < 3.0, "the evaluation did not stop"
            time.sleep(0.05)
        assert row.error["code"] == "evaluation_cancelled"
        assert time.monotonic() - cancelled_at < 2.0
        assert_healthy(hub)
