"""The response models read stored rows (``Model.model_validate(row)``) into the bodies both API
layers send: times in RFC 3339 with a Z, and the fields that are not columns derived from the row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from api.schemas import ApiKeyPublic, EnvironmentPublic, ExperimentPublic, TaskPublic
from api.schemas_benchmark import ModelPublic
from api.schemas_webhooks import WebhookPublic, WebhookSecret
from storage.models import ApiKey, Environment, Experiment, Model, Task, WebhookSubscription
from storage.views import model_view

WHEN = datetime(2024, 5, 6, 7, 8, 9, 12, tzinfo=UTC)


def test_times_are_rfc3339_utc_with_microseconds_and_z():
    east = WHEN.astimezone(timezone(timedelta(hours=2)))
    env = Environment(id=1, env_name="CartPole-v1", status="verified", created_at=east, verified_at=None)
    view = EnvironmentPublic.dump(env)
    assert view["created_at"] == "2024-05-06T07:08:09.000012Z" and view["verified_at"] is None
    assert view["version"] == "v1" and list(view)[:3] == ["id", "env_name", "version"]
    assert EnvironmentPublic.model_validate(view).model_dump(mode="json") == view  # a body reads back as itself


def test_derived_fields():
    key = ApiKey(id="k", name="ci", scope="read", prefix="rh_x", created_at=WHEN, revoked_at=WHEN)
    assert ApiKeyPublic.dump(key)["active"] is False
    assert ApiKeyPublic.dump(ApiKey(id="k", name="ci", scope="read", prefix="rh_x", created_at=WHEN))["active"] is True

    task = Task(id="t", kind="train", status="failed", created_at=WHEN,
                error={"type": "E", "message": "m", "traceback": "…", "exc_type": "X"})
    view = TaskPublic.dump(task)
    assert view["task_id"] == "t" and view["error"] == {"type": "E", "message": "m"}

    exp = Experiment(id=3, name="n", env_name="CartPole-v1", environment_id=1, agent="PPO", seeds=None,
                     hyperparams=None, eval_episodes=1, eval_seed=0, status="created", created_at=WHEN,
                     updated_at=WHEN)
    assert ExperimentPublic.dump(exp)["seeds"] == [] and ExperimentPublic.dump(exp)["hyperparams"] == {}


def test_a_model_reads_as_its_validation_result_does():
    model = Model(id="m", source="upload", status="validated", format="native", sha256="s", size_bytes=3, path="p",
                  manifest={"activation": "tanh", "assumptions": [{"name": "a"}]}, created_at=WHEN,
                  superseded_at=WHEN)
    view = ModelPublic.dump(model)
    assert view == {**{k: v for k, v in model_view(model).items() if k != "model_id"},
                    "file_url": "/benchmark/models/m/file"}
    assert view["activation"] == "tanh" and view["superseded"] is True
    model.status = "rejected"
    assert ModelPublic.dump(model)["file_url"] is None


def test_a_webhook_shows_the_expiry_only_of_a_previous_secret():
    sub = WebhookSubscription(id=1, url="https://x", event_types=["*"], status="active", secret="whsec_new",
                              previous_secret=None, previous_secret_expires_at=WHEN, pause_after_failures=5,
                              consecutive_failures=0, created_at=WHEN, updated_at=WHEN)
    assert WebhookPublic.dump(sub)["previous_secret_expires_at"] is None
    assert WebhookSecret.dump(sub) == {"id": 1, "secret": "whsec_new", "previous_secret_expires_at": None}
    sub.previous_secret = "whsec_old"
    assert WebhookPublic.dump(sub)["previous_secret_expires_at"] == "2024-05-06T07:08:09.000012Z"
    assert "secret" not in WebhookPublic.dump(sub)
