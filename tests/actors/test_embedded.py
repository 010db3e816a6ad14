"""The embedded hub's broker lives in its own memory: an event's row stays unpublished until every
consumer finished with it, so what a crash interrupts is sent again by the next start."""

import os
import threading
import time
from datetime import timedelta

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select

from actors import embedded
from actors.bus import GIVE_UP_ACTOR
from actors.relay import Relay
from storage import ledger, outbox, tasks
from storage.context import open_storage
from storage.events import EnvironmentRegistered, ExperimentCreated
from storage.migrate import upgrade
from storage.models import EventRecord, WebhookAttempt, WebhookDelivery, WebhookSubscription, utcnow
from tests.support.hubs import running_hub, settings_for
from tests.support.receiver import Receiver, settings_env, wait_deliveries

KIND = "resimhub.environment.registered"


def _open(tmp_path, **env):
    settings = settings_for(tmp_path, **env)
    upgrade(settings)
    return open_storage(settings)


@pytest.fixture
def storage(tmp_path):
    s = _open(tmp_path)
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_storage(request, tmp_path):
    if request.param == "sqlite":
        s = _open(tmp_path)
        yield s
        s.close()
        return
    from tests.support.services import fresh_postgres_database

    with fresh_postgres_database() as url:
        s = _open(tmp_path, RESIMHUB_DATABASE_URL=url)
        yield s
        s.close()


class Bus:
    """A stub broker with a worker, one consumer ``handle`` and the give-up actor."""

    def __init__(self, handler, *, retries: int = 0) -> None:
        self.broker = StubBroker()
        self.gave_up: list[dict] = []
        self.give_up = dramatiq.Actor(lambda message, info: self.gave_up.append(message), broker=self.broker,
                                      actor_name=GIVE_UP_ACTOR, queue_name="failures", priority=0,
                                      options={"max_retries": 0})
        self.handle = dramatiq.Actor(handler, broker=self.broker, actor_name="handle", queue_name="work", priority=0,
                                     options={"max_retries": retries, "min_backoff": 10, "max_backoff": 20,
                                              "retry_when": lambda n, exc: n < retries and isinstance(exc, OSError),
                                              "on_retry_exhausted": GIVE_UP_ACTOR})
        self.worker = Worker(self.broker, worker_threads=1, worker_timeout=20)

    def relay(self, storage) -> Relay:
        return Relay(storage, self.broker, {"handle": self.handle, GIVE_UP_ACTOR: self.give_up},
                     routes={KIND: ["handle"]}, periodic=[])

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.worker.stop(timeout=2000)
        self.broker.close()


def record(storage, n: int = 1) -> None:
    with storage.db.session() as session:
        for i in range(n):
            outbox.record(session, EnvironmentRegistered(i, f"env-{i}", f"task-{i}"))
        session.commit()


def unpublished(storage) -> int:
    with storage.db.session() as session:
        return session.scalar(select(func.count()).select_from(EventRecord).where(EventRecord.published_at.is_(None)))


def settle_until(relay: Relay, storage, expected: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        relay.publish_batch()
        if unpublished(storage) == expected:
            return
        assert time.monotonic() < deadline, f"{unpublished(storage)} events unpublished, expected {expected}"
        time.sleep(0.02)


def test_a_row_is_published_only_once_its_consumer_returned(storage):
    release = threading.Event()
    started = threading.Event()

    def handler(event):
        started.set()
        assert release.wait(10)

    with Bus(handler) as bus:
        relay = bus.relay(storage)
        assert relay.tracker is not None
        bus.worker.start()
        record(storage)
        assert relay.publish_batch() == 1
        assert started.wait(5)
        assert relay.publish_batch() == 0  # handed over once, not again while it runs
        assert unpublished(storage) == 1 and relay.tracker.in_flight == 1
        release.set()
        settle_until(relay, storage, 0)
        assert relay.tracker.in_flight == 0


def test_a_retried_message_keeps_its_row_until_the_retry_succeeded(storage):
    calls = []

    def handler(event):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ConnectionError("the database went away")  # an OSError: retried

    with Bus(handler, retries=3) as bus:
        relay = bus.relay(storage)
        bus.worker.start()
        record(storage)
        relay.publish_batch()
        deadline = time.monotonic() + 10
        while len(calls) < 2:
            assert time.monotonic() < deadline
            relay.publish_batch()
            assert unpublished(storage) == 1 or len(calls) >= 2  # never settled by the failed attempt
            time.sleep(0.005)
        settle_until(relay, storage, 0)
        assert len(calls) == 2


def test_a_message_given_up_on_is_settled_once_the_give_up_was_recorded(storage):
    def handler(event):
        raise ValueError("a bug")  # not retried: straight to record_give_up

    with Bus(handler, retries=3) as bus:
        relay = bus.relay(storage)
        bus.worker.start()
        record(storage)
        relay.publish_batch()
        settle_until(relay, storage, 0)
        assert len(bus.gave_up) == 1 and bus.gave_up[0]["actor_name"] == "handle"


def test_after_a_crash_the_next_relay_sends_every_unsettled_event_again(storage):
    handled = []
    with Bus(lambda event: handled.append(event["id"])) as first:
        relay = first.relay(storage)
        record(storage, 3)
        assert relay.publish_batch() == 3  # in the broker's memory, and the worker never ran: the crash
    assert unpublished(storage) == 3 and handled == []
    with Bus(lambda event: handled.append(event["id"])) as second:
        relay = second.relay(storage)
        second.worker.start()
        assert relay.publish_batch() == 3
        settle_until(relay, storage, 0)
    with storage.db.session() as session:
        assert sorted(handled) == sorted(session.scalars(select(EventRecord.event_id)))


def test_a_durable_broker_still_marks_rows_when_they_are_enqueued(storage):
    from tests.storage.test_outbox import FakeActor, RecordingBroker

    relay = Relay(storage, RecordingBroker(), {"consumer": FakeActor("consumer")}, routes={KIND: ["consumer"]})
    assert relay.tracker is None
    record(storage, 2)
    assert relay.drain() == 2 and unpublished(storage) == 0


def test_published_events_of_unfinished_tasks_without_a_ledger_row_are_reopened(any_storage):
    """What an earlier version left: rows marked published on enqueue whose consumer never finished."""
    storage = any_storage
    with storage.db.session() as session:
        running, done, handled = (tasks.create(session, "verify_environment") for _ in range(3))
        session.flush()
        tasks.mark_running(session, running)
        tasks.mark_running(session, handled)
        tasks.succeed(session, done, {})
        lost = outbox.record(session, EnvironmentRegistered(1, "a", running.id))
        outbox.record(session, EnvironmentRegistered(2, "b", done.id))
        seen = outbox.record(session, EnvironmentRegistered(3, "c", handled.id))
        ledger.mark(session, seen.id, "verify_environment")
        outbox.record(session, ExperimentCreated(experiment_id=1, name="e", env_name="a", agent="PPO", seeds=[0]))
        session.commit()
    with storage.db.session() as session:
        outbox.sequence(session)
        session.execute(EventRecord.__table__.update().values(published_at=utcnow()))
        session.commit()
    assert embedded.reopen_lost_work(storage) == 1
    with storage.db.session() as session:
        assert list(session.scalars(select(EventRecord.event_id).where(EventRecord.published_at.is_(None)))) == [
            lost.id]
    assert embedded.reopen_lost_work(storage) == 0  # already waiting for the relay


def test_only_one_embedded_hub_holds_a_data_directory(tmp_path):
    fd = embedded.hold_data_dir(tmp_path / "data")
    try:
        with pytest.raises(embedded.DataDirInUse, match=f"pid {os.getpid()}"):
            embedded.hold_data_dir(tmp_path / "data")
    finally:
        os.close(fd)
    os.close(embedded.hold_data_dir(tmp_path / "data"))  # free again once the holder is gone


def test_webhook_deliveries_cut_off_by_a_crash_continue_at_start(tmp_path):
    with Receiver() as receiver, running_hub(settings_for(tmp_path, **settings_env()), relay=False) as hub:
        r = hub.client.post("/api/webhooks", json={"url": receiver.url, "event_types": ["resimhub.experiment.*"]})
        receiver.secrets.append(r.json()["secret"])
        now = utcnow()
        with hub.storage.db.session() as session:
            subscription = session.get(WebhookSubscription, r.json()["id"])
            for i in range(3):
                outbox.record(session, ExperimentCreated(experiment_id=i, name="e", env_name="a", agent="PPO",
                                                         seeds=[0]))
            session.flush()
            events = list(session.scalars(select(EventRecord.event_id).order_by(EventRecord.seq)))
            # Mid-attempt (lease still running), due now, and due in a moment: every message was lost.
            def delivery(i: int, **state) -> WebhookDelivery:
                return WebhookDelivery(subscription_id=subscription.id, event_id=events[i], event_type="e",
                                       message_id=f"m{i}", **state)

            rows = [delivery(0, status="sending", attempts=1, next_attempt_at=now,
                             lease_until=now + timedelta(seconds=170)),
                    delivery(1, status="pending", attempts=0, next_attempt_at=now - timedelta(seconds=1)),
                    delivery(2, status="pending", attempts=1, retries=1, next_attempt_at=now + timedelta(seconds=1.5))]
            session.add_all(rows)
            session.commit()
        from actors import webhooks

        start = time.monotonic()
        assert webhooks.recover(hub.storage, hub.runtime.actors) == 3
        found = wait_deliveries(hub.client, r.json()["id"], count=3)
        assert [d["status"] for d in found] == ["delivered"] * 3
        assert time.monotonic() - start >= 1.0, "the delayed retry went early"
        with hub.storage.db.session() as session:
            interrupted = session.scalars(select(WebhookAttempt).where(WebhookAttempt.number == 1)
                                          .join(WebhookDelivery).where(WebhookDelivery.message_id == "m0")).one()
        assert interrupted.error.startswith("interrupted")
        assert receiver.count == 3
