"""What does the sandbox cost? A script, not a test: ``.venv/bin/python tests/benchmarks/bench_sandbox.py``.

A 100-episode exact-mode CartPole-v1 evaluation of a 4-64-64-2 MLP (the hand-set balancing network of
``bench_evaluation.py``: episodes of roughly 180-500 steps), saved as a model file, timed two ways
in the same run:

* in-process: ``load_policy`` + ``evaluate`` (what the worker did before the sandbox);
* sandboxed: ``SandboxPool.open`` (take the child the pool started ahead, hand it the file, load
  it there) + ``evaluate`` through the child + ``close``: what an evaluation in a worker pays;
* sandboxed, cold: the same with a child started for the evaluation (``open_policy``), as the
  first evaluation after a worker starts pays.

Both produce the same returns (checked). Each is run ``--runs`` times, alternating, and the median
wall time reported with their ratio; the child's start-up and the per-call hop are reported too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors.rl.evaluation import evaluate  # noqa: E402
from actors.rl.modelfiles import load_policy  # noqa: E402
from actors.rl.policy import save_policy  # noqa: E402
from actors.rl.sandbox import SandboxPool, open_policy  # noqa: E402
from tests.benchmarks.bench_evaluation import ENV_ID, benchmark_policy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.npz"
        save_policy(benchmark_policy(), path, {"env_id": ENV_ID})
        inproc, sandboxed, cold, startup, calls = [], [], [], [], []
        reference = None
        pool = SandboxPool()
        pool.open(path, env_id=ENV_ID).close()  # the first spare child is started here
        time.sleep(2.0)
        for _ in range(args.runs):
            t0 = time.perf_counter()
            result = evaluate(load_policy(path, env_id=ENV_ID).policy, ENV_ID, args.episodes, 0)
            inproc.append(time.perf_counter() - t0)
            reference = reference or result.returns
            assert result.returns == reference

            t0 = time.perf_counter()
            with pool.open(path, env_id=ENV_ID) as policy:
                startup.append(time.perf_counter() - t0)
                result = evaluate(policy, ENV_ID, args.episodes, 0)
            sandboxed.append(time.perf_counter() - t0)
            calls.append(result.policy_call_ms)
            assert result.returns == reference, "the sandbox changed a return"

            t0 = time.perf_counter()
            with open_policy(path, env_id=ENV_ID) as policy:
                result = evaluate(policy, ENV_ID, args.episodes, 0)
            cold.append(time.perf_counter() - t0)
            assert result.returns == reference
            time.sleep(1.0)  # the pool's next spare child finishes its imports, as between two evaluations
        pool.close()
        steps = sum(result.lengths)
        a, b, c = statistics.median(inproc), statistics.median(sandboxed), statistics.median(cold)
        print(f"{args.episodes} episodes, {steps} steps, exact mode, median of {args.runs} runs")
        print(f"in-process        {a:.3f} s")
        print(f"sandboxed (pool)  {b:.3f} s   ratio {b / a:.2f}x   (hand over + load "
              f"{statistics.median(startup):.3f} s, {statistics.median(calls):.3f} ms per batched act call)")
        print(f"sandboxed (cold)  {c:.3f} s   ratio {c / a:.2f}x")


if __name__ == "__main__":
    main()
