"""The database is the truth about a delivery: lost, duplicated or stale messages change nothing, and
the sweep the relay runs re-sends whatever is overdue."""

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

import actors.webhooks as webhooks
from actors.consumers import PERIODIC, Periodic
from actors.relay import Relay
from storage import outbox
from storage.events import ExperimentCreated
from storage.models import WebhookDelivery, utcnow
from tests.support.hubs import running_hub, settings_for
from tests.support.receiver import Receiver, Reply, settings_env, wait_deliveries


@pytest.fixture
def hub(tmp_path):
    with running_hub(settings_for(tmp_path, **settings_env())) as h:
        yield h


@pytest.fixture
def receiver():
    with Receiver() as rx:
        yield rx


def subscribe(hub, receiver) -> int:
    r = hub.client.post("/api/webhooks", json={"url": receiver.url, "event_types": ["resimhub.experiment.*"]})
    receiver.secrets.append(r.json()["secret"])
    return r.json()["id"]


def emit(hub) -> None:
    with hub.storage.db.session() as session:
        outbox.record(session, ExperimentCreated(experiment_id=1, name="e", env_name="CartPole-v1", agent="PPO",
                                                 seeds=[0]))
        session.commit()


def rows(hub) -> list[WebhookDelivery]:
    with hub.storage.db.session() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def wait_rows(hub, n: int, timeout: float = 10.0) -> list[WebhookDelivery]:
    deadline = time.monotonic() + timeout
    while len(found := rows(hub)) < n:
        assert time.monotonic() < deadline, "fan-out did not record the deliveries"
        time.sleep(0.05)
    return found


def lose_enqueues(monkeypatch) -> None:
    def broker_down(*_args, **_kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(webhooks, "send_delivery", broker_down)


def test_a_delivery_whose_message_was_lost_is_sent_by_the_sweep(hub, receiver, monkeypatch):
    wid = subscribe(hub, receiver)
    lose_enqueues(monkeypatch)
    emit(hub)
    (row,) = wait_rows(hub, 1)
    time.sleep(0.3)
    assert row.status == "pending" and receiver.count == 0
    monkeypatch.undo()
    # Not overdue by the grace period yet: left alone.
    assert webhooks.sweep(hub.storage, hub.runtime.actors) == 0
    assert webhooks.sweep(hub.storage, hub.runtime.actors, grace_s=0) == 1
    (delivery,) = wait_deliveries(hub.client, wid)
    assert delivery["status"] == "delivered" and delivery["attempt_count"] == 1
    assert receiver.wait_for(1)[0].verified == {receiver.secrets[0]: True}


def test_duplicate_and_stale_messages_make_one_request(hub, receiver, monkeypatch):
    wid = subscribe(hub, receiver)
    monkeypatch.setattr(webhooks, "send_delivery", lambda *a, **k: None)
    emit(hub)
    (row,) = wait_rows(hub, 1)
    monkeypatch.undo()
    deliver = hub.runtime.actors[webhooks.DELIVER]
    for _ in range(3):
        deliver.send(row.id, 0)
    deliver.send(row.id, 7)  # a token that never existed
    (delivery,) = wait_deliveries(hub.client, wid)
    time.sleep(0.3)
    assert receiver.count == 1 and delivery["attempt_count"] == 1
    deliver.send(row.id, 0)  # stale: the delivery has moved on
    time.sleep(0.3)
    assert receiver.count == 1


def test_an_attempt_whose_worker_died_is_logged_and_retried(hub, receiver, monkeypatch):
    wid = subscribe(hub, receiver)
    lose_enqueues(monkeypatch)
    emit(hub)
    (row,) = wait_rows(hub, 1)
    monkeypatch.undo()
    with hub.storage.db.session() as session:  # as a worker killed mid-request leaves it
        delivery = session.get(WebhookDelivery, row.id)
        delivery.status, delivery.attempts = "sending", 1
        delivery.lease_until = utcnow() - timedelta(seconds=1)
        session.commit()
    assert webhooks.sweep(hub.storage, hub.runtime.actors) == 1
    (delivery,) = wait_deliveries(hub.client, wid)
    assert delivery["status"] == "delivered" and delivery["attempt_count"] == 2
    first, second = delivery["attempts"]
    assert first["error"].startswith("interrupted") and second["status_code"] == 200
    assert receiver.count == 1


def test_waits_longer_than_a_message_delay_are_scheduled_by_the_sweep(hub, receiver, monkeypatch):
    monkeypatch.setattr(webhooks, "MAX_MESSAGE_DELAY_S", 0.01)
    receiver.script = [Reply(500)]
    wid = subscribe(hub, receiver)
    emit(hub)
    receiver.wait_for(1)
    time.sleep(0.5)  # past the 0.2 s retry, but nothing was enqueued for it
    assert receiver.count == 1
    (row,) = rows(hub)
    assert row.status == "pending" and row.retries == 1
    assert webhooks.sweep(hub.storage, hub.runtime.actors, grace_s=0) == 1
    (delivery,) = wait_deliveries(hub.client, wid)
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]


def test_the_relay_runs_the_sweep_between_passes(hub):
    jobs = {job.name: job.fn for job in PERIODIC}
    assert jobs["webhook_sweep"] is webhooks.sweep and "snapshot_compaction" in jobs
    calls = []
    relay = Relay(hub.storage, hub.runtime.broker, hub.runtime.actors,
                  periodic=[Periodic("probe", 60.0, lambda storage, actors: calls.append((storage, actors)))])
    relay.run_periodic()
    relay.run_periodic()  # not due again for a minute
    assert calls == [(hub.storage, hub.runtime.actors)]


def test_a_sweep_without_the_delivery_actor_does_nothing(hub):
    assert webhooks.sweep(hub.storage, {}) == 0
