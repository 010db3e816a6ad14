"""kill -9 of worker processes, at random, while 20 trainings run.

RabbitMQ hands the unacknowledged messages of a dead worker to the living ones; the ``train``
actor resumes from the run's checkpoint, and the ledger plus the run's status keep every step of
the chain (training, evaluation, aggregation) from happening twice.
"""

import os
import random
import signal
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

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TRAININGS = 20
KILLS = 6
SEED = int(os.environ.get("RESIMHUB_CHAOS_SEED", "20261125"))


def test_random_kill_9_of_workers_during_20_trainings_each_completes_once(tmp_path):
    rng = random.Random(SEED)
    with running_cluster(tmp_path, workers=0) as cluster:
        workers = [cluster.spawn_worker(), cluster.spawn_worker()]
        register_cartpole(cluster)
        # PPO for 60k steps: a couple of seconds each, checkpointed every 3k steps, so kills land mid-run.
        task_ids = [submit_training(cluster.client, f"kill-{i}", agent="PPO", total_timesteps=60_000, seed=i,
                                    eval_episodes=5)[1] for i in range(TRAININGS)]
        kills_mid_training = 0
        for _ in range(KILLS):
            time.sleep(rng.uniform(1.0, 3.0))
            if not running_runs(cluster.storage):
                # Nothing is training (a worker may still be booting): wait for one rather than kill idle.
                deadline = time.monotonic() + 20
                while not running_runs(cluster.storage) and time.monotonic() < deadline:
                    time.sleep(0.1)
            kills_mid_training += running_runs(cluster.storage) > 0
            victim = workers.pop(rng.randrange(len(workers)))
            os.killpg(victim.pid, signal.SIGKILL)  # the whole dramatiq process group, no goodbye
            victim.wait()
            workers.append(cluster.spawn_worker())
        statuses = wait_all_terminal(cluster.storage, task_ids, timeout=240)
        assert statuses == {"succeeded": TRAININGS}, statuses
        runs = assert_each_run_completed_once(cluster.storage, task_ids)
        assert kills_mid_training >= KILLS - 1, "the kills did not land while trainings were running"
        interrupted = [r for r in runs if r.attempts > 1]
        assert interrupted, "no training was interrupted and redelivered: the test proved nothing"
        resumed = [r for r in interrupted if r.resumed_from]
        assert all(r.timesteps >= 60_000 for r in runs)
        print(f"\n{KILLS} kill -9 ({kills_mid_training} mid-training): {len(interrupted)} runs redelivered, "
              f"{len(resumed)} resumed from a checkpoint; every run completed once")
