"""The transactional outbox and the relay, on SQLite and on the machine's PostgreSQL."""

import threading

import pytest
from sqlalchemy import func, select

from actors.relay import Relay
from storage import outbox
from storage.context import open_storage
from storage.events import EnvironmentRegistered
from storage.migrate import upgrade
from storage.models import Environment, EventRecord
from tests.support.hubs import settings_for
from tests.support.services import fresh_postgres_database


class RecordingBroker:
    """Stands in for the bus to count what a relay publishes."""

    def __init__(self, fail: bool = False):
        self.messages = []
        self.fail = fail
        self.lock = threading.Lock()

    def enqueue(self, message):
        if self.fail:
            raise ConnectionError("broker unreachable")
        with self.lock:
            self.messages.append(message)


class FakeActor:
    def __init__(self, name):
        self.name = name

    def message(self, doc):
        from dramatiq import Message

        return Message(queue_name="q", actor_name=self.name, args=(doc,), kwargs={}, options={})


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    if request.param == "sqlite":
        settings = settings_for(tmp_path)
        upgrade(settings)
        s = open_storage(settings)
        yield s
        s.close()
    else:
        with fresh_postgres_database() as url:
            settings = settings_for(tmp_path, RESIMHUB_DATABASE_URL=url)
            upgrade(settings)
            s = open_storage(settings)
            yield s
            s.close()


def _register(storage, name):
    with storage.db.session() as session:
        env = Environment(env_name=name)
        session.add(env)
        session.flush()
        outbox.record(session, EnvironmentRegistered(env.id, name, "task"))
        session.commit()


def test_event_and_state_change_share_a_transaction(storage):
    with storage.db.session() as session:
        env = Environment(env_name="CartPole-v1")
        session.add(env)
        session.flush()
        outbox.record(session, EnvironmentRegistered(env.id, "CartPole-v1", "t"))
        session.rollback()
    with storage.db.session() as session:
        assert session.scalar(select(func.count()).select_from(EventRecord)) == 0
        assert session.scalar(select(func.count()).select_from(Environment)) == 0
    _register(storage, "CartPole-v1")
    with storage.db.session() as session:
        assert session.scalar(select(func.count()).select_from(EventRecord)) == 1


def test_commit_wakes_the_local_relay(storage):
    storage.outbox_signal.wait(0)
    _register(storage, "A")
    assert storage.outbox_signal.wait(0.01) is True


def test_relay_publishes_each_event_once_and_keeps_them_while_the_broker_is_down(storage):
    routes = {"resimhub.environment.registered": ["consumer"]}
    broken = Relay(storage, RecordingBroker(fail=True), {"consumer": FakeActor("consumer")}, routes=routes)
    for i in range(30):
        _register(storage, f"env-{i}")
    with pytest.raises(ConnectionError):
        broken.publish_batch()
    with storage.db.session() as session:
        assert session.scalar(select(func.count()).where(EventRecord.published_at.is_(None))) == 30
    broker = RecordingBroker()
    relay = Relay(storage, broker, {"consumer": FakeActor("consumer")}, routes=routes)
    assert relay.drain() == 30
    assert relay.drain() == 0
    published = [m.args[0]["data"]["env_name"] for m in broker.messages]
    assert published == [f"env-{i}" for i in range(30)]


@pytest.mark.parametrize("storage", ["postgresql"], indirect=True)
def test_concurrent_relays_do_not_double_publish(storage):
    """Row locking (FOR UPDATE SKIP LOCKED) shares the outbox between relays without duplicates."""
    for i in range(400):
        _register(storage, f"env-{i}")
    broker = RecordingBroker()
    routes = {"resimhub.environment.registered": ["consumer"]}
    relays = [Relay(storage, broker, {"consumer": FakeActor("consumer")}, routes=routes) for _ in range(4)]
    for r in relays:
        r.batch_size = 10
    threads = [threading.Thread(target=r.drain) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = [m.args[0]["data"]["env_name"] for m in broker.messages]
    assert len(names) == 400 and len(set(names)) == 400
    assert sum(1 for r in relays if r.published) >= 2, "the work was not shared"


@pytest.mark.parametrize("storage", ["postgresql"], indirect=True)
def test_a_commit_elsewhere_wakes_a_listening_relay_through_notify(storage):
    import time

    from actors.relay import _PgListener
    from storage.outbox import OutboxSignal

    listener = _PgListener(storage)
    quiet = OutboxSignal()  # another process's relay: the local signal never fires
    try:
        listener.wait(0.05, quiet)  # connects and LISTENs
        threading.Timer(0.3, _register, args=(storage, "woken")).start()
        start = time.monotonic()
        listener.wait(5.0, quiet)
        waited = time.monotonic() - start
    finally:
        listener.close()
    assert 0.25 < waited < 2.0, f"woke after {waited:.2f}s"
