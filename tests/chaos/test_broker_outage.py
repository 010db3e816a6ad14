"""RabbitMQ unreachable for a minute while 500 experiments are submitted.

The relay and both worker processes reach RabbitMQ through a proxy the test takes down: their
connections are reset and new ones refused for the whole outage. Every submission must still be
accepted, nothing may move while the broker is away, and once it is back the workers must find it
again by themselves and every experiment must be trained, evaluated and aggregated exactly once.
"""

import os
import time

import pytest

from tests.chaos.common import (
    assert_each_run_completed_once,
    register_cartpole,
    submit_training,
    task_statuses,
    wait_all_terminal,
)
from tests.support.cluster import running_cluster
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EXPERIMENTS = int(os.environ.get("RESIMHUB_CHAOS_EXPERIMENTS", "500"))
OUTAGE_S = float(os.environ.get("RESIMHUB_CHAOS_OUTAGE_S", "60"))


def test_500_experiments_accepted_while_rabbitmq_is_away_and_each_trained_once(tmp_path):
    with running_cluster(tmp_path, workers=0, relay=False) as cluster:
        proxy = TcpProxy("127.0.0.1", 5672).up()
        through_proxy = {"RESIMHUB_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"}
        cluster.spawn_relay(env=through_proxy)
        for _ in range(2):
            cluster.spawn_worker(env=through_proxy)
        register_cartpole(cluster)  # through the proxy while it is up: relay and workers really use it

        proxy.down()
        # The relay's publisher and each worker's consumers and publisher: all of them cut.
        assert proxy.reset_clients >= 3, proxy.reset_clients
        outage_started = time.monotonic()
        task_ids = []
        for i in range(EXPERIMENTS):
            # Short but real trainings (CEM, a few thousand steps), so that 500 fit in CI's budget.
            _exp_id, task_id = submit_training(cluster.client, f"outage-{i}", total_timesteps=2000, seed=i % 7,
                                               eval_episodes=3)
            task_ids.append(task_id)
        accepted_in = time.monotonic() - outage_started
        assert len(set(task_ids)) == EXPERIMENTS

        remaining = OUTAGE_S - (time.monotonic() - outage_started)
        time.sleep(max(0.0, remaining))
        assert task_statuses(cluster.storage, task_ids) == {"queued": EXPERIMENTS}, \
            "work moved while the broker was unreachable"
        polled = cluster.client.get(f"/api/tasks/{task_ids[-1]}")
        assert polled.status_code == 200 and polled.json()["status"] == "queued"

        proxy.up()
        recovered = time.monotonic()
        try:
            statuses = wait_all_terminal(cluster.storage, task_ids, timeout=240)
        finally:
            proxy.down()
        drained_in = time.monotonic() - recovered
        assert statuses == {"succeeded": EXPERIMENTS}, statuses
        runs = assert_each_run_completed_once(cluster.storage, task_ids)
        assert all(r.attempts == 1 for r in runs), "a run was started twice although no worker died"
        print(f"\n{EXPERIMENTS} experiments accepted in {accepted_in:.1f}s during the outage, "
              f"all trained {drained_in:.1f}s after RabbitMQ came back")
