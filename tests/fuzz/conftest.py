"""The hubs the API fuzzers run against, shared by the OpenAPI fuzzer and the hostile-body fuzzer.

The embedded hub (SQLite), and the same app on PostgreSQL, which refuses some inputs SQLite stores
(NUL characters, 64-bit overflows, non-finite numbers in JSON). Each is pre-populated so that ids in
paths sometimes exist, and has no worker and no relay: nothing sent here is ever executed or
delivered (a fuzzed webhook URL must never receive traffic).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from storage import webhooks as webhook_storage
from tests.support.hubs import running_hub, settings_for
from tests.support.services import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def fuzz_hub(request, tmp_path):
    """A populated hub on each database; ``hub.known`` holds the ids of what :func:`populate` made."""
    env = {"RESIMHUB_WEBHOOK_ALLOW_PRIVATE": "1", "RESIMHUB_WRITE_RATE": "0"}
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            env["RESIMHUB_DATABASE_URL"] = stack.enter_context(fresh_postgres_database())
        hub = stack.enter_context(running_hub(settings_for(tmp_path, **env), worker=False, relay=False))
        hub.known = populate(hub, tmp_path)
        yield hub


def populate(hub, tmp) -> dict[str, object]:
    """One of everything, so that generated ids such as 1 reach real rows and not only 404s."""
    from actors.rl.nn import MLP
    from actors.rl.policy import MLPPolicy, save_policy

    c = hub.client
    assert c.post("/api/environments", json={"env_name": "CartPole-v1"}).status_code == 202
    r = c.post("/api/experiments", json={"name": "fuzz", "env_name": "CartPole-v1", "agent": "CEM",
                                         "total_timesteps": 1000})
    assert r.status_code == 201, r.text
    experiment_id = r.json()["id"]
    r = c.post(f"/api/experiments/{experiment_id}/train")
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    model = tmp / "policy.npz"
    save_policy(MLPPolicy(MLP([4, 8, 2], "tanh", rng=np.random.default_rng(0)), "discrete", (4,)), model,
                {"env_id": "CartPole-v1"})
    with model.open("rb") as fh:
        r = c.post("/benchmark/upload_model", files={"file": ("p.npz", fh)}, data={"env_name": "CartPole-v1"})
    assert r.status_code in (201, 202), r.text
    model_id = r.json()["model_id"]
    r = c.post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]})
    assert r.status_code == 201, r.text
    return {"experiment_id": experiment_id, "environment_id": 1, "task_id": task_id, "model_id": model_id,
            "model_file": model, "webhook_id": r.json()["id"]}


@pytest.fixture(autouse=True)
def _no_name_resolution(monkeypatch):
    """Belt and braces beside the missing worker: no generated host name is ever looked up."""
    def refuse(host, port):
        raise OSError(f"name resolution is disabled while fuzzing ({host})")

    monkeypatch.setattr(webhook_storage, "resolve", refuse)
