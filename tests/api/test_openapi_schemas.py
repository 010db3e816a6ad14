"""The OpenAPI document says what every successful answer holds: clients generated from it (and the
schemathesis run in tests/fuzz) learn nothing from an empty ``schema: {}``, least of all for the
202s, whose bodies carry the ids a client needs to follow its work."""

from __future__ import annotations

import pytest

from api.schemas import EnvironmentAccepted, TrainingAccepted
from api.schemas_benchmark import RunAccepted, UploadAccepted
from tests.support.fixtures import SEED_DQN_MODEL
from tests.support.hubs import running_hub, settings_for

PREFIXES = ("/api", "/benchmark")


@pytest.fixture
def idle_hub(tmp_path):
    """No worker and no relay: every submission stays queued, so each answers its 202."""
    with running_hub(settings_for(tmp_path), worker=False, relay=False) as h:
        yield h


def _component(doc: dict, schema: dict) -> dict:
    ref = schema["$ref"]
    assert ref.startswith("#/components/schemas/"), ref
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_every_success_answer_of_the_api_has_a_schema(idle_hub):
    doc = idle_hub.client.get("/openapi.json").json()
    checked, missing = 0, []
    for path, item in doc["paths"].items():
        if not path.startswith(PREFIXES):
            continue
        for method, operation in item.items():
            for code, response in operation["responses"].items():
                if not code.startswith("2"):
                    continue
                label = f"{method.upper()} {path} {code}"
                if code == "204":
                    assert not response.get("content"), f"{label}: a 204 has no body to describe"
                    continue
                content = response.get("content") or {}
                if not content:
                    missing.append(f"{label}: no content")
                missing += [f"{label} {media}: empty schema" for media, body in content.items()
                            if not body.get("schema")]
                checked += 1
    assert not missing, "\n".join(missing)
    assert checked >= 20, "the walk found almost no operations: did the prefixes change?"


def test_each_202_body_is_what_its_schema_declares(idle_hub):
    client = idle_hub.client
    doc = client.get("/openapi.json").json()

    def check(method: str, path: str, response, model) -> dict:
        assert response.status_code == 202, response.text
        declared = doc["paths"][path][method]["responses"]["202"]
        schema = _component(doc, declared["content"]["application/json"]["schema"])
        assert schema["title"] == model.__name__
        body = response.json()
        # Every required field is sent and nothing is sent that the schema does not name.
        assert set(schema["required"]) <= set(body) <= set(schema["properties"]), (path, sorted(body))
        model.model_validate(body)
        assert all(name in response.headers for name in declared["headers"]), dict(response.headers)
        return body

    env = check("post", "/api/environments", client.post("/api/environments", json={"env_name": "CartPole-v1"}),
                EnvironmentAccepted)
    assert env["environment"]["id"] == env["environment_id"]

    r = client.post("/api/experiments", json={"name": "run", "env_name": "CartPole-v1", "agent": "CEM"})
    assert r.status_code == 201, r.text
    exp_id = r.json()["id"]
    train = check("post", "/api/experiments/{experiment_id}/train", client.post(f"/api/experiments/{exp_id}/train"),
                  TrainingAccepted)
    assert train["experiment"]["id"] == exp_id and len(train["run_ids"]) == 1

    with open(SEED_DQN_MODEL, "rb") as fh:
        r = client.post("/benchmark/upload_model", files={"file": (SEED_DQN_MODEL.name, fh)},
                        data={"env_name": "CartPole-v1"})
    upload = check("post", "/benchmark/upload_model", r, UploadAccepted)
    assert upload["model"]["id"] == upload["model_id"]

    run = check("post", "/benchmark/run", client.post("/benchmark/run", json={"model_id": upload["model_id"]}),
                RunAccepted)
    assert run["model_id"] == upload["model_id"] and "progress" not in run
