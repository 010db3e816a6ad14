"""A webhook receiver that flaps: refuses connections, answers 500/503, then 200, over and over.

The hub runs its delivery actor in a separate worker process. Every delivery must end ``delivered``
however the flapping fell, and its log must account for every attempt: one logged attempt per
request the receiver saw (same ``webhook-id``), plus the refused connections, logged with their
error and never seen by the receiver.
"""

import random
import threading
import time
from collections import Counter

import pytest

from tests.chaos.common import CARTPOLE, register_cartpole
from tests.support.cluster import running_cluster
from tests.support.receiver import Receiver, Reply, deliveries, settings_env, wait_deliveries

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EXPERIMENTS = 20
FLAP_S = 12.0
# Ten retries, about 20 s in all: longer than any outage the flapper makes.
SCHEDULE = "0.3,0.5,1,1,2,2,3,3,3,3"


def _up(receiver: Receiver) -> None:
    """Reopen the port; a connection of the previous server may hold it for a moment."""
    deadline = time.monotonic() + 5
    while True:
        try:
            receiver.up()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _flap(receiver: Receiver, stop: threading.Event, rng: random.Random, cycles: list[int]) -> None:
    """Down for a while (connections refused), then up with a burst of errors before answering 200."""
    while not stop.is_set():
        receiver.down()
        stop.wait(rng.uniform(0.3, 1.5))
        receiver.script = [Reply(status=rng.choice([500, 502, 503])) for _ in range(rng.randint(1, 4))]
        _up(receiver)
        cycles.append(1)
        stop.wait(rng.uniform(0.3, 1.5))
    receiver.script = []


def test_flapping_receiver_gets_every_delivery_and_every_attempt_is_logged(tmp_path):
    receiver = Receiver(["placeholder"]).up()
    stop = threading.Event()
    cycles: list[int] = []
    flapper = threading.Thread(target=_flap, args=(receiver, stop, random.Random(7), cycles), daemon=True)
    try:
        with running_cluster(tmp_path, workers=1, env=settings_env(RESIMHUB_WEBHOOK_RETRY_SCHEDULE=SCHEDULE)) \
                as cluster:
            r = cluster.client.post("/api/webhooks", json={
                "url": receiver.url, "event_types": ["resimhub.experiment.created"],
                "pause_after_failures": 10_000})
            assert r.status_code == 201, r.text
            webhook_id, receiver.secrets = r.json()["id"], [r.json()["secret"]]
            register_cartpole(cluster)

            flapper.start()
            for i in range(EXPERIMENTS):
                r = cluster.client.post("/api/experiments", json={"name": f"flap-{i}", "env_name": CARTPOLE,
                                                                  "agent": "CEM", "total_timesteps": 1000})
                assert r.status_code == 201, r.text
                time.sleep(FLAP_S / EXPERIMENTS)  # spread over the flapping, so they meet every phase
            stop.set()
            flapper.join(timeout=10)
            assert not flapper.is_alive() and len(cycles) >= 5, f"the receiver flapped only {len(cycles)} times"

            found = wait_deliveries(cluster.client, webhook_id, count=EXPERIMENTS, timeout=90)
            undelivered = [(d["id"], d["status"], d["attempt_count"], d["last_error"]) for d in found
                           if d["status"] != "delivered"]
            assert len(found) == EXPERIMENTS and not undelivered, undelivered
            seen = Counter(req.webhook_id for req in receiver.received)
            refused = failed_answers = 0
            for summary in found:
                delivery = cluster.client.get(f"/api/webhooks/{webhook_id}/deliveries/{summary['id']}").json()
                attempts = delivery["attempts"]
                assert len(attempts) == delivery["attempt_count"] >= 1
                assert [a["number"] for a in attempts] == list(range(1, len(attempts) + 1))
                assert attempts[-1]["status_code"] == 200, attempts[-1]
                for attempt in attempts[:-1]:
                    assert attempt["status_code"] != 200, "a successful attempt was followed by another"
                    assert attempt["error"] or (attempt["status_code"] or 0) >= 500, attempt
                answered = [a for a in attempts if a["status_code"] is not None]
                # Every request the receiver saw is one logged attempt with the status it answered.
                assert len(answered) == seen[delivery["message_id"]], (delivery["message_id"], attempts)
                refused += len(attempts) - len(answered)
                failed_answers += sum(1 for a in answered if a["status_code"] >= 500)
            assert all(all(r.verified.values()) for r in receiver.received), "a request with a bad signature"
            assert refused > 0 and failed_answers > 0, "the receiver never really flapped"
            print(f"\n{EXPERIMENTS} deliveries, {sum(d['attempt_count'] for d in found)} attempts: "
                  f"{refused} refused connections, {failed_answers} 5xx answers, all delivered")
            assert deliveries(cluster.client, webhook_id, status="failed") == []
    finally:
        stop.set()
        receiver.down()
