"""Transient errors are retried long enough to ride out an outage of the database or the broker."""

import random

from dramatiq.brokers.stub import StubBroker
from dramatiq.common import compute_backoff
from sqlalchemy.exc import OperationalError

from actors.bus import MAX_BACKOFF_MS, MIN_BACKOFF_MS, OUTAGE_WINDOW_S, retries_covering
from actors.rl.sandbox import SandboxPool
from actors.runtime import Runtime, declare_actors
from storage.context import open_storage
from storage.settings import load_settings


def test_the_retries_cover_the_outage_window_even_with_the_shortest_jitter():
    retries = retries_covering(OUTAGE_WINDOW_S)
    rng = random.Random(7)
    waits = []
    for _ in range(2000):
        random.seed(rng.random())  # Dramatiq's jitter draws from the random module
        waits.append(sum(compute_backoff(n, factor=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)[1]
                         for n in range(retries)))
    assert min(waits) >= OUTAGE_WINDOW_S * 1000
    # ... and not absurdly longer: a dead database fails the task within a few windows.
    assert max(waits) <= 3 * OUTAGE_WINDOW_S * 1000


def test_every_actor_retries_transient_errors_for_the_window_and_nothing_else(tmp_path):
    settings = load_settings({"RESIMHUB_DATA_DIR": str(tmp_path), "RESIMHUB_QUEUE_PREFIX": "t."})
    actors = declare_actors(Runtime(storage=open_storage(settings), broker=StubBroker(), sandbox=SandboxPool()))
    outage = OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    for name, actor in actors.items():
        if name == "record_give_up":
            continue
        retry_when = actor.options["retry_when"]
        assert actor.options["max_retries"] == retries_covering(OUTAGE_WINDOW_S), name
        assert retry_when(retries_covering(OUTAGE_WINDOW_S) - 1, outage), name
        assert not retry_when(retries_covering(OUTAGE_WINDOW_S), outage), name
        assert not retry_when(0, ValueError("a bug")), name
