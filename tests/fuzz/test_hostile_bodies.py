"""Hostile input to every route of both API layers: non-finite numbers and deep nesting.

Python's JSON parser reads ``NaN``, ``Infinity`` and ``1e999`` (as ``inf``) and recurses once per
nesting level; neither database nor the response encoder copes with what comes out (see
``api/jsonbody.py``). No generator of the OpenAPI fuzzer produces such bodies, so they are sent here
by hand to every operation of the live OpenAPI document *and* every rule of the Flask app, whatever
the route expects: as JSON under each JSON content type (and none), as the whole body, inside an
otherwise valid body and nested deeper than the limit; as form fields where a route takes forms;
and as numeric query parameters. On both databases, every answer must be a 4xx in the one error
shape (for JSON: 422 ``non_finite_number`` or 400 ``json_too_deep``), and the database, outbox
included, must be exactly as it was before.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from sqlalchemy import select

from api.jsonbody import MAX_DEPTH
from storage.models import Base

TOKENS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400", "2e308", "-0.1e310"]
#: The refusal for each kind of hostile body: a number out of range, a document too deep.
HOSTILE = {"non_finite_number": 422, "json_too_deep": 400}
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "application/merge-patch+json",
                 "APPLICATION/JSON", None]
SENTINEL = "__hostile__"

#: Bodies the write routes would accept (most of them): hostile values replace their numbers, so a
#: route that let one through would write something.
VALID_BODIES: dict[str, dict] = {
    "POST /api/environments": {"env_name": "Acrobot-v1"},
    "POST /api/experiments": {"name": "h", "env_name": "CartPole-v1", "agent": "CEM", "total_timesteps": 1000,
                              "seed": 1, "eval_episodes": 5},
    "POST /api/webhooks": {"url": "http://127.0.0.1:9/x", "event_types": ["*"], "pause_after_failures": 5},
    "PATCH /api/webhooks/{webhook_id}": {"pause_after_failures": 3},
    "POST /api/webhooks/{webhook_id}/rotate-secret": {"grace_seconds": 60},
    "POST /benchmark/run": {"model_id": "{model_id}", "env_name": "CartPole-v1", "episodes": 5, "seed": 0,
                            "wait": 0},
    "POST /api/keys": {"name": "k", "scope": "read"},
    "POST /api/v1/environments": {"env_name": "Acrobot-v1"},
    "POST /api/v1/experiments": {"name": "h", "env_name": "CartPole-v1", "agent": "CEM", "total_timesteps": 1000},
    "POST /api/v1/start_training": {"experiment_id": "{experiment_id}"},
    "POST /api/v1/benchmark/run": {"model_id": "{model_id}", "env_name": "CartPole-v1", "episodes": 5, "seed": 0},
}
#: Routes taking form fields, and their numeric fields (the others get valid values).
FORM_ROUTES = ["/benchmark/run", "/api/v1/benchmark/run"]
FORM_NUMBERS = ["episodes", "seed", "wait"]
UPLOAD_ROUTES = ["/benchmark/upload_model", "/api/v1/benchmark/upload_model"]
#: Upload fields with a closed set of values, which a hostile number can never be.
UPLOAD_CLOSED_FIELDS = ["env_name", "activation", "action_scaling"]
#: Numeric query parameters of the Flask routes (the FastAPI ones come from the OpenAPI document).
FLASK_QUERY_NUMBERS = {"/api/v1/benchmark/recent": ["limit"], "/api/v1/analytics/recent": ["limit"]}


def snapshot(hub) -> dict[str, list[tuple]]:
    """Every row of every table (the outbox is the events table), in a stable order."""
    with hub.storage.db.session() as session:
        out = {}
        for table in Base.metadata.sorted_tables:
            rows = session.execute(select(table)).all()
            out[table.name] = sorted((tuple(row) for row in rows), key=repr)
        return out


def operations(hub) -> list[tuple[str, str]]:
    """(method, concrete path) for every operation of the OpenAPI document and every Flask rule."""
    known = {**hub.known, "delivery_id": 1, "evaluation_id": "no-such-evaluation", "key_id": "no-such-key"}
    found = []
    for path, item in hub.client.app.openapi()["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path, re.sub(r"{(\w+)}", lambda m: str(known.get(m[1], 1)), path)))
    legacy = hub.client.app.state.legacy_app
    for rule in legacy.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        template = "/api/v1" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        concrete = re.sub(r"{(\w+)}", lambda m: str(known.get(m[1], 1)), template)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method, template, concrete))
    return found


def _raw(value, replacement: str) -> bytes:
    return json.dumps(value).replace(json.dumps(SENTINEL), replacement).encode()


def _fill(body: dict, known: dict) -> dict:
    def fill(value):
        if isinstance(value, str) and re.fullmatch(r"{(\w+)}", value):
            return known[value[1:-1]]
        return value
    return {k: fill(v) for k, v in body.items()}


def hostile_bodies(base: dict) -> list[bytes]:
    bodies: list[bytes] = []
    for token in TOKENS:
        bodies += [token.encode(), _raw([SENTINEL], token), _raw({**base, "hyperparams": {"learning_rate": SENTINEL}},
                                                                   token)]
        bodies += [_raw({**base, field: SENTINEL}, token) for field, value in base.items()
                   if isinstance(value, int | float) and not isinstance(value, bool)]
        bodies.append(_raw({**base, "extra": {"deep": [1, 2, {"x": SENTINEL}]}}, token))
    for depth in (MAX_DEPTH + 1, 1000, 100_000):
        bodies.append(b"[" * depth + b"]" * depth)
        bodies.append(b'{"a":' * depth + b"1" + b"}" * depth)
    bodies.append(_raw({**base, "hyperparams": SENTINEL}, '{"a":' * MAX_DEPTH + "[]" + "}" * MAX_DEPTH))
    bodies.append(_raw({**base, "seeds": SENTINEL}, "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)))
    return bodies


def _error_shape(response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict) \
            or set(body["error"]) != {"code", "message", "details"}:
        return f"not the error shape: {body}"
    return None


def test_hostile_json_is_refused_everywhere_before_anything_is_written(fuzz_hub):
    hub = fuzz_hub
    before = snapshot(hub)
    failures: list[str] = []
    sent: Counter = Counter()
    ops = operations(hub)
    assert len(ops) >= 40, ops
    for method, template, path in ops:
        base = _fill(VALID_BODIES.get(f"{method} {template}", {"value": 1}), hub.known)
        for i, body in enumerate(hostile_bodies(base)):
            content_type = CONTENT_TYPES[i % len(CONTENT_TYPES)]
            headers = {"content-type": content_type} if content_type else {}
            r = hub.client.request(method, path, content=body, headers=headers)
            sent[template] += 1
            problem = _error_shape(r)
            if problem or HOSTILE.get(r.json()["error"]["code"]) != r.status_code:
                failures.append(f"{method} {path} [{content_type}] {body[:80]!r}: {r.status_code} {r.text[:200]}")
    assert not failures, f"{len(failures)} of {sum(sent.values())} not refused:\n" + "\n".join(failures[:20])
    assert snapshot(hub) == before
    print(f"\nhostile JSON: {sum(sent.values())} requests over {len(ops)} operations, all refused")


def test_hostile_numbers_in_forms_and_queries_get_a_4xx_and_write_nothing(fuzz_hub):
    hub = fuzz_hub
    known = hub.known
    before = snapshot(hub)
    failures: list[str] = []
    count = 0

    def check(label: str, response) -> None:
        nonlocal count
        count += 1
        if not 400 <= response.status_code < 500 or _error_shape(response):
            failures.append(f"{label}: {response.status_code} {response.text[:200]}")

    valid = {"model_id": known["model_id"], "env_name": "CartPole-v1", "episodes": "5", "seed": "0", "wait": "0"}
    for path in FORM_ROUTES:
        for field in FORM_NUMBERS:
            for token in TOKENS:
                fields = {**valid, field: token}
                check(f"POST {path} form {field}={token}", hub.client.post(path, data=fields))
                check(f"POST {path} multipart {field}={token}",
                      hub.client.post(path, files={k: (None, v) for k, v in fields.items()}))
                check(f"POST {path}?{field}={token}", hub.client.post(path, params={field: token},
                                                                      data={"model_id": known["model_id"]}))
    model_bytes = known["model_file"].read_bytes()
    for path in UPLOAD_ROUTES:
        for field in UPLOAD_CLOSED_FIELDS:
            for token in TOKENS:
                check(f"POST {path} {field}={token}",
                      hub.client.post(path, files={"file": ("p.npz", model_bytes)}, data={field: token}))

    queries = _numeric_query_parameters(hub)
    for method, path, name, required in queries:
        for token in TOKENS:
            check(f"{method} {path}?{name}={token}",
                  hub.client.request(method, path, params={**required, name: token}))
    assert queries, "no numeric query parameter found"
    assert not failures, f"{len(failures)} of {count} failed:\n" + "\n".join(failures[:20])
    assert snapshot(hub) == before


def _numeric_query_parameters(hub) -> list[tuple[str, str, str, dict]]:
    """(method, path, parameter, required string parameters) for every numeric query parameter."""
    known = {**hub.known, "delivery_id": 1, "evaluation_id": "x", "key_id": "x"}
    out = []
    for template, item in hub.client.app.openapi()["paths"].items():
        path = re.sub(r"{(\w+)}", lambda m: str(known.get(m[1], 1)), template)
        for method, op in item.items():
            params = [p for p in op.get("parameters", []) if p["in"] == "query"]
            required = {p["name"]: "CartPole-v1" if p["name"] == "env" else "a,b"
                        for p in params if p.get("required")}
            for p in params:
                schema = p.get("schema", {})
                types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
                if types & {"integer", "number"} and method != "post":
                    out.append((method.upper(), path, p["name"], required))
    for path, names in FLASK_QUERY_NUMBERS.items():
        out += [("GET", path, name, {}) for name in names]
    return out


def test_the_snapshot_sees_a_write(fuzz_hub):
    """The comparison above is worth something only if one accepted request changes the snapshot."""
    before = snapshot(fuzz_hub)
    r = fuzz_hub.client.post("/api/v1/environments", json={"env_name": "Acrobot-v1"})
    assert r.status_code == 202, r.text
    assert snapshot(fuzz_hub) != before
