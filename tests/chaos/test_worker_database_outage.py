"""PostgreSQL cut off from the workers while trainings run.

Both worker processes reach PostgreSQL through a proxy the test takes down for a while; the gateway
and the relay keep theirs. Every database call a worker makes in that time fails: progress reports,
checkpoint records, completions, evaluations. The actors count those as transient, so Dramatiq
retries the message with backoff and a training resumes from its checkpoint. Once PostgreSQL is
reachable again every run must complete, and every step of its chain happen exactly once.
"""

import os
import time

import pytest

from tests.chaos.common import (
    assert_each_run_completed_once,
    register_cartpole,
    running_runs,
    submit_training,
    wait_all_terminal,
)
from tests.support.cluster import running_cluster
from tests.support.services import PG_HOST
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TRAININGS = 10
OUTAGE_S = float(os.environ.get("RESIMHUB_CHAOS_DB_OUTAGE_S", "60"))


def test_workers_lose_postgresql_mid_training_and_every_run_completes_once(tmp_path):
    with running_cluster(tmp_path, workers=0) as cluster:
        host, port = PG_HOST.split(":")
        proxy = TcpProxy(host, int(port)).up()
        db_url = cluster.env["RESIMHUB_DATABASE_URL"].replace(f"@{PG_HOST}/", f"@127.0.0.1:{proxy.port}/")
        assert db_url != cluster.env["RESIMHUB_DATABASE_URL"]
        for _ in range(2):
            cluster.spawn_worker(env={"RESIMHUB_DATABASE_URL": db_url})
        register_cartpole(cluster)
        # PPO for 60k steps: a few seconds each, checkpointed every 3k steps, so the cut lands mid-run.
        task_ids = [submit_training(cluster.client, f"db-cut-{i}", agent="PPO", total_timesteps=60_000, seed=i,
                                    eval_episodes=5)[1] for i in range(TRAININGS)]
        deadline = time.monotonic() + 60
        while running_runs(cluster.storage) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        running_at_cut = running_runs(cluster.storage)
        proxy.down()
        assert proxy.reset_clients >= 2, "the workers were not using the proxy"
        time.sleep(OUTAGE_S)
        proxy.up()
        try:
            statuses = wait_all_terminal(cluster.storage, task_ids, timeout=300)
        finally:
            proxy.down()
        assert statuses == {"succeeded": TRAININGS}, statuses
        runs = assert_each_run_completed_once(cluster.storage, task_ids)
        assert running_at_cut >= 2, "no training was running when PostgreSQL went away"
        retried = [r for r in runs if r.attempts > 1]
        assert retried, "no run was interrupted by the cut: the test proved nothing"
        print(f"\nPostgreSQL cut for {OUTAGE_S:.0f} s with {running_at_cut} runs training: {len(retried)} runs "
              f"started again, {sum(1 for r in retried if r.resumed_from)} from a checkpoint; every run completed once")
