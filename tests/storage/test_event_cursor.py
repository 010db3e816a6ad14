"""The event log's cursor under concurrent writers: a reader tailing ``GET /api/events?after=<seq>``
sees every committed event exactly once, in cursor order, on SQLite and on the real PostgreSQL.

Each writer thread has its own session; it inserts events (so PostgreSQL hands out their numbers at
INSERT), waits a random few milliseconds and then commits or rolls back. Transactions therefore
commit out of insertion order, which is exactly what used to make the cursor skip events.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from actors.relay import Relay
from api.services import events
from storage import outbox
from storage.events import EnvironmentRegistered
from tests.storage.test_outbox import FakeActor, RecordingBroker
from tests.support.hubs import running_hub, settings_for
from tests.support.services import fresh_postgres_database

WRITERS = 6
TRANSACTIONS_PER_WRITER = 50
#: Tailing readers: two through HTTP, one calling the service function directly (no HTTP overhead,
#: so it polls fastest); each with its own page size.
READERS = (("http", 7), ("http", 50), ("service", 3))
ROUTES = {"resimhub.environment.registered": ["consumer"]}


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request, tmp_path):
    if request.param == "sqlite":
        with running_hub(settings_for(tmp_path), worker=False, relay=False) as h:
            yield h
    else:
        with fresh_postgres_database() as url:
            settings = settings_for(tmp_path, RESIMHUB_DATABASE_URL=url)
            with running_hub(settings, worker=False, relay=False) as h:
                yield h


def _writer(storage, index: int, committed: list[str], errors: list[BaseException]) -> None:
    rng = random.Random(index)
    try:
        for n in range(TRANSACTIONS_PER_WRITER):
            with storage.db.session() as session:
                ids = []
                for k in range(rng.randint(1, 3)):
                    envelope = outbox.record(session, EnvironmentRegistered(index * 1000 + n, f"w{index}-{n}-{k}",
                                                                            "task"))
                    ids.append(envelope.id)
                session.flush()  # the rows (and their numbers) exist now, invisible to others
                time.sleep(rng.uniform(0.0, 0.02))
                if rng.random() < 0.1:
                    session.rollback()  # these must never be seen
                    continue
                session.commit()
                committed.extend(ids)  # list.extend is atomic under the GIL
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def _http_pages(client):
    def read(after, limit):
        r = client.get("/api/events", params={"limit": limit, **({} if after is None else {"after": after})})
        assert r.status_code == 200, r.text
        return r.json()["events"]

    return read


def _service_pages(storage):
    """The service function behind the route, on a session of its own per page (as a request)."""

    def read(after, limit):
        with storage.db.session() as session:
            return events.page(session, after=after, limit=limit)["events"]

    return read


def _tail(read, limit: int, seen: list[dict], stop: threading.Event, errors: list[BaseException]) -> None:
    cursor = None
    try:
        while True:
            finishing = stop.is_set()  # read before the page, so the last pass follows every commit
            events = read(cursor, limit)
            seen.extend(events)
            if events:
                cursor = events[-1]["seq"]
            if finishing and not events:
                return
            if not events:
                time.sleep(0.002)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def test_a_tailing_reader_sees_every_event_exactly_once_in_cursor_order(hub):
    storage = hub.storage
    committed: list[str] = []
    seen_by: list[list[dict]] = [[] for _ in READERS]
    errors: list[BaseException] = []
    stop = threading.Event()
    # A relay works alongside (on PostgreSQL it competes with the readers for the log's order).
    broker = RecordingBroker()
    relay = Relay(storage, broker, {"consumer": FakeActor("consumer")}, routes=ROUTES)
    relay.batch_size = 5
    relay_stop = threading.Event()

    def relay_loop():
        try:
            while not relay_stop.is_set():
                if relay.publish_batch() == 0:
                    time.sleep(0.003)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=_tail, args=(_http_pages(hub.client) if kind == "http" else
                                                    _service_pages(storage), limit, seen, stop, errors))
               for (kind, limit), seen in zip(READERS, seen_by, strict=True)]
    relay_thread = threading.Thread(target=relay_loop)
    writers = [threading.Thread(target=_writer, args=(storage, i, committed, errors)) for i in range(WRITERS)]
    for reader in readers:
        reader.start()
    relay_thread.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    for reader in readers:
        reader.join(timeout=60)
    relay_stop.set()
    relay_thread.join(timeout=30)
    assert not errors, errors
    assert not any(reader.is_alive() for reader in readers)

    for seen in seen_by:
        ids = [e["id"] for e in seen]
        assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events were returned twice"
        missing = set(committed) - set(ids)
        assert not missing, f"{len(missing)} of {len(committed)} committed events were never returned"
        assert set(ids) == set(committed), "a rolled-back event was returned"
        cursors = [e["seq"] for e in seen]
        assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors), "the log is not in cursor order"
    for seen in seen_by[1:]:
        assert [e["id"] for e in seen] == [e["id"] for e in seen_by[0]], "two readers saw different orders"

    # A fresh reader paging from the start sees the same log, in the same order.
    again, cursor = [], None
    while True:
        page = hub.client.get("/api/events", params={"limit": 100, **({} if cursor is None else {"after": cursor})})
        again += page.json()["events"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [e["id"] for e in again] == ids

    relay.drain()
    published = [m.args[0]["id"] for m in broker.messages]
    assert sorted(published) == sorted(committed), "the relay lost or duplicated an event"


@pytest.mark.parametrize("hub", ["postgresql"], indirect=True)
def test_an_event_that_commits_late_comes_after_the_cursor_not_below_it(hub):
    """The issue's case, deterministically: 747 is inserted first but commits after 748."""
    storage = hub.storage
    with storage.db.session() as early, storage.db.session() as late:
        slow = outbox.record(early, EnvironmentRegistered(1, "inserted-first", "t"))
        early.flush()  # its row has the lower seq, and is in flight
        fast = outbox.record(late, EnvironmentRegistered(2, "committed-first", "t"))
        late.commit()
        first = hub.client.get("/api/events").json()["events"]
        assert [e["id"] for e in first] == [fast.id]
        early.commit()
    after = hub.client.get("/api/events", params={"after": first[-1]["seq"]}).json()["events"]
    assert [e["id"] for e in after] == [slow.id], "the late event fell below the cursor"
    assert after[0]["seq"] == first[-1]["seq"] + 1  # positions have no gaps


@pytest.mark.parametrize("hub", ["postgresql"], indirect=True)
def test_sequencers_take_turns_on_postgresql(hub):
    """A second sequencer waits for the first one's commit, so it numbers on from where that one ended."""
    from sqlalchemy import text

    storage = hub.storage
    with storage.db.session() as session:
        outbox.record(session, EnvironmentRegistered(1, "a", "t"))
        session.commit()
    done = threading.Event()
    with storage.db.engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": outbox.SEQUENCER_LOCK})

        def other():
            with storage.db.session() as session:
                outbox.sequence(session)
            done.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert not done.wait(0.5), "a sequencer ran while another held the lock"
        holder.rollback()
    thread.join(timeout=10)
    assert done.is_set()
    assert [e["seq"] for e in hub.client.get("/api/events").json()["events"]] == [1]
