"""One HTTP attempt: pinned to the checked address, no redirects, bounded reads and time, and the
SSRF check repeated at delivery time so DNS rebinding cannot reach a private address."""

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

import storage.webhooks as rules
from actors import webhook_delivery
from actors.webhook_delivery import post, retry_after_seconds
from actors.webhooks import next_delay
from tests.support.hubs import running_hub, settings_for
from tests.support.receiver import Receiver, Reply, wait_deliveries


@pytest.fixture
def receiver():
    with Receiver() as rx:
        yield rx


def test_connects_to_the_checked_address_and_sends_the_original_host(receiver, monkeypatch):
    looked_up = []

    def resolve(host, port):
        looked_up.append((host, port))
        return ["127.0.0.1"]

    monkeypatch.setattr(rules, "resolve", resolve)
    outcome = post(f"http://hooks.example:{receiver.port}/in?x=1", b"{}", {"webhook-id": "msg_x"},
                   allow_private=True)
    assert outcome.ok and outcome.status_code == 200 and outcome.body == "ok"
    (got,) = receiver.wait_for(1)
    assert got.headers["host"] == f"hooks.example:{receiver.port}" and got.path == "/in?x=1"
    assert looked_up == [("hooks.example", receiver.port)]


def test_falls_back_to_the_next_checked_address(receiver, monkeypatch):
    # Nothing listens on the receiver's port over IPv6: the second address is used.
    monkeypatch.setattr(rules, "resolve", lambda host, port: ["::1", "127.0.0.1"])
    assert post(f"http://dual.example:{receiver.port}/", b"{}", {}, allow_private=True).ok


def test_private_address_refused_at_delivery_time_without_connecting(receiver, monkeypatch):
    monkeypatch.setattr(rules, "resolve", lambda host, port: ["127.0.0.1"])
    outcome = post(f"http://sneaky.example:{receiver.port}/", b"{}", {}, allow_private=False)
    assert outcome.status_code is None and not outcome.ok
    assert outcome.error.startswith("refused:") and "loopback" in outcome.error
    time.sleep(0.1)
    assert receiver.count == 0


@pytest.mark.parametrize("resolved", [["::127.0.0.1"], ["::ffff:0:7f00:1"], ["::ffff:127.0.0.1"],
                                      ["64:ff9b::7f00:1"], ["2002:7f00:1::1"], ["8.8.8.8", "::7f00:1"]])
def test_ipv6_forms_of_loopback_are_refused_at_delivery_time(receiver, monkeypatch, resolved):
    monkeypatch.setattr(rules, "resolve", lambda host, port: resolved)
    outcome = post(f"http://sneaky.example:{receiver.port}/", b"{}", {}, allow_private=False)
    assert outcome.status_code is None and outcome.error.startswith("refused: sneaky.example resolves to ")
    assert "127.0.0.1, a loopback address" in outcome.error and "RESIMHUB_WEBHOOK_ALLOW_PRIVATE" in outcome.error
    time.sleep(0.1)
    assert receiver.count == 0


def test_a_literal_ipv4_compatible_host_is_refused_at_delivery_time(receiver):
    """A URL stored before the check knew these forms is refused when it is attempted."""
    outcome = post(f"http://[::127.0.0.1]:{receiver.port}/", b"{}", {}, allow_private=False)
    assert outcome.error.startswith("refused: ::127.0.0.1 is an IPv4-compatible IPv6 address of 127.0.0.1")
    time.sleep(0.1)
    assert receiver.count == 0


def test_redirects_are_not_followed(receiver):
    with Receiver() as elsewhere:
        receiver.default = Reply(307, headers={"Location": elsewhere.url})
        outcome = post(receiver.url, b"{}", {}, allow_private=True)
        assert outcome.status_code == 307 and not outcome.ok
        time.sleep(0.1)
        assert elsewhere.count == 0


def test_only_the_start_of_a_large_body_is_read_and_kept(receiver):
    receiver.default = Reply(500, body=b"x" * 5_000_000)
    outcome = post(receiver.url, b"{}", {}, allow_private=True)
    assert outcome.status_code == 500 and len(outcome.body) == webhook_delivery.KEPT_BODY_CHARS


def test_a_slow_receiver_times_out(receiver, monkeypatch):
    monkeypatch.setattr(webhook_delivery, "TIMEOUT_S", 0.3)
    receiver.default = Reply(200, delay_s=1.0)
    started = time.monotonic()
    outcome = post(receiver.url, b"{}", {}, allow_private=True)
    assert outcome.status_code is None and "timed out" in outcome.error
    assert time.monotonic() - started < 0.9


def test_connection_refused_is_an_outcome_not_an_exception():
    down = Receiver()
    outcome = post(down.url, b"{}", {}, allow_private=True)
    assert outcome.status_code is None and "could not connect" in outcome.error


def test_retry_after_forms():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_next_delay_follows_the_schedule_with_jitter_and_retry_after():
    schedule = (10.0, 100.0)
    delays = [next_delay(schedule, 0, None) for _ in range(200)]
    assert 9.0 <= min(delays) < 9.5 and 10.5 < max(delays) <= 11.0
    assert 90.0 <= next_delay(schedule, 1, None) <= 110.0
    assert next_delay(schedule, 2, None) is None  # used up
    assert next_delay(schedule, 0, 500.0) == 500.0  # Retry-After wins when longer
    assert 9.0 <= next_delay(schedule, 0, 1.0) <= 11.0  # never shortens the schedule
    assert next_delay(schedule, 0, 10**9) == 86_400.0  # capped


def test_dns_rebinding_after_subscribing_is_refused_at_delivery(tmp_path, receiver, monkeypatch):
    """The name resolved to a public address when subscribed, to loopback when delivered."""
    answers = iter([["93.184.216.34"]])
    monkeypatch.setattr(rules, "resolve", lambda host, port: next(answers, ["127.0.0.1"]))
    settings = settings_for(tmp_path, RESIMHUB_WEBHOOK_RETRY_SCHEDULE="0.1,0.1")
    assert not settings.webhook_allow_private
    with running_hub(settings) as hub:
        r = hub.client.post("/api/webhooks", json={"url": f"http://rebind.example:{receiver.port}/hook",
                                                   "event_types": ["*"]})
        assert r.status_code == 201, r.text
        hub.client.post(f"/api/webhooks/{r.json()['id']}/test")
        (delivery,) = wait_deliveries(hub.client, r.json()["id"])
    assert delivery["status"] == "failed" and delivery["attempt_count"] == 3
    for attempt in delivery["attempts"]:
        assert attempt["status_code"] is None
        assert attempt["error"] == ("refused: rebind.example resolves to 127.0.0.1, which is a loopback address; "
                                    "webhooks may only reach public addresses (RESIMHUB_WEBHOOK_ALLOW_PRIVATE=1 "
                                    "allows loopback and private receivers for local development)")
    assert receiver.count == 0
