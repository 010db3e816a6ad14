"""How fast is evaluation? A script, not a test: ``.venv/bin/python tests/benchmarks/bench_evaluation.py``.

It times greedy evaluation of a 4-64-64-2 ReLU MLP on CartPole-v1 for 100 and 1,000 episodes:

* fast mode (gymnasium's native vector CartPole) against the obvious per-episode single-env loop
  and against a hand-vectorised numpy CartPole rollout written below (the ceiling for "numpy
  steps all episodes at once");
* exact mode (lockstep pool of ordinary envs, per-episode seeds) against the single-env loop.

The network's weights are set by hand so that its greedy policy follows a linear balancing rule
(episodes last roughly 180-500 steps, like a half-trained agent's) while every layer still does
its full matrix product; 62 hidden units carry random weights that do not reach the output.
The network runs in float32 by default, the precision of a PyTorch checkpoint (``--dtype float64``
for the precision of networks trained here). Each configuration is run several times and the
median wall time reported. Timings depend on the machine and on what else is running on it.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors.rl.evaluation import evaluate, single_env_loop, single_threaded_blas  # noqa: E402
from actors.rl.nn import MLP  # noqa: E402
from actors.rl.policy import MLPPolicy  # noqa: E402

ENV_ID = "CartPole-v1"
RULE = np.array([-0.1, 0.0, 1.0, 0.2])  # push right when this projection of the state is positive


def benchmark_policy(seed: int = 0, dtype=np.float32) -> MLPPolicy:
    rng = np.random.default_rng(seed)
    net = MLP([4, 64, 64, 2], "relu", rng=rng, dtype=dtype)
    w0, w1, w2 = net.weights
    w0[:, 0], w0[:, 1] = RULE, -RULE  # h0 = relu(s), h1 = relu(-s)
    w1[:, :2] = 0.0
    w1[0, 0] = w1[1, 1] = 1.0  # carried through the second layer unchanged
    w1[:2, 2:] = 0.0
    w2[:] = 0.0
    w2[0, 1] = w2[1, 0] = 1.0  # logit(right) - logit(left) = s
    for b in net.biases:
        b[:] = 0.0
    return MLPPolicy(net, "discrete", (4,))


# -- the hand-vectorised baseline ----------------------------------------------------------------

GRAVITY, CART_MASS, POLE_MASS, HALF_LENGTH, FORCE, DT = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = CART_MASS + POLE_MASS
POLE_MOMENT = POLE_MASS * HALF_LENGTH
X_LIMIT, THETA_LIMIT, MAX_STEPS = 2.4, 12 * 2 * math.pi / 360, 500


def hand_vectorised_rollout(policy: MLPPolicy, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All episodes at once: one numpy array of states, explicit Euler cart-pole dynamics, finished
    episodes dropped from the batch so neither physics nor policy is computed for them."""
    rng = np.random.default_rng(seed)
    state = rng.uniform(-0.05, 0.05, size=(episodes, 4))
    lengths = np.zeros(episodes, dtype=np.int64)
    alive = np.arange(episodes)
    for _ in range(MAX_STEPS):
        s = state[alive]
        action = policy.act(s.astype(np.float32))
        x, x_dot, theta, theta_dot = s.T
        force = np.where(action == 1, FORCE, -FORCE)
        cos, sin = np.cos(theta), np.sin(theta)
        temp = (force + POLE_MOMENT * theta_dot**2 * sin) / TOTAL_MASS
        theta_acc = (GRAVITY * sin - cos * temp) / (HALF_LENGTH * (4.0 / 3.0 - POLE_MASS * cos**2 / TOTAL_MASS))
        x_acc = temp - POLE_MOMENT * theta_acc * cos / TOTAL_MASS
        s = np.stack([x + DT * x_dot, x_dot + DT * x_acc, theta + DT * theta_dot, theta_dot + DT * theta_acc],
                     axis=1)
        state[alive] = s
        lengths[alive] += 1
        failed = (np.abs(s[:, 0]) > X_LIMIT) | (np.abs(s[:, 2]) > THETA_LIMIT)
        alive = alive[~failed]
        if alive.size == 0:
            break
    return lengths.astype(np.float64), lengths


# -- timing --------------------------------------------------------------------------------------

def median_time(fn, repeats: int) -> tuple[float, object]:
    # Every method runs under the same one-thread BLAS limit that evaluate() applies to itself.
    times, out = [], None
    with single_threaded_blas():
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=5, help="runs per configuration (median reported)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="network precision (float32, like an uploaded PyTorch checkpoint, by default)")
    args = parser.parse_args(argv)

    policy = benchmark_policy(dtype=np.dtype(args.dtype))
    print(f"# {ENV_ID}, 4-64-64-2 ReLU MLP in {args.dtype}, python {platform.python_version()}, "
          f"numpy {np.__version__}, {platform.machine()}; median of {args.repeats} runs")
    header = f"{'episodes':>8}  {'method':<26} {'wall s':>8} {'steps':>9} {'steps/s':>11} {'mean len':>9}"
    print(header)
    print("-" * len(header))
    ratios = []
    for n in args.episodes:
        repeats = args.repeats if n <= 100 else max(3, args.repeats // 2)
        runs = {
            "single-env loop": lambda n=n: single_env_loop(policy, ENV_ID, n, args.seed),
            "hand-vectorised numpy": lambda n=n: hand_vectorised_rollout(policy, n, args.seed),
            "exact (lockstep pool)": lambda n=n: evaluate(policy, ENV_ID, n, args.seed, mode="exact"),
            "fast (native vector env)": lambda n=n: evaluate(policy, ENV_ID, n, args.seed, mode="fast"),
        }
        times = {}
        for name, fn in runs.items():
            t, out = median_time(fn, repeats)
            lengths = out.lengths if hasattr(out, "lengths") else out[1]
            steps = int(np.sum(lengths))
            times[name] = t
            print(f"{n:>8}  {name:<26} {t:>8.3f} {steps:>9} {steps / t:>11,.0f} {np.mean(lengths):>9.1f}")
        single, hand = times["single-env loop"], times["hand-vectorised numpy"]
        fast, exact = times["fast (native vector env)"], times["exact (lockstep pool)"]
        ratios.append((n, single / fast, hand / fast, single / exact))
    print()
    print(f"{'episodes':>8}  {'fast vs single':>15} {'fast vs hand-vec':>17} {'exact vs single':>16}")
    for n, fs, fh, es in ratios:
        print(f"{n:>8}  {fs:>14.1f}x {fh:>16.2f}x {es:>15.2f}x")
    print("targets: fast >= 15x single-env loop, >= 0.8x hand-vectorised; exact >= 1.5x single-env loop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
