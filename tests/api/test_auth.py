"""API keys: the scope matrix on every class of route, revocation, loopback rules, the write rate
limit, CORS, the ``resimhub keys`` commands and the refusal to listen off loopback without a key."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.auth import ApiKeyAuth, TokenBuckets, is_loopback
from api.cli import main as cli_main
from storage import keys
from storage.migrate import upgrade
from tests.support.hubs import running_hub, settings_for

ROOT = Path(__file__).resolve().parents[2]
OK_FOR = {"none": set(), "revoked": set(), "read": {"read"}, "write": {"read", "write"},
          "admin": {"read", "write", "admin"}}

# (class, method, path, body): one or more routes of each kind on both API layers.
ROUTES = [
    ("read", "GET", "/api/experiments", None),
    ("read", "GET", "/api/experiments/1", None),
    ("read", "GET", "/api/events", None),
    ("read", "GET", "/api/tasks/00000000-0000-0000-0000-000000000000", None),
    ("read", "GET", "/benchmark/recent", None),
    ("read", "GET", "/api/v1/experiments", None),
    ("read", "GET", "/api/v1/task_status/abc", None),
    ("read", "GET", "/openapi.json", None),
    ("write", "POST", "/api/environments", {"env_name": "NoSuchEnv-v0"}),
    ("write", "POST", "/api/experiments", {}),
    ("write", "POST", "/api/experiments/1/train", None),
    ("write", "POST", "/api/tasks/abc/cancel", None),
    ("write", "POST", "/benchmark/run", {}),
    ("write", "POST", "/api/v1/start_training", {}),
    ("write", "POST", "/api/v1/environments", {}),
    ("admin", "GET", "/api/keys", None),
    ("admin", "POST", "/api/keys", {}),
    ("admin", "DELETE", "/api/keys/nope", None),
    ("admin", "GET", "/api/webhooks", None),
    ("admin", "POST", "/api/webhooks", {}),
]
OPEN = ["/health", "/ready", "/metrics"]


@pytest.fixture
def locked(tmp_path):
    """A hub that requires keys (as one bound off loopback does), with the write limit off."""
    settings = settings_for(tmp_path, RESIMHUB_AUTH="required", RESIMHUB_WRITE_RATE="0")
    with running_hub(settings, worker=False, relay=False) as hub:
        tokens = {}
        with hub.storage.db.session() as session:
            for scope in ("read", "write", "admin"):
                tokens[scope] = keys.create(session, f"{scope}-key", scope)[1]
            revoked, tokens["revoked"] = keys.create(session, "old", "admin")
            keys.revoke(session, revoked)
            session.commit()
        hub.tokens = tokens
        yield hub


def _call(client, method, path, token=None, body=None, **headers):
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("who", ["none", "revoked", "read", "write", "admin"])
def test_the_scope_matrix_on_every_class_of_route(locked, who):
    token = locked.tokens.get(who)
    for kind, method, path, body in ROUTES:
        r = _call(locked.client, method, path, token, body)
        if kind in OK_FOR[who]:
            assert r.status_code not in (401, 403), (who, method, path, r.status_code, r.text)
        else:
            expected = 401 if who in ("none", "revoked") else 403
            assert r.status_code == expected, (who, method, path, r.status_code, r.text)
            error = r.json()["error"]
            assert error["code"] == ("unauthorized" if expected == 401 else "forbidden")
            if expected == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
            else:
                assert error["details"] == {"required_scope": kind, "key_scope": who}
    for path in OPEN:
        assert _call(locked.client, "GET", path, token).status_code == 200, path


def _every_route(app):
    """(method, concrete path) for every FastAPI route and every Flask rule under /api/v1."""
    from fastapi.routing import iter_route_contexts
    from starlette.routing import Mount

    out = []
    for ctx in iter_route_contexts(app.router.routes):
        route = getattr(ctx, "original_route", ctx)
        if isinstance(route, Mount):
            flask = route.app.app
            for rule in flask.url_map.iter_rules():
                if rule.endpoint == "static":
                    continue
                path = route.path + re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", "1", rule.rule)
                out += [(m, path) for m in sorted(rule.methods - {"HEAD", "OPTIONS"})]
            continue
        path = re.sub(r"\{[^}]+\}", "1", ctx.path_format)
        out += [(m, path) for m in sorted((ctx.methods or {"GET"}) - {"HEAD"})]
    return out


def test_every_route_but_the_probes_needs_a_key(locked):
    routes = _every_route(locked.client.app)
    assert len(routes) > 30 and ("GET", "/api/v1/task_status/1") in routes
    for method, path in routes:
        anonymous = _call(locked.client, method, path, body={} if method != "GET" else None)
        admin = _call(locked.client, method, path, locked.tokens["admin"], body={} if method != "GET" else None)
        if path in OPEN:
            assert anonymous.status_code == 200, path
        else:
            assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        assert admin.status_code not in (401, 403), (method, path, admin.status_code, admin.text)


def test_malformed_authorization_headers_are_refused(locked):
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "rh_" + "x" * 43, "Bearer rh_wrong"):
        r = locked.client.get("/api/experiments", headers={"Authorization": header})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", header


def test_keys_are_managed_over_http_and_revocation_is_immediate(locked):
    admin = {"Authorization": f"Bearer {locked.tokens['admin']}"}
    created = locked.client.post("/api/keys", json={"name": "ci", "scope": "write"}, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["key"].startswith("rh_") and body["prefix"] == body["key"][:9] and body["active"] is True
    ci = {"Authorization": f"Bearer {body['key']}"}
    assert locked.client.get("/api/experiments", headers=ci).status_code == 200
    listed = locked.client.get("/api/keys", headers=admin).json()
    assert body["id"] in [k["id"] for k in listed] and all("key" not in k and "key_hash" not in k for k in listed)
    mine = next(k for k in listed if k["id"] == body["id"])
    assert mine["last_used_at"] is not None
    assert locked.client.delete(f"/api/keys/{body['id']}", headers=admin).json()["active"] is False
    assert locked.client.get("/api/experiments", headers=ci).status_code == 401
    active = locked.client.get("/api/keys", params={"include_revoked": "false"}, headers=admin).json()
    assert body["id"] not in [k["id"] for k in active]
    assert locked.client.post("/api/keys", json={"name": "x", "scope": "root"}, headers=admin).status_code == 422


def test_only_hashes_are_stored(locked):
    from storage.models import ApiKey

    with locked.storage.db.session() as session:
        rows = session.query(ApiKey).all()
    stored = " ".join(f"{r.key_hash} {r.prefix} {r.name}" for r in rows)
    for token in locked.tokens.values():
        assert token not in stored and keys.hash_token(token) in stored


def test_on_loopback_keys_are_optional_but_still_checked(hub):
    with hub.storage.db.session() as session:
        _, read = keys.create(session, "reader", "read")
        session.commit()
    assert hub.client.get("/api/experiments").status_code == 200
    assert hub.client.post("/api/experiments", json={}).status_code == 422  # anonymous: no auth error
    assert hub.client.get("/api/experiments", headers={"Authorization": "Bearer rh_nope"}).status_code == 401
    auth = {"Authorization": f"Bearer {read}"}
    assert hub.client.get("/api/experiments", headers=auth).status_code == 200
    assert hub.client.post("/api/experiments", json={}, headers=auth).status_code == 403


async def _asgi(app, scope):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


def test_auto_mode_requires_keys_on_a_connection_that_arrived_off_loopback():
    import asyncio

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    gate = ApiKeyAuth(inner, storage=None, mode="auto", buckets=TokenBuckets(0, 1))
    base = {"type": "http", "method": "GET", "path": "/api/experiments", "headers": []}
    assert asyncio.run(_asgi(gate, {**base, "server": ("127.0.0.1", 8000)})) == 200
    assert asyncio.run(_asgi(gate, {**base, "server": ("::1", 8000)})) == 200
    assert asyncio.run(_asgi(gate, {**base, "server": ("10.0.0.7", 8000)})) == 401
    assert asyncio.run(_asgi(gate, {**base, "server": ("10.0.0.7", 8000), "path": "/health"})) == 200


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org", "192.168.1.2"))


def test_writes_are_rate_limited_per_key_with_retry_after(tmp_path):
    settings = settings_for(tmp_path, RESIMHUB_AUTH="required", RESIMHUB_WRITE_RATE="0.2", RESIMHUB_WRITE_BURST="3")
    with running_hub(settings, worker=False, relay=False) as hub:
        with hub.storage.db.session() as session:
            first, second = keys.create(session, "a", "write")[1], keys.create(session, "b", "write")[1]
            session.commit()
        a, b = ({"Authorization": f"Bearer {t}"} for t in (first, second))
        statuses = [hub.client.post("/api/experiments", json={}, headers=a).status_code for _ in range(3)]
        assert statuses == [422, 422, 422]
        limited = hub.client.post("/api/experiments", json={}, headers=a)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 5
        error = limited.json()["error"]
        assert error["code"] == "rate_limited"
        assert error["details"]["retry_after_s"] == int(limited.headers["retry-after"])
        assert hub.client.post("/api/v1/start_training", json={}, headers=a).status_code == 429  # Flask too
        assert hub.client.get("/api/experiments", headers=a).status_code == 200  # reads are not limited
        assert hub.client.post("/api/experiments", json={}, headers=b).status_code == 422  # own bucket


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=2, clock=lambda: now[0])
    assert buckets.take("k") == 0 and buckets.take("k") == 0
    assert buckets.take("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take("k") == 0
    now[0] += 100
    assert [buckets.take("k") for _ in range(3)][:2] == [0, 0]
    assert TokenBuckets(rate=0, burst=1).take("k") == 0  # rate 0: no limit


def test_cors_is_off_unless_origins_are_configured(tmp_path, hub):
    preflight = {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    r = hub.client.options("/api/experiments", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in hub.client.get("/api/experiments",
                                                               headers={"Origin": preflight["Origin"]}).headers
    settings = settings_for(tmp_path / "cors", RESIMHUB_AUTH="required",
                            RESIMHUB_CORS_ORIGINS="https://app.example.org")
    with running_hub(settings, worker=False, relay=False) as cors:
        r = cors.client.options("/api/experiments", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.org"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        refused = cors.client.get("/api/experiments", headers={"Origin": "https://app.example.org"})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://app.example.org"
        other = cors.client.options("/api/experiments", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# -- the command line ---------------------------------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    env = {"RESIMHUB_DATA_DIR": str(tmp_path / "data")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("RESIMHUB_DATABASE_URL", "RESIMHUB_BROKER_URL", "RESIMHUB_REDIS_URL", "RESIMHUB_AUTH"):
        monkeypatch.delenv(name, raising=False)
    return env


def test_keys_create_list_revoke(cli_env, capsys):
    upgrade(settings_for_env(cli_env))
    assert cli_main(["keys", "create", "--scope", "write", "--name", "ci", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["scope"] == "write" and created["name"] == "ci" and created["key"].startswith("rh_")
    assert cli_main(["keys", "create", "--scope", "read", "--name", "dash"]) == 0
    out = capsys.readouterr()
    assert out.out.strip().startswith("rh_") and "not shown again" in out.err
    assert cli_main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert created["id"] in listing and "ci" in listing and created["key"] not in listing
    assert cli_main(["keys", "revoke", created["id"]]) == 0
    assert "revoked" in capsys.readouterr().out
    assert cli_main(["keys", "list", "--active", "--json"]) == 0
    assert [k["name"] for k in json.loads(capsys.readouterr().out)] == ["dash"]
    with pytest.raises(SystemExit) as exc:
        cli_main(["keys", "revoke", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no API key 'nope'" in err


def test_keys_before_migrations_is_a_one_line_hint(cli_env, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["keys", "list"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resimhub db upgrade" in err


def settings_for_env(env):
    from storage.settings import load_settings

    return load_settings(env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _resimhub(env, *argv, timeout=60):
    return subprocess.run([sys.executable, "-m", "api.cli", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=timeout)


@pytest.mark.parametrize("command", ["api", "up"])
def test_listening_off_loopback_without_a_key_is_refused(cli_env, command):
    upgrade(settings_for_env(cli_env))
    proc = _resimhub(cli_env, command, "--host", "0.0.0.0", "--port", str(_free_port()))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("resimhub: refusing to listen on 0.0.0.0 without an API key")
    assert "resimhub keys create" in lines[-1]
    assert not any("Traceback" in line for line in lines)


def test_auth_off_is_refused_off_loopback_and_unmigrated_database_gets_a_hint(cli_env):
    proc = _resimhub(cli_env, "api", "--host", "0.0.0.0", "--port", str(_free_port()))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "resimhub db upgrade" in proc.stderr
    upgrade(settings_for_env(cli_env))
    proc = _resimhub({**cli_env, "RESIMHUB_AUTH": "off"}, "api", "--host", "0.0.0.0", "--port", str(_free_port()))
    assert proc.returncode == 2 and "RESIMHUB_AUTH=off" in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_with_a_key_the_gateway_listens_off_loopback_and_requires_keys(cli_env):
    settings = settings_for_env(cli_env)
    upgrade(settings)
    from storage.db import Database

    db = Database(settings, pool_size=1)
    with db.session() as session:
        _, token = keys.create(session, "ops", "read")
        session.commit()
    db.dispose()
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "api", "--host", "0.0.0.0", "--port", str(port)],
                            cwd=ROOT, env={**os.environ, **cli_env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the gateway did not come up"
            time.sleep(0.2)
        # Bound to 0.0.0.0, keys are required even for a client on this machine.
        assert httpx.get(base + "/api/experiments").status_code == 401
        assert httpx.get(base + "/api/experiments", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "resimhub.access"]
    assert access and all(line.get("request_id") for line in access), err[-2000:]
    assert {"route": "/api/experiments", "status": 401} in [{k: a[k] for k in ("route", "status")} for a in access]
