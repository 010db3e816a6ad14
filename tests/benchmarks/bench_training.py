"""How long does training take to solve CartPole-v1? A script, not a test:
``.venv/bin/python tests/benchmarks/bench_training.py`` (add ``--json out.json`` to keep the data).

For each agent (PPO, A2C, DQN, CEM) and seed 0-4, training is paused every ``--check-every``
steps for a 20-episode greedy evaluation (seeds 20_000..20_019); at the first pass the
100-episode criterion (seeds 10_000..10_099, mean >= 475) is checked too, and training stops
once both pass. Reported per agent: median/min/max of the *training* wall time (evaluation time
is excluded) and steps until the first 20-episode pass, and until the confirmed solve.

Stable-Baselines3 (PPO, A2C, DQN with RL-Zoo's CartPole-v1 hyperparameters, budgets as in the
Zoo) is measured the same way when ``stable_baselines3`` and ``torch`` import; they are not
project dependencies, so run the script from a separate environment that has them, e.g.
``/tmp/sb3venv/bin/python tests/benchmarks/bench_training.py`` with the project installed there.
Everything runs on one thread. Timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors.rl.agents import get_agent  # noqa: E402
from actors.rl.evaluation import evaluate  # noqa: E402

ENV_ID = "CartPole-v1"
SOLVED = 475.0
CHECK_SEED = 20_000
CONFIRM_SEED = 10_000

# RL-Zoo hyperparameters for CartPole-v1 (``lin_x``: linear decay from x to 0 over training).
SB3_ZOO = {
    "PPO": dict(n_envs=8, n_timesteps=100_000, kwargs=dict(
        n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
        learning_rate=("lin", 0.001), clip_range=("lin", 0.2))),
    "A2C": dict(n_envs=8, n_timesteps=500_000, kwargs=dict(ent_coef=0.0)),
    "DQN": dict(n_envs=1, n_timesteps=50_000, kwargs=dict(
        learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1_000, gamma=0.99,
        target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
        exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]))),
}


class Tracker:
    """The pause-and-check logic shared by both implementations; keeps evaluation time apart."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.excluded = 0.0
        self.first20: tuple[float, int] | None = None
        self.solved: tuple[float, int] | None = None
        self.checks = 0

    def training_time(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    def check(self, timesteps: int, policy) -> bool:
        elapsed = self.training_time()
        t0 = time.perf_counter()
        try:
            self.checks += 1
            if evaluate(policy, ENV_ID, 20, seed=CHECK_SEED).mean < SOLVED:
                return False
            if self.first20 is None:
                self.first20 = (elapsed, int(timesteps))
            if evaluate(policy, ENV_ID, 100, seed=CONFIRM_SEED).mean < SOLVED:
                return False
            self.solved = (elapsed, int(timesteps))
            return True
        finally:
            self.excluded += time.perf_counter() - t0


def run_ours(name: str, seed: int, check_every: int) -> dict:
    tracker = Tracker()
    result = get_agent(name).train(ENV_ID, seed=seed, check=tracker.check, check_every=check_every)
    return outcome(tracker, result.timesteps, result.wall_time_s)


def outcome(tracker: Tracker, timesteps: int, train_time: float) -> dict:
    return {
        "first20_s": tracker.first20[0] if tracker.first20 else None,
        "first20_steps": tracker.first20[1] if tracker.first20 else None,
        "solved_s": tracker.solved[0] if tracker.solved else None,
        "solved_steps": tracker.solved[1] if tracker.solved else None,
        "trained_steps": int(timesteps),
        "train_time_s": float(train_time),
        "checks": tracker.checks,
    }


# -- Stable-Baselines3 --------------------------------------------------------------------------
def sb3_available() -> str | None:
    try:
        import stable_baselines3  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


class SB3Policy:
    """Just enough of the project's Policy protocol for ``evaluate`` to run an SB3 model greedily."""

    kind = "sb3"
    head = "discrete"

    def __init__(self, model) -> None:
        self.model = model
        self.obs_shape = tuple(model.observation_space.shape)
        self.n_inputs = int(np.prod(self.obs_shape))
        self.n_outputs = int(model.action_space.n)

    def act(self, obs_batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(obs_batch, deterministic=True)[0], dtype=np.int64)

    def describe(self) -> dict:
        return {"kind": self.kind}


def run_sb3(name: str, seed: int, check_every: int) -> dict:
    import stable_baselines3 as sb3
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    zoo = SB3_ZOO[name]
    kwargs = dict(zoo["kwargs"])
    for key, value in list(kwargs.items()):
        if isinstance(value, tuple) and value[0] == "lin":
            kwargs[key] = (lambda v: (lambda remaining: remaining * v))(value[1])
    tracker = Tracker()

    class Check(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.last = 0

        def _on_step(self) -> bool:
            if self.num_timesteps - self.last < check_every:
                return True
            self.last = self.num_timesteps
            return not tracker.check(self.num_timesteps, SB3Policy(self.model))

    env = make_vec_env(ENV_ID, n_envs=zoo["n_envs"], seed=seed)
    model = getattr(sb3, name)("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
    tracker.start = time.perf_counter()  # model construction is not training
    model.learn(total_timesteps=zoo["n_timesteps"], callback=Check())
    train_time = tracker.training_time()
    env.close()
    return outcome(tracker, model.num_timesteps, train_time)


# -- reporting ----------------------------------------------------------------------------------
def summarise(runs: list[dict], key_s: str, key_steps: str) -> dict:
    times = [r[key_s] if r[key_s] is not None else math.inf for r in runs]
    steps = [r[key_steps] if r[key_steps] is not None else math.inf for r in runs]
    return {
        "solved": sum(math.isfinite(t) for t in times),
        "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
        "median_steps": statistics.median(steps),
    }


def _finite(value):
    """JSON has no infinity: an unsolved run's figures become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def fmt(x: float, unit: str = "") -> str:
    if not math.isfinite(x):
        return "never"
    return f"{x:.2f}{unit}" if unit == "s" else f"{x:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="PPO,A2C,DQN,CEM")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--check-every", type=int, default=2_000)
    parser.add_argument("--no-sb3", action="store_true", help="skip Stable-Baselines3 even if installed")
    parser.add_argument("--json", help="write all per-seed figures here")
    opts = parser.parse_args(argv)

    agents = [a.strip().upper() for a in opts.agents.split(",") if a.strip()]
    missing = None if not opts.no_sb3 else "--no-sb3"
    missing = missing or sb3_available()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, one thread; check every {opts.check_every} steps")
    if missing:
        print(f"Stable-Baselines3 comparison skipped ({missing}).")
    else:
        import stable_baselines3
        import torch

        print(f"stable-baselines3 {stable_baselines3.__version__}, torch {torch.__version__}")

    data: dict = {}
    for name in agents:
        impls = [("ours", run_ours)]
        if not missing and name in SB3_ZOO:
            impls.append(("sb3", run_sb3))
        for impl, fn in impls:
            runs = []
            for seed in range(opts.seeds):
                run = fn(name, seed, opts.check_every)
                runs.append(run)
                print(f"  {name:4s} {impl:4s} seed {seed}: first 20-ep pass "
                      f"{fmt(run['first20_s'] or math.inf, 's')} / {fmt(run['first20_steps'] or math.inf)} steps, "
                      f"confirmed {fmt(run['solved_s'] or math.inf, 's')} / "
                      f"{fmt(run['solved_steps'] or math.inf)} steps", flush=True)
            data.setdefault(name, {})[impl] = {
                "runs": runs,
                "first20": summarise(runs, "first20_s", "first20_steps"),
                "solved": summarise(runs, "solved_s", "solved_steps"),
            }

    print()
    print("training seconds (evaluation excluded) and steps; median [min-max] over seeds")
    print(f"{'agent':5s} {'impl':4s} {'first 20-ep greedy pass':>34s} {'confirmed (100-ep >= 475)':>34s}")
    for name, impls in data.items():
        for impl, d in impls.items():
            cells = []
            for key in ("first20", "solved"):
                x = d[key]
                cells.append(f"{x['solved']}/{opts.seeds} {fmt(x['median_s'], 's')} "
                             f"[{fmt(x['min_s'], 's')}-{fmt(x['max_s'], 's')}] {fmt(x['median_steps'])}")
            print(f"{name:5s} {impl:4s} {cells[0]:>34s} {cells[1]:>34s}")
        if "sb3" in impls:
            ours, theirs = impls["ours"]["first20"]["median_s"], impls["sb3"]["first20"]["median_s"]
            if math.isfinite(ours) and math.isfinite(theirs):
                print(f"{'':10s} median time to first pass, ours / SB3: {ours / theirs:.2f}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(_finite(data), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
