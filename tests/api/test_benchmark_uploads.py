"""Hostile, broken and mistaken requests to the benchmark API: the right 4xx, and no trace left
(no file in the artifact store, no model row, no event) whenever the upload is refused outright."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from actors.rl.nn import MLP
from api.errors import TooLarge
from api.services import models as model_service
from storage.models import Evaluation, EventRecord, Model
from tests.support.fixtures import SEED_DQN_MODEL
from tests.support.hubs import running_hub, settings_for

FIXTURE = SEED_DQN_MODEL
ENV = "CartPole-v1"


class RunsCommand:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def stored_files(hub) -> list[Path]:
    root = hub.settings.artifacts_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def count(hub, table) -> int:
    with hub.storage.db.session() as session:
        return session.scalar(select(func.count()).select_from(table))


def assert_no_trace(hub) -> None:
    assert stored_files(hub) == []
    assert count(hub, Model) == 0
    assert count(hub, EventRecord) == 0


def post_file(client, content: bytes, prefix: str = "", filename: str = "model.bin", **fields):
    return client.post(f"{prefix}/benchmark/upload_model", files={"file": (filename, content)}, data=fields)


def assert_error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    assert "Traceback" not in r.text
    return body["error"]


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_plain_pickle_is_refused_unopened(hub, tmp_path, prefix):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(RunsCommand(marker), protocol=4)
    error = assert_error(post_file(hub.client, payload, prefix, filename="model.pt", env_name=ENV),
                         415, "pickle_refused")
    assert "pickle" in error["message"]
    assert not marker.exists()
    assert_no_trace(hub)


@pytest.mark.parametrize(("content", "status", "code"), [
    (b"", 422, "truncated"),
    (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), 415, "unsupported_format"),
    (b"this is not a model, just some text\n" * 20, 415, "unsupported_format"),
    (FIXTURE.read_bytes()[: FIXTURE.stat().st_size // 2], 422, "truncated"),
    (b"\x93NUMPY" + b"\x00" * 100, 415, "unsupported_format"),
])
@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_broken_files_are_refused_and_not_kept(hub, content, status, code, prefix):
    assert_error(post_file(hub.client, content, prefix, env_name=ENV), status, code)
    assert_no_trace(hub)


def test_zip_that_is_not_a_model_is_refused(hub):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert_error(post_file(hub.client, buf.getvalue()), 415, "unsupported_format")
    assert_no_trace(hub)


@pytest.mark.parametrize(("fields", "code"), [
    ({"env_name": "CartPol-v1"}, "unknown_environment"),
    ({"env_name": ENV, "activation": "sigmoid"}, "validation_error"),
    ({"env_name": ENV, "name": "x" * 500}, "validation_error"),
])
@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_bad_upload_options_are_refused_and_not_kept(hub, fields, code, prefix):
    error = assert_error(post_file(hub.client, FIXTURE.read_bytes(), prefix, **fields), 422, code)
    if code == "unknown_environment":
        assert "CartPole-v1" in error["details"]["close_matches"]
    assert_no_trace(hub)


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_upload_without_a_file_is_a_validation_error(hub, prefix):
    r = hub.client.post(f"{prefix}/benchmark/upload_model", data={"env_name": ENV})
    assert_error(r, 422, "validation_error")
    assert_no_trace(hub)


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_oversize_upload_is_refused_and_not_kept(tmp_path, prefix):
    with running_hub(settings_for(tmp_path, RESIMHUB_MAX_UPLOAD_BYTES="4096")) as hub:
        assert_error(post_file(hub.client, FIXTURE.read_bytes(), prefix, env_name=ENV), 413, "payload_too_large")
        assert_no_trace(hub)
        # Under the limit the same hub accepts a file.
        small = np.zeros(8, dtype=np.float32)
        buf = io.BytesIO()
        np.savez(buf, **{"net.0.weight": small.reshape(2, 4), "net.0.bias": small[:2]})
        accepted = post_file(hub.client, buf.getvalue(), prefix, env_name=ENV)
        assert accepted.status_code == 202, accepted.text
        before = stored_files(hub)
        # Streamed without a Content-Length, the body is cut off at the limit all the same. (Only on
        # the FastAPI layer: the WSGI bridge gives Flask no body at all without a Content-Length.)
        if prefix:
            return
        boundary = "x" * 16
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.pt\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()

        def chunks():
            yield head
            data = FIXTURE.read_bytes()
            for i in range(0, len(data), 1024):
                yield data[i: i + 1024]
            yield f"\r\n--{boundary}--\r\n".encode()

        r = hub.client.post(f"{prefix}/benchmark/upload_model", content=chunks(),
                            headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert_error(r, 413, "payload_too_large")
        assert stored_files(hub) == before and count(hub, Model) == 1


def test_the_service_caps_the_stream_itself(hub):
    """Behind the gateway's body limit the service enforces its own cap on the file it writes."""
    with hub.storage.db.session() as session, pytest.raises(TooLarge):
        model_service.upload(session, hub.storage.artifacts, io.BytesIO(FIXTURE.read_bytes()), max_bytes=2048,
                             env_name=ENV)
    assert_no_trace(hub)


def test_shape_mismatch_is_rejected_by_validation_and_the_file_removed(hub, tmp_path):
    path = tmp_path / "eight_inputs.npz"
    np.savez(path, **MLP([8, 16, 2], "relu").state_dict())
    r = post_file(hub.client, path.read_bytes(), env_name=ENV)
    assert r.status_code == 202, r.text  # the format is fine; the shapes are checked by the worker
    model_id = r.json()["model_id"]
    task = hub.wait_task(r.json()["task_id"])
    assert task["status"] == "failed" and task["error"]["code"] == "shape_mismatch"
    assert "8" in task["error"]["message"] and "CartPole-v1" in task["error"]["message"]
    assert task["error"]["retryable"] is False

    model = hub.client.get(f"/benchmark/models/{model_id}").json()
    assert model["status"] == "rejected" and model["reason"] == task["error"]["message"]
    assert model["file_url"] is None
    assert stored_files(hub) == []  # the row is kept for audit, the file is not
    assert_error(hub.client.get(f"/benchmark/models/{model_id}/file"), 410, "gone")
    types = [e["type"] for e in hub.client.get("/api/events", params={"subject": f"models/{model_id}"}).json()[
        "events"]]
    assert types == ["resimhub.model.uploaded", "resimhub.model.rejected"]
    error = assert_error(hub.client.post("/benchmark/run", json={"model_id": model_id}), 422, "model_rejected")
    assert error["details"]["model_id"] == model_id
    assert count(hub, Evaluation) == 0


def test_torch_zip_with_code_in_its_pickle_is_rejected_without_running_it(hub, tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(RunsCommand(marker), protocol=2))
        zf.writestr("archive/version", "3\n")
    r = post_file(hub.client, buf.getvalue(), env_name=ENV)
    assert r.status_code == 202, r.text  # looks like a PyTorch checkpoint from the outside
    task = hub.wait_task(r.json()["task_id"])
    assert task["status"] == "failed" and task["error"]["code"] == "unsafe_global"
    assert not marker.exists()
    assert stored_files(hub) == []


@pytest.fixture
def model_id(hub):
    with open(FIXTURE, "rb") as fh:
        r = hub.client.post("/benchmark/upload_model", files={"file": ("m.pt", fh)}, data={"env_name": ENV})
    hub.wait_task(r.json()["task_id"])
    return r.json()["model_id"]


RUN_CASES = [
    # (json body or None, extra request kwargs, status, code)
    ({"model_id": "nope"}, {}, 404, "not_found"),
    ({"episodes": 0}, {}, 422, "validation_error"),
    ({"episodes": 10_001}, {}, 422, "validation_error"),
    ({"episodes": "many"}, {}, 422, "validation_error"),
    ({"seed": -1}, {}, 422, "validation_error"),
    ({"mode": "turbo"}, {}, 422, "validation_error"),
    ({"wait": 61}, {}, 422, "validation_error"),
    ({"env_name": "CartPol-v1"}, {}, 422, "unknown_environment"),
    ({"surprise": 1}, {}, 422, "validation_error"),
    (None, {"content": b'{"model_id": ', "headers": {"content-type": "application/json"}}, 400, "malformed_json"),
    (None, {"content": b"<xml/>", "headers": {"content-type": "application/xml"}}, 415, "unsupported_media_type"),
    (None, {"json": ["a", "b"]}, 422, "validation_error"),
    (None, {"content": b"", "headers": {"content-type": "application/json"}}, 422, "validation_error"),
]


@pytest.mark.parametrize(("body", "kwargs", "status", "code"), RUN_CASES, ids=[c[3] + str(i)
                                                                               for i, c in enumerate(RUN_CASES)])
@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_bad_run_requests(hub, model_id, body, kwargs, status, code, prefix):
    if body is not None:
        kwargs = {"json": {"model_id": model_id, "env_name": ENV, **body}}
    r = hub.client.post(f"{prefix}/benchmark/run", **kwargs)
    error = assert_error(r, status, code)
    if code == "validation_error" and body:
        assert error["details"] and error["details"][0]["field"] in body
    assert count(hub, Evaluation) == 0


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/benchmark/models/nope", 404, "not_found"),
    ("/benchmark/models/nope/file", 404, "not_found"),
    ("/benchmark/evaluations/nope", 404, "not_found"),
    ("/benchmark/recent?limit=0", 422, "validation_error"),
    ("/benchmark/recent?limit=abc", 422, "validation_error"),
    ("/benchmark/compare", 422, "validation_error"),
    ("/benchmark/compare?model_ids=a", 422, "validation_error"),
    ("/benchmark/compare?model_ids=a,b&env=CartPol-v1", 404, "not_found"),
    ("/api/v1/benchmark/models/nope", 404, "not_found"),
    ("/api/v1/benchmark/models/nope/file", 404, "not_found"),
    ("/api/v1/benchmark/recent?limit=5000", 422, "validation_error"),
    ("/api/v1/benchmark/compare", 422, "validation_error"),
    ("/api/v1/benchmark/compare?model_ids=a,a", 422, "validation_error"),
])
def test_bad_reads(hub, path, status, code):
    assert_error(hub.client.get(path), status, code)


def test_compare_needs_an_env_when_models_disagree(hub, model_id, tmp_path):
    path = tmp_path / "acrobot.npz"
    np.savez(path, **MLP([6, 8, 3], "relu").state_dict())
    with open(path, "rb") as fh:
        r = hub.client.post("/benchmark/upload_model", files={"file": ("a.npz", fh)}, data={"env_name": "Acrobot-v1"})
    other = r.json()["model_id"]
    error = assert_error(hub.client.get("/benchmark/compare", params={"model_ids": f"{model_id},{other}"}),
                         422, "validation_error")
    assert error["details"][0]["field"] == "env"
