"""Non-finite numbers (422) and over-deep nesting (400) are refused before anything is written, on
both API layers and both databases (the reader is ``api/jsonbody.py``; the fuzzer in
``tests/fuzz/test_hostile_bodies.py`` sends the same to every route)."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import func, select

from api import jsonbody
from api.errors import ApiError
from api.jsonbody import MAX_DEPTH
from storage.models import EventRecord, Experiment, Task, TrainingRun
from tests.support.hubs import running_hub, settings_for
from tests.support.services import fresh_postgres_database

JSON = {"content-type": "application/json"}
EXPERIMENT = ('{"name": "x", "env_name": "CartPole-v1", "agent": "PPO", "total_timesteps": 1000, '
              '"hyperparams": {"learning_rate": %s}}')


@pytest.fixture(params=["sqlite", "postgresql"])
def any_hub(request, tmp_path):
    """A hub without worker or relay (so the outbox only grows by what requests commit)."""
    env = {}
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            env["RESIMHUB_DATABASE_URL"] = stack.enter_context(fresh_postgres_database())
        hub = stack.enter_context(running_hub(settings_for(tmp_path, **env), worker=False, relay=False))
        assert hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).status_code == 202
        yield hub


def counts(hub) -> dict[str, int]:
    with hub.storage.db.session() as session:
        return {model.__name__: session.scalar(select(func.count()).select_from(model))
                for model in (Experiment, TrainingRun, Task, EventRecord)}


STATUS = {"non_finite_number": 422, "json_too_deep": 400}


def refused(r, code: str) -> dict:
    assert r.status_code == STATUS[code], r.text
    error = r.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == code, error
    return error


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
@pytest.mark.parametrize("prefix", ["/api", "/api/v1"])
def test_non_finite_hyperparameters_are_refused_before_the_experiment_exists(any_hub, token, prefix):
    before = counts(any_hub)
    r = any_hub.client.post(f"{prefix}/experiments", content=EXPERIMENT % token, headers=JSON)
    error = refused(r, "non_finite_number")
    assert error["details"][0]["field"] == "hyperparams.learning_rate"
    assert error["details"][0]["value"] in ("nan", "inf", "-inf")
    assert "hyperparams.learning_rate" in error["message"] and "finite" in error["message"]
    assert counts(any_hub) == before


def test_the_reported_sequence_no_longer_commits_a_training_it_answers_500_for(any_hub):
    """Create with NaN (was 201), then train (was a 500 after the commit on SQLite, 202 on Flask)."""
    before = counts(any_hub)
    refused(any_hub.client.post("/api/experiments", content=EXPERIMENT % "NaN", headers=JSON), "non_finite_number")
    assert any_hub.client.get("/api/experiments").json() == []
    assert counts(any_hub) == before


@pytest.mark.parametrize("path", ["/api/v1/start_training", "/benchmark/run", "/api/v1/benchmark/run",
                                  "/api/experiments", "/api/webhooks"])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_a_hundred_thousand_levels_of_nesting_get_a_400_not_a_recursion_error(any_hub, path, opener):
    closer = "]" if opener == "[" else "}"
    body = opener * 100_000 + ("" if opener == "[" else "1") + closer * 100_000
    before = counts(any_hub)
    error = refused(any_hub.client.post(path, content=body, headers=JSON), "json_too_deep")
    assert error["details"][0]["max_depth"] == MAX_DEPTH and str(MAX_DEPTH) in error["message"]
    assert counts(any_hub) == before


def test_the_depth_limit_is_exact(any_hub):
    def nested(depth: int) -> str:
        # The experiment body is depth 1 and hyperparams depth 2; the rest is a list nested inside.
        inner = "[" * (depth - 2) + "]" * (depth - 2)
        return EXPERIMENT % inner

    at_limit = any_hub.client.post("/api/experiments", content=nested(MAX_DEPTH), headers=JSON)
    assert at_limit.status_code == 422, at_limit.text  # past the door: the agent has no such hyperparameter shape
    refused(any_hub.client.post("/api/experiments", content=nested(MAX_DEPTH + 1), headers=JSON), "json_too_deep")


def test_every_json_content_type_and_none_is_checked_and_forms_are_not_parsed_as_json(any_hub):
    for headers in ({"content-type": "application/json; charset=utf-8"}, {"content-type": "application/x+json"},
                    {}):
        refused(any_hub.client.post("/api/v1/start_training", content=b'{"experiment_id": NaN}', headers=headers),
                "non_finite_number")
    # A form value is text; "NaN" as a number field is the route's 422, never a stored NaN.
    r = any_hub.client.post("/benchmark/run", data={"model_id": "m", "episodes": "NaN"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_a_streamed_body_is_checked_whole(any_hub):
    def chunks():
        yield b'{"name": "x", "env_name": "CartPole-v1", "agent": "PPO", '
        yield b'"hyperparams": {"gamma": Infinity}}'

    before = counts(any_hub)
    refused(any_hub.client.post("/api/v1/experiments", content=chunks(), headers=JSON), "non_finite_number")
    assert counts(any_hub) == before


def test_good_bodies_pass_through_unchanged_on_both_layers(any_hub):
    body = {"name": "ok", "env_name": "CartPole-v1", "agent": "PPO", "total_timesteps": 1000,
            "hyperparams": {"learning_rate": 1e-300, "gamma": 0.99}}
    for prefix in ("/api", "/api/v1"):
        r = any_hub.client.post(f"{prefix}/experiments", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["hyperparams"] == body["hyperparams"]
    # Malformed JSON is still the layer's own malformed_json.
    for prefix in ("/api", "/api/v1"):
        r = any_hub.client.post(f"{prefix}/experiments", content=b'{"name": ', headers=JSON)
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"


def test_a_stored_non_finite_hyperparameter_is_refused_before_training_is_queued(tmp_path):
    """Rows that SQLite stored before the door was closed: training them is a 422, nothing queued."""
    with running_hub(settings_for(tmp_path), worker=False, relay=False) as hub:
        assert hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).status_code == 202
        created = hub.client.post("/api/experiments", json={"name": "x", "env_name": "CartPole-v1", "agent": "PPO",
                                                            "total_timesteps": 1000}).json()
        with hub.storage.db.session() as session:
            session.get(Experiment, created["id"]).hyperparams = {"learning_rate": float("nan")}
            session.commit()
        before = counts(hub)
        for r in (hub.client.post(f"/api/experiments/{created['id']}/train"),
                  hub.client.post("/api/v1/start_training", json={"experiment_id": created["id"]})):
            assert r.status_code == 422, r.text
            assert r.json()["error"]["code"] == "invalid_hyperparameter"
        assert counts(hub) == before


# -- the decoder itself ---------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "code"), [
    (b"NaN", "non_finite_number"), (b"[1, 2, Infinity]", "non_finite_number"), (b'{"a": {"b": -1e999}}',
                                                                               "non_finite_number"),
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "json_too_deep"),
    (b"[" * 10**6, "json_too_deep"),
    (b'{"a": ', "malformed_json"), (b"\xff\xfe\x00", "malformed_json"), (b"1" * 5000, "malformed_json"),
])
def test_loads_refuses(raw, code):
    with pytest.raises(ApiError) as err:
        jsonbody.loads(raw)
    assert err.value.code == code and 400 <= err.value.status < 500


def test_loads_accepts_json_and_refusal_leaves_malformed_bodies_to_the_layers():
    assert jsonbody.loads(b'{"a": [1, 2.5, -1e308, null, true, "NaN"]}') == {"a": [1, 2.5, -1e308, None, True, "NaN"]}
    assert jsonbody.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert jsonbody.refusal(b'{"a": ') is None
    assert jsonbody.refusal(b'{"a": [0, {"b": NaN}]}').details[0]["field"] == "a.1.b"
