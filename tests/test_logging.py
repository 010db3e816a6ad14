"""Structured logs: JSON lines that carry the request id, and the task and event ids of the work
they describe; a readable console format; the request id echoed back to the client."""

import io
import json
import logging
import logging.config

import pytest

from storage.logs import ConsoleFormatter, JsonFormatter, bound, configure, current_ids, dict_config
from storage.settings import SettingsError, load_settings


@pytest.fixture
def json_lines():
    """Every record logged during the test, as parsed JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def lines():
        handler.flush()
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _record(msg="hello %s", args=("world",), exc_info=None, **extra):
    record = logging.LogRecord("resimhub.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    for key, val in extra.items():
        setattr(record, key, val)
    return record


def test_json_lines_carry_bound_ids_extras_and_exceptions():
    with bound(request_id="req-1", task_id="task-1"):
        with bound(event_id="evt-1"):
            line = json.loads(JsonFormatter().format(_record(route="/api/x", status=201)))
            assert current_ids() == {"request_id": "req-1", "task_id": "task-1", "event_id": "evt-1"}
        assert current_ids() == {"request_id": "req-1", "task_id": "task-1"}
    assert current_ids() == {}
    assert line["message"] == "hello world" and line["level"] == "WARNING" and line["logger"] == "resimhub.test"
    assert line["time"].endswith("Z") and "T" in line["time"]
    assert (line["request_id"], line["task_id"], line["event_id"]) == ("req-1", "task-1", "evt-1")
    assert line["route"] == "/api/x" and line["status"] == 201
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        line = json.loads(JsonFormatter().format(_record(exc_info=sys.exc_info())))
    assert "ValueError: boom" in line["exc_info"] and "request_id" not in line


def test_console_lines_are_readable_and_tagged():
    text = ConsoleFormatter().format(_record())
    assert text.endswith("WARNING resimhub.test: hello world") and "{" not in text
    with bound(task_id="t-9", event_id="e-3"):
        assert ConsoleFormatter().format(_record()).endswith("hello world [task=t-9 event=e-3]")


def test_configure_and_dict_config_route_everything_through_one_format():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    uvicorn_saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate)
                     for n in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    try:
        stream = io.StringIO()
        configure("INFO", "json", stream=stream)
        logging.getLogger("uvicorn.error").info("started")
        assert json.loads(stream.getvalue())["logger"] == "uvicorn.error"
        assert len(root.handlers) == 1
        logging.config.dictConfig(dict_config("WARNING", "console", access_log=False))
        assert isinstance(root.handlers[0].formatter, ConsoleFormatter) and root.level == logging.WARNING
        assert logging.getLogger("resimhub.access").level == logging.WARNING
        logging.config.dictConfig(dict_config("INFO", "json"))
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        with pytest.raises(ValueError):
            dict_config("INFO", "xml")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("resimhub.access").setLevel(logging.NOTSET)
        for name, (handlers, propagate) in uvicorn_saved.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate


def test_log_format_setting():
    assert load_settings({}).log_format is None  # the process picks: console for `up`, json otherwise
    assert load_settings({"RESIMHUB_LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(SettingsError, match="RESIMHUB_LOG_FORMAT"):
        load_settings({"RESIMHUB_LOG_FORMAT": "xml"})


def test_the_request_id_is_echoed_and_on_every_line_of_the_request(hub, json_lines, monkeypatch):
    from api.services import experiments

    original = experiments.list_all

    def list_all(*args, **kwargs):
        logging.getLogger("resimhub.test").info("listing experiments")
        return original(*args, **kwargs)

    monkeypatch.setattr(experiments, "list_all", list_all)
    r = hub.client.get("/api/experiments", headers={"X-Request-ID": "client-chosen-42"})
    assert r.headers["x-request-id"] == "client-chosen-42"
    generated = hub.client.get("/api/v1/experiments").headers["x-request-id"]  # Flask: another thread
    assert len(generated) == 32
    insane = hub.client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert insane != "bad id\twith spaces" and len(insane) == 32

    lines = json_lines()
    inside = [line for line in lines if line["message"] == "listing experiments"]
    assert [line.get("request_id") for line in inside] == ["client-chosen-42", generated]
    access = {line["request_id"]: line for line in lines if line["logger"] == "resimhub.access"}
    assert access["client-chosen-42"]["route"] == "/api/experiments" and access["client-chosen-42"]["status"] == 200
    assert access[generated]["route"] == "/api/v1/experiments" and access[generated]["duration_s"] >= 0
    assert access[insane]["path"] == "/health"


def test_actor_lines_carry_the_task_and_event_ids(hub, json_lines):
    r = hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}, headers={"X-Request-ID": "reg-1"})
    task_id = r.json()["task_id"]
    assert hub.wait_task(task_id)["status"] == "succeeded"
    event = hub.client.get("/api/events", params={"type": "resimhub.environment.registered"}).json()["events"][0]
    handled = [line for line in json_lines() if line["logger"] == "actors.handling"
               and line.get("consumer") == "verify_environment"]
    assert handled, json_lines()
    assert handled[0]["task_id"] == task_id and handled[0]["event_id"] == event["id"]
    assert handled[0]["event_type"] == "resimhub.environment.registered" and handled[0]["duration_s"] > 0
    assert "request_id" not in handled[0]  # the worker thread does not inherit the request's context
