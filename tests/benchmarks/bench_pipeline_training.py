"""Training throughput inside the ``train`` actor vs the bare engine: the pipeline's overhead.

    .venv/bin/python tests/benchmarks/bench_pipeline_training.py [--agent PPO] [--timesteps 100000] [--seeds 0 1 2]

Both sides train the same agent, config and seeds on CartPole-v1; the actor side runs in an embedded
hub (SQLite, in-process broker and worker) and includes progress reporting, cancellation polling and
checkpointing. Reported: env steps/s of the engine alone, inside the actor (the actor's own training
wall time) and end to end (submission → training completed).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import select  # noqa: E402

from actors.rl.agents import get_agent  # noqa: E402
from storage.models import TrainingRun  # noqa: E402
from tests.support.hubs import running_hub, settings_for  # noqa: E402


def bare(agent: str, timesteps: int, seed: int) -> float:
    result = get_agent(agent).train("CartPole-v1", None, seed=seed, total_timesteps=timesteps)
    return result.timesteps / result.wall_time_s


def in_actor(hub, agent: str, timesteps: int, seed: int) -> tuple[float, float]:
    exp = hub.client.post("/api/experiments", json={"name": "b", "env_name": "CartPole-v1", "agent": agent,
                                                    "total_timesteps": timesteps, "seed": seed,
                                                    "eval_episodes": 1}).json()
    t0 = time.perf_counter()
    task_id = hub.client.post(f"/api/experiments/{exp['id']}/train").json()["task_id"]
    while True:
        with hub.storage.db.session() as session:
            run = session.scalars(select(TrainingRun).where(TrainingRun.task_id == task_id)).one()
            if run.status in ("completed", "failed"):
                break
        time.sleep(0.01)
    end_to_end = time.perf_counter() - t0
    assert run.status == "completed", run.error
    hub.wait_task(task_id, timeout=120)
    return run.timesteps / run.wall_time_s, run.timesteps / end_to_end


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agent", default="PPO")
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    engine, actor, e2e = [], [], []
    with tempfile.TemporaryDirectory() as tmp, running_hub(settings_for(Path(tmp),
                                                                        RESIMHUB_LOG_LEVEL="WARNING")) as hub:
        hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
        for seed in args.seeds:  # interleaved so drift in machine load hits both sides alike
            engine.append(bare(args.agent, args.timesteps, seed))
            a, e = in_actor(hub, args.agent, args.timesteps, seed)
            actor.append(a)
            e2e.append(e)
    med = statistics.median
    print(f"{args.agent} on CartPole-v1, {args.timesteps} steps, seeds {args.seeds} (medians, env steps/s)")
    print(f"  bare engine:                   {med(engine):>10,.0f}")
    print(f"  inside the train actor:        {med(actor):>10,.0f}  ({med(actor) / med(engine):.2f}x the engine)")
    print(f"  submission -> training done:   {med(e2e):>10,.0f}  ({med(e2e) / med(engine):.2f}x the engine)")


if __name__ == "__main__":
    main()
