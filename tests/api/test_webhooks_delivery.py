"""Deliveries end to end on the embedded hub: outbox → relay → fan-out → deliver → a real receiver on
loopback that verifies every request with the ``standardwebhooks`` package."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from actors import signing
from storage import outbox
from storage.events import ExperimentCreated
from tests.support.hubs import running_hub, settings_for
from tests.support.receiver import Receiver, Reply, deliveries, settings_env, wait_deliveries


@pytest.fixture
def hub(tmp_path):
    with running_hub(settings_for(tmp_path, **settings_env())) as h:
        yield h


@pytest.fixture
def receiver():
    with Receiver() as rx:
        yield rx


def subscribe(hub, receiver, **body) -> dict:
    r = hub.client.post("/api/webhooks", json={"url": receiver.url, "event_types": ["resimhub.experiment.created"],
                                               **body})
    assert r.status_code == 201, r.text
    receiver.secrets.append(r.json()["secret"])
    return r.json()


def emit(hub, n: int = 1, name: str = "exp") -> list[str]:
    """Commit ``n`` events nobody but the webhooks consumes; returns their ids."""
    with hub.storage.db.session() as session:
        ids = [outbox.record(session, ExperimentCreated(experiment_id=i, name=f"{name}{i}", env_name="CartPole-v1",
                                                        agent="PPO", seeds=[0])).id for i in range(n)]
        session.commit()
    return ids


def events_of_type(hub, type_: str) -> list[dict]:
    return hub.client.get("/api/events", params={"type": type_}).json()["events"]


def test_a_real_pipeline_event_arrives_signed_as_a_cloudevent(hub, receiver):
    sub = subscribe(hub, receiver, event_types=["resimhub.environment.*"])
    r = hub.client.post("/api/environments", json={"env_name": "CartPole-v1"})
    hub.wait_task(r.json()["task_id"])
    got = receiver.wait_for(2)
    found = wait_deliveries(hub.client, sub["id"], count=2)
    assert {d["status"] for d in found} == {"delivered"}
    by_type = {g.json()["type"]: g for g in got}
    assert set(by_type) == {"resimhub.environment.registered", "resimhub.environment.verified"}
    for g in got:
        assert g.verified == {sub["secret"]: True}
        assert Webhook(sub["secret"]).verify(g.body, g.headers)["specversion"] == "1.0"
        assert g.headers["content-type"].startswith("application/cloudevents+json")
        assert g.headers["webhook-id"].startswith("msg_") and g.headers["webhook-signature"].startswith("v1,")
        assert abs(int(g.headers["webhook-timestamp"]) - time.time()) < 60
    verified = by_type["resimhub.environment.verified"].json()
    assert verified["source"] == "resimhub" and verified["subject"].startswith("environments/")
    assert verified["data"]["spec"]["action_space"]["n"] == 2
    # The body is the event exactly as the event log has it.
    logged = {e["id"]: e for e in hub.client.get("/api/events").json()["events"]}
    assert {k: v for k, v in logged[verified["id"]].items() if k != "seq"} == verified
    assert {d["message_id"] for d in found} == {g.webhook_id for g in got}


def test_tampered_body_and_old_timestamp_fail_verification(hub, receiver):
    sub = subscribe(hub, receiver)
    emit(hub)
    (got,) = receiver.wait_for(1)
    wh = Webhook(sub["secret"])
    wh.verify(got.body, got.headers)
    tampered = got.body.replace(b'"exp0"', b'"exp9"')
    assert tampered != got.body
    with pytest.raises(WebhookVerificationError):
        wh.verify(tampered, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(got.body, got.headers)
    # A correctly signed but stale request is refused (replay protection): sign as of ten minutes ago.
    old = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp())
    stale = signing.headers([sub["secret"]], got.webhook_id, old, got.body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        wh.verify(got.body, stale)
    # Changing only the timestamp header breaks the signature (one second off the signed one: "now - 1"
    # was the signed timestamp itself whenever the delivery had arrived a second earlier).
    signed = int(got.headers["webhook-timestamp"])
    with pytest.raises(WebhookVerificationError):
        wh.verify(got.body, {**got.headers, "webhook-timestamp": str(signed - 1)})


def test_two_failures_then_success_is_three_attempts_and_one_delivery(hub, receiver):
    receiver.script = [Reply(500, body=b"boom"), Reply(500, body=b"boom again"), Reply(200)]
    sub = subscribe(hub, receiver)
    emit(hub)
    got = receiver.wait_for(3)
    (delivery,) = wait_deliveries(hub.client, sub["id"])
    assert delivery["status"] == "delivered" and delivery["attempt_count"] == 3
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3]
    assert delivery["attempts"][0]["response_body"] == "boom" and delivery["attempts"][0]["latency_ms"] > 0
    assert {g.webhook_id for g in got} == {delivery["message_id"]}  # one id for every attempt
    assert all(g.verified[sub["secret"]] for g in got)
    # The gaps follow the schedule (0.2 s then 0.4 s, ±10 %).
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    assert 0.17 <= gaps[0] < 1.5 and 0.35 <= gaps[1] < 2.0, gaps
    time.sleep(0.5)
    assert receiver.count == 3
    assert hub.client.get(f"/api/webhooks/{sub['id']}").json()["consecutive_failures"] == 0


def test_receiver_down_for_a_while_then_delivered(hub):
    receiver = Receiver()  # port reserved, nothing listening: connections are refused
    sub = subscribe(hub, receiver)
    emit(hub)
    deadline = time.monotonic() + 20
    while not any(d["attempts"] for d in deliveries(hub.client, sub["id"])):  # a first attempt is logged
        assert time.monotonic() < deadline
        time.sleep(0.02)
    receiver.up()
    try:
        (delivery,) = wait_deliveries(hub.client, sub["id"])
        assert delivery["status"] == "delivered"
        assert delivery["attempt_count"] >= 2
        failed = delivery["attempts"][:-1]
        assert all(a["status_code"] is None and "connect" in a["error"] for a in failed), failed
        assert receiver.count == 1 and receiver.received[0].verified[sub["secret"]]
    finally:
        receiver.down()


def test_retry_after_is_honoured(hub, receiver):
    receiver.script = [Reply(503, headers={"Retry-After": "2"}), Reply(429, headers={"Retry-After": "1"})]
    sub = subscribe(hub, receiver)
    emit(hub)
    got = receiver.wait_for(3, timeout=30)
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    assert 1.95 <= gaps[0] < 3.5, gaps  # instead of the schedule's 0.2 s
    assert 0.95 <= gaps[1] < 2.5, gaps
    (delivery,) = wait_deliveries(hub.client, sub["id"])
    assert [a["status_code"] for a in delivery["attempts"]] == [503, 429, 200]


def test_gone_disables_the_subscription(hub, receiver):
    receiver.default = Reply(410, body=b"gone")
    sub = subscribe(hub, receiver)
    emit(hub)
    (delivery,) = wait_deliveries(hub.client, sub["id"])
    assert delivery["status"] == "failed" and delivery["attempt_count"] == 1  # no retries after a 410
    state = hub.client.get(f"/api/webhooks/{sub['id']}").json()
    assert state["status"] == "disabled" and "410" in state["status_reason"]
    (event,) = events_of_type(hub, "resimhub.webhook.disabled")
    assert event["subject"] == f"webhooks/{sub['id']}" and event["data"]["status_code"] == 410
    emit(hub, name="later")
    time.sleep(0.6)
    assert len(deliveries(hub.client, sub["id"])) == 1 and receiver.count == 1
    # Resuming re-enables it.
    receiver.default = Reply(200)
    assert hub.client.patch(f"/api/webhooks/{sub['id']}", json={"status": "active"}).json()["status"] == "active"
    emit(hub, name="again")
    assert len(wait_deliveries(hub.client, sub["id"], count=2)) == 2
    assert receiver.wait_for(2)[-1].json()["data"]["name"] == "again0"


def test_consecutive_failed_deliveries_pause_the_subscription(hub, receiver):
    receiver.default = Reply(500)
    ops = Receiver().up()
    try:
        watcher = hub.client.post("/api/webhooks", json={"url": ops.url, "event_types": ["resimhub.webhook.*"]})
        sub = subscribe(hub, receiver, pause_after_failures=2)
        emit(hub, 2)
        found = wait_deliveries(hub.client, sub["id"], count=2)
        assert [d["status"] for d in found] == ["failed", "failed"]
        assert all(d["attempt_count"] == 4 for d in found)  # the first try and three retries
        state = hub.client.get(f"/api/webhooks/{sub['id']}").json()
        assert state["status"] == "paused" and state["consecutive_failures"] == 2
        assert "2 consecutive" in state["status_reason"]
        (event,) = events_of_type(hub, "resimhub.webhook.paused")
        assert event["data"] == {"webhook_id": sub["id"], "url": receiver.url, "reason": state["status_reason"],
                                 "consecutive_failures": 2}
        # Another subscription hears about it.
        (notice,) = ops.wait_for(1)
        assert notice.json()["type"] == "resimhub.webhook.paused"
        assert notice.json()["data"]["webhook_id"] == sub["id"] and watcher.status_code == 201
        # Paused: new events are not delivered.
        emit(hub, name="while-paused")
        time.sleep(0.6)
        assert len(deliveries(hub.client, sub["id"])) == 2
    finally:
        ops.down()


def test_pausing_cancels_the_retries_in_flight(hub, receiver):
    receiver.default = Reply(503, headers={"Retry-After": "2"})  # time enough to pause before the retry
    sub = subscribe(hub, receiver)
    emit(hub)
    receiver.wait_for(1)
    hub.client.patch(f"/api/webhooks/{sub['id']}", json={"status": "paused"})
    (delivery,) = wait_deliveries(hub.client, sub["id"])
    assert delivery["status"] == "cancelled" and "paused" in delivery["last_error"]
    assert delivery["attempt_count"] == 1 and receiver.count == 1


def test_redelivery_sends_the_same_message_again(hub, receiver):
    sub = subscribe(hub, receiver)
    emit(hub)
    (first,) = receiver.wait_for(1)
    (delivery,) = wait_deliveries(hub.client, sub["id"])
    r = hub.client.post(f"/api/webhooks/{sub['id']}/deliveries/{delivery['id']}/redeliver")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "pending" and r.json()["manual"] is True
    got = receiver.wait_for(2)
    assert got[1].webhook_id == first.webhook_id and got[1].body == first.body
    assert got[1].verified[sub["secret"]]
    (again,) = wait_deliveries(hub.client, sub["id"])
    assert again["status"] == "delivered" and again["attempt_count"] == 2
    assert [a["number"] for a in again["attempts"]] == [1, 2]
    redelivered = events_of_type(hub, "resimhub.webhook.redelivery.requested")
    assert [e["data"] for e in redelivered] == [{"webhook_id": sub["id"], "delivery_id": delivery["id"]}]
    # The command event itself is delivered to nobody, not even to "*" subscribers.
    time.sleep(0.3)
    assert receiver.count == 2


def test_redelivering_a_delivery_in_flight_is_a_conflict(hub, receiver):
    receiver.default = Reply(503, headers={"Retry-After": "3"})
    sub = subscribe(hub, receiver)
    emit(hub)
    receiver.wait_for(1)
    (delivery,) = deliveries(hub.client, sub["id"])
    r = hub.client.post(f"/api/webhooks/{sub['id']}/deliveries/{delivery['id']}/redeliver")
    assert r.status_code == 409 and r.json()["error"]["code"] == "delivery_in_progress"


def test_redelivery_of_a_failed_delivery_after_the_receiver_is_fixed(hub, receiver):
    receiver.default = Reply(500)
    sub = subscribe(hub, receiver, pause_after_failures=1)
    emit(hub)
    (delivery,) = wait_deliveries(hub.client, sub["id"])
    assert delivery["status"] == "failed"
    assert hub.client.get(f"/api/webhooks/{sub['id']}").json()["status"] == "paused"
    receiver.default = Reply(200)
    hub.client.post(f"/api/webhooks/{sub['id']}/deliveries/{delivery['id']}/redeliver")
    (again,) = wait_deliveries(hub.client, sub["id"])
    # Attempted although the subscription is paused: the user asked for it.
    assert again["status"] == "delivered" and again["attempt_count"] == 5


def test_ping_goes_to_that_subscription_only(hub, receiver):
    other = Receiver().up()
    try:
        sub = subscribe(hub, receiver)  # subscribed to experiment events only
        hub.client.post("/api/webhooks", json={"url": other.url, "event_types": ["*"]})
        r = hub.client.post(f"/api/webhooks/{sub['id']}/test")
        assert r.status_code == 202, r.text
        assert r.json()["event_type"] == "resimhub.webhook.pinged" and r.json()["status"] == "pending"
        (got,) = receiver.wait_for(1)
        assert got.verified[sub["secret"]]
        assert got.json()["type"] == "resimhub.webhook.pinged" and got.json()["data"] == {"webhook_id": sub["id"]}
        assert got.webhook_id == r.json()["message_id"]
        time.sleep(0.3)
        assert other.count == 0
    finally:
        other.down()


def test_rotation_signs_with_both_secrets_during_the_grace_period(hub, receiver):
    sub = subscribe(hub, receiver)
    old = sub["secret"]
    r = hub.client.post(f"/api/webhooks/{sub['id']}/rotate-secret", json={"grace_seconds": 2})
    new = r.json()["secret"]
    receiver.secrets.append(new)
    hub.client.post(f"/api/webhooks/{sub['id']}/test")
    (during,) = receiver.wait_for(1)
    assert during.verified == {old: True, new: True}
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    time.sleep(2.1)
    hub.client.post(f"/api/webhooks/{sub['id']}/test")
    after = receiver.wait_for(2)[1]
    assert after.verified == {old: False, new: True}
    assert len(after.headers["webhook-signature"].split(" ")) == 1


def test_deliveries_paginate_newest_first_and_filter_by_status(hub, receiver):
    sub = subscribe(hub, receiver)
    for _ in range(5):
        hub.client.post(f"/api/webhooks/{sub['id']}/test")
    wait_deliveries(hub.client, sub["id"], count=5)
    seen, cursor = [], None
    while True:
        page = hub.client.get(f"/api/webhooks/{sub['id']}/deliveries",
                              params={"limit": 2, **({"before": cursor} if cursor else {})}).json()
        seen += page["deliveries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [d["id"] for d in seen]
    assert len(ids) == 5 and ids == sorted(ids, reverse=True)
    assert len(deliveries(hub.client, sub["id"], status="delivered")) == 5
    assert deliveries(hub.client, sub["id"], status="failed") == []
    one = hub.client.get(f"/api/webhooks/{sub['id']}/deliveries/{ids[0]}").json()
    assert one["id"] == ids[0] and one["attempts"][0]["status_code"] == 200


def test_deleting_a_subscription_drops_its_queued_retries(hub, receiver):
    receiver.default = Reply(500)
    sub = subscribe(hub, receiver)
    emit(hub)
    receiver.wait_for(1)
    assert hub.client.delete(f"/api/webhooks/{sub['id']}").status_code == 204
    count = receiver.count
    time.sleep(1.0)
    assert receiver.count == count


def test_an_event_fans_out_once_per_matching_subscription(hub):
    with Receiver() as a, Receiver() as b, Receiver() as c:
        sa = subscribe(hub, a, event_types=["resimhub.experiment.*"])
        sb = subscribe(hub, b, event_types=["*"])
        subscribe(hub, c, event_types=["resimhub.evaluation.*"])
        (event_id,) = emit(hub)
        assert a.wait_for(1)[0].json()["id"] == event_id
        assert b.wait_for(1)[0].json()["id"] == event_id
        time.sleep(0.3)
        assert (a.count, b.count, c.count) == (1, 1, 0)
        assert a.received[0].webhook_id != b.received[0].webhook_id
        assert len(deliveries(hub.client, sa["id"])) == len(deliveries(hub.client, sb["id"])) == 1


def test_body_is_compact_json(hub, receiver):
    subscribe(hub, receiver)
    emit(hub)
    (got,) = receiver.wait_for(1)
    assert got.body == json.dumps(got.json(), separators=(",", ":"), ensure_ascii=False).encode()
