"""Managing webhook subscriptions: the secret shown once, validation, SSRF refusals at subscribe time."""

import base64

import pytest

from tests.support.hubs import running_hub, settings_for
from tests.support.receiver import settings_env


@pytest.fixture
def hub(tmp_path):
    with running_hub(settings_for(tmp_path, **settings_env()), worker=False, relay=False) as h:
        yield h


@pytest.fixture
def strict_hub(tmp_path):
    """Private addresses refused, as in production."""
    with running_hub(settings_for(tmp_path), worker=False, relay=False) as h:
        yield h


def create(client, **body):
    payload = {"url": "http://127.0.0.1:9/hook", "event_types": ["resimhub.experiment.created"], **body}
    return client.post("/api/webhooks", json=payload)


def test_create_shows_the_secret_once(hub):
    r = create(hub.client, event_types=["resimhub.experiment.created", "resimhub.evaluation.*"],
               description="CI bot")
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/api/webhooks/{body['id']}"
    assert body["secret"].startswith("whsec_") and len(base64.b64decode(body["secret"][6:])) == 32
    assert body["status"] == "active" and body["event_types"] == ["resimhub.experiment.created",
                                                                  "resimhub.evaluation.*"]
    assert body["description"] == "CI bot" and body["created_at"].endswith("Z")

    got = hub.client.get(f"/api/webhooks/{body['id']}").json()
    assert "secret" not in got and got["url"] == body["url"]
    listed = hub.client.get("/api/webhooks").json()
    assert [w["id"] for w in listed] == [body["id"]] and "secret" not in listed[0]
    assert body["secret"] not in hub.client.get("/api/webhooks").text


def test_patch_pause_resume_types_url_and_delete(hub):
    wid = create(hub.client).json()["id"]
    r = hub.client.patch(f"/api/webhooks/{wid}", json={"status": "paused"})
    assert r.status_code == 200 and r.json()["status"] == "paused" and r.json()["status_reason"]
    r = hub.client.patch(f"/api/webhooks/{wid}", json={"status": "active", "event_types": ["*"],
                                                      "url": "https://127.0.0.1:8443/x", "description": None})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active" and r.json()["status_reason"] is None
    assert r.json()["event_types"] == ["*"] and r.json()["url"] == "https://127.0.0.1:8443/x"
    assert hub.client.patch(f"/api/webhooks/{wid}", json={"status": "disabled"}).status_code == 422
    assert hub.client.patch(f"/api/webhooks/{wid}", json={"secret": "x"}).status_code == 422

    assert hub.client.delete(f"/api/webhooks/{wid}").status_code == 204
    missing = hub.client.get(f"/api/webhooks/{wid}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert hub.client.delete(f"/api/webhooks/{wid}").status_code == 404
    assert hub.client.get(f"/api/webhooks/{wid}/deliveries").status_code == 404


def test_unknown_event_types_are_refused_with_the_known_ones(hub):
    for pattern in ("resimhub.experiment.createdd", "resimhub.nothing.*", "resimhub.experiment.[c]reated", ""):
        r = create(hub.client, event_types=[pattern])
        assert r.status_code == 422, (pattern, r.text)
        error = r.json()["error"]
        assert error["code"] == "unknown_event_type"
        assert "resimhub.experiment.created" in error["details"]["known"]
        # Commands and pings are not subscribable.
        assert "resimhub.webhook.redelivery.requested" not in error["details"]["known"]
        assert "resimhub.webhook.pinged" not in error["details"]["known"]
    assert create(hub.client, event_types=[]).status_code == 422
    wid = create(hub.client).json()["id"]
    r = hub.client.patch(f"/api/webhooks/{wid}", json={"event_types": ["resimhub.typo"]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_event_type"


def test_wildcards_and_duplicates(hub):
    r = create(hub.client, event_types=["resimhub.*.failed", "resimhub.*.failed", "resimhub.webhook.*"])
    assert r.status_code == 201, r.text
    assert r.json()["event_types"] == ["resimhub.*.failed", "resimhub.webhook.*"]


@pytest.mark.parametrize(("url", "code"), [
    ("ftp://example.com/hook", "invalid_url"),
    ("example.com/hook", "invalid_url"),
    ("http:///nohost", "invalid_url"),
    ("http://user:pw@example.com/", "invalid_url"),
    ("http://example.com:99999/", "invalid_url"),
    ("http://169.254.169.254/latest/meta-data/", "unsafe_url"),
    ("http://[fd00:ec2::254]/", "unsafe_url"),
])
def test_bad_urls_are_refused_even_when_private_addresses_are_allowed(hub, url, code):
    r = create(hub.client, url=url)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["details"]["reason"] and error["details"]["field"] == "url"


@pytest.mark.parametrize(("url", "kind"), [
    ("http://127.0.0.1:8000/hook", "loopback"),
    ("http://localhost:8000/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://10.0.0.7/hook", "private"),
    ("http://192.168.1.10/hook", "private"),
    ("http://169.254.10.1/hook", "link-local"),
    ("http://224.0.0.9/hook", "multicast"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://100.64.1.1/hook", "non-public"),
    ("http://[::127.0.0.1]/hook", "IPv4-compatible IPv6 address of 127.0.0.1, a loopback address"),
    ("http://[::a9fe:a9fe]/latest/meta-data", "metadata"),
    ("http://[::10.0.0.1]/hook", "of 10.0.0.1, a private address"),
    ("http://[::ffff:0:7f00:1]/hook", "IPv4-translated IPv6 address of 127.0.0.1, a loopback address"),
    ("http://[64:ff9b::c0a8:101]/hook", "NAT64 address of 192.168.1.1, a private address"),
    ("http://[2002:a00:1::1]/hook", "6to4 address of 10.0.0.1"),
])
def test_private_destinations_are_refused_at_subscribe_time(strict_hub, url, kind):
    r = create(strict_hub.client, url=url)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "unsafe_url" and kind in error["details"]["reason"], error
    if "metadata" not in kind:
        assert "RESIMHUB_WEBHOOK_ALLOW_PRIVATE=1" in error["message"]
    assert strict_hub.client.get("/api/webhooks").json() == []
    r = strict_hub.client.patch("/api/webhooks/1", json={"url": url})
    assert r.status_code in (404, 422)


def test_metadata_behind_ipv6_forms_is_refused_even_with_private_addresses_allowed(hub):
    for url in ("http://[::a9fe:a9fe]/", "http://[::ffff:a9fe:a9fe]/", "http://[64:ff9b::a9fe:a9fe]/"):
        r = create(hub.client, url=url)
        assert r.status_code == 422 and "metadata" in r.json()["error"]["message"], r.text


def test_url_changes_are_checked_too(strict_hub, monkeypatch):
    import storage.webhooks

    monkeypatch.setattr(storage.webhooks, "resolve", lambda host, port: ["93.184.216.34"])
    r = create(strict_hub.client, url="https://hooks.example.com/x")
    assert r.status_code == 201, r.text
    monkeypatch.setattr(storage.webhooks, "resolve", lambda host, port: ["93.184.216.34", "10.1.1.1"])
    r = strict_hub.client.patch(f"/api/webhooks/{r.json()['id']}", json={"url": "https://mixed.example.com/"})
    assert r.status_code == 422 and "10.1.1.1" in r.json()["error"]["message"]


def test_unresolvable_hosts_are_refused(strict_hub, monkeypatch):
    import socket

    import storage.webhooks

    def fail(host, port):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(storage.webhooks, "resolve", fail)
    r = create(strict_hub.client, url="https://nowhere.invalid/")
    assert r.status_code == 422 and "does not resolve" in r.json()["error"]["message"]


def test_rotation_returns_a_new_secret_and_the_grace_expiry(hub):
    created = create(hub.client).json()
    r = hub.client.post(f"/api/webhooks/{created['id']}/rotate-secret", json={"grace_seconds": 3600})
    assert r.status_code == 200, r.text
    assert r.json()["secret"].startswith("whsec_") and r.json()["secret"] != created["secret"]
    assert r.json()["previous_secret_expires_at"].endswith("Z")
    assert hub.client.get(f"/api/webhooks/{created['id']}").json()["previous_secret_expires_at"]
    r = hub.client.post(f"/api/webhooks/{created['id']}/rotate-secret")  # default grace, no body
    assert r.status_code == 200
    r = hub.client.post(f"/api/webhooks/{created['id']}/rotate-secret", json={"grace_seconds": 0})
    assert r.status_code == 200 and r.json()["previous_secret_expires_at"] is None
    assert hub.client.post(f"/api/webhooks/{created['id']}/rotate-secret",
                           json={"grace_seconds": -1}).status_code == 422
    assert hub.client.post("/api/webhooks/999/rotate-secret").status_code == 404


def test_deliveries_of_unknown_things_are_404(hub):
    wid = create(hub.client).json()["id"]
    assert hub.client.get(f"/api/webhooks/{wid}/deliveries").json() == {"deliveries": [], "next_cursor": None}
    for path in (f"/api/webhooks/{wid}/deliveries/5", "/api/webhooks/77/deliveries"):
        r = hub.client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert hub.client.post(f"/api/webhooks/{wid}/deliveries/5/redeliver").status_code == 404
    assert hub.client.post("/api/webhooks/77/test").status_code == 404
    assert hub.client.get(f"/api/webhooks/{wid}/deliveries", params={"status": "weird"}).status_code == 422
