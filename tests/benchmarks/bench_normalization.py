"""Does observation and reward normalisation do what the zoo's settings rely on? A script, not a
test: ``.venv/bin/python tests/benchmarks/bench_normalization.py [--steps 200000] [--seeds 3]``.

Trains RL-Zoo's tuned PPO and A2C settings for MountainCar-v0 and Acrobot-v1 (actors/rl/agents/presets.py;
the zoo's ``normalize: true``) with the hub's normalisation and, from the same run, the same
settings without it, for each seed, and prints each policy's mean return over 20 greedy evaluation
episodes (seeds 1000 + seed) and the training wall time. For scale, the zoo's published SB3 scores
(benchmark.md at commit 22e3ff2, full budgets): PPO MountainCar-v0 -110.4 and Acrobot-v1 -73.5
(1M steps); A2C MountainCar-v0 -111.3 (1M) and Acrobot-v1 -83.4 (500k).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors.rl.agents import get_agent  # noqa: E402
from actors.rl.agents.presets import PRESETS  # noqa: E402
from actors.rl.evaluation import evaluate  # noqa: E402


def run(agent: str, env: str, hp: dict, steps: int, seed: int) -> tuple[float, float]:
    started = time.perf_counter()
    result = get_agent(agent).train(env, hp, seed=seed, total_timesteps=steps)
    wall = time.perf_counter() - started
    return evaluate(result.policy, env, 20, 1_000 + seed).mean, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pairs", default="PPO:MountainCar-v0,PPO:Acrobot-v1,A2C:MountainCar-v0,A2C:Acrobot-v1")
    args = parser.parse_args()
    print(f"{args.steps:,} steps, seeds 0..{args.seeds - 1}, 20 evaluation episodes each")
    for pair in args.pairs.split(","):
        agent, env = pair.split(":")
        preset = dict(PRESETS[(agent, env)].hyperparams)
        plain = {k: v for k, v in preset.items() if not k.startswith("normalize_")}
        rows = {"normalised": [], "plain": []}
        for seed in range(args.seeds):
            rows["normalised"].append(run(agent, env, preset, args.steps, seed))
            rows["plain"].append(run(agent, env, plain, args.steps, seed))
        for name, got in rows.items():
            scores = ", ".join(f"{s:.1f}" for s, _ in got)
            print(f"  {agent} {env} {name:10s} median {statistics.median(s for s, _ in got):8.1f} "
                  f"(seeds: {scores}); wall median {statistics.median(w for _, w in got):.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
