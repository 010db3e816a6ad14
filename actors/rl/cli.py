"""``resimhub evaluate`` and ``resimhub train``: the RL engine without the hub around it.

These run in the foreground with no database, broker or server, so a user can check a model file
or reproduce a training run exactly as the service would do it. Errors the engine raises on
purpose (a refused file, an unknown environment) end the command with a one-line reason on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from actors.rl.errors import RLError

EXIT_OK = 0
EXIT_FAILED = 1
#: Seeds one ``resimhub train --seeds`` runs, one after the other; more belong in an experiment.
MAX_CLI_SEEDS = 20


def _fail(command: str, message: str) -> int:
    print(f"resimhub {command}: error: {message}", file=sys.stderr)
    return EXIT_FAILED


def _print_result(result: dict, model: dict | None = None) -> None:
    rows: list[tuple[str, Any]] = []
    if model is not None:
        rows += [("model", model.get("path")), ("format", model.get("format")), ("sha256", model.get("sha256"))]
    lo, hi = result["ci95"]
    rows += [
        ("env", f"{result['spec_id']} (gymnasium {result['gymnasium_version']})"),
        ("mode", f"{result['mode']}, {result['num_envs']} envs ({result['vectorization']})"),
        ("episodes", f"{result['episodes']} (seed {result['seed']})"),
        ("mean ± std", f"{result['mean']:.3f} ± {result['std']:.3f}"),
        ("median / IQM", f"{result['median']:.3f} / {result['iqm']:.3f}"),
        ("min / max", f"{result['min']:.3f} / {result['max']:.3f}"),
        ("95% CI (mean)", f"[{lo:.3f}, {hi:.3f}]"),
        ("score (mean−std)", f"{result['score']:.3f}"),
        ("mean length", f"{result['mean_length']:.1f}"),
        ("policy latency", f"{result['latency_ms'] * 1000:.2f} µs/step ({result['policy_call_ms']:.3f} ms/batch)"),
        ("throughput", f"{result['steps_per_second']:,.0f} steps/s, {result['wall_time_s']:.2f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


# -- evaluate ----------------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    from actors.rl.evaluation import evaluate
    from actors.rl.modelfiles import load_policy

    try:
        loaded = load_policy(args.model_file, env_id=args.env, activation=args.activation, prefix=args.prefix)
        result = evaluate(loaded.policy, args.env, args.episodes, args.seed, mode=args.mode,
                          num_envs=args.num_envs).to_dict()
    except RLError as exc:
        return _fail("evaluate", str(exc))
    except OSError as exc:
        return _fail("evaluate", f"{args.model_file}: {exc.strerror or exc}")
    model = {"path": str(args.model_file), "format": loaded.format, "sha256": loaded.sha256,
             "size_bytes": loaded.size_bytes, "manifest": loaded.manifest}
    if args.json:
        print(json.dumps({**result, "model": model}, allow_nan=False))
    else:
        _print_result(result, model)
    return EXIT_OK


# -- train -------------------------------------------------------------------------------------

class _ProgressPrinter:
    """At most one progress line per second on stderr, so a long run shows it is alive."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 1.0:
            return
        self.last = now
        latest = "-" if p.latest_return is None else f"{p.latest_return:.1f}"
        print(f"  {p.timesteps}/{p.total_timesteps} steps ({p.fraction:.0%}), {p.episodes} episodes, "
              f"latest return {latest}", file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from actors.rl.envspec import make_env

    try:
        from actors.rl.agents import get_agent
    except ImportError as exc:
        return _fail("train", f"the agents are not available: {exc}")
    try:
        seeds = _seed_list(args)
    except RLError as exc:
        return _fail("train", str(exc))
    try:
        agent = get_agent(args.agent)
    except (KeyError, ValueError, RLError) as exc:
        return _fail("train", str(exc).strip("'\""))
    try:
        env = make_env(args.env)  # an unknown id fails here, before any training
        env.close()
        supports = getattr(agent, "agent_supports", None)
        reason = supports(env.observation_space, env.action_space) if supports is not None else None
        if reason:
            return _fail("train", f"{args.agent} cannot train on {args.env}: {reason}")
        from actors.rl.agents.common import resolve_args
        from actors.rl.agents.presets import preset_for

        chosen, timesteps = {}, args.timesteps
        if args.preset:
            preset = preset_for(args.agent, args.env)
            if preset is None:
                return _fail("train", f"no tuned preset for {args.agent} on {args.env}; "
                                      "GET /api/agents/<agent> lists the presets")
            chosen = dict(preset.hyperparams)
            timesteps = timesteps or preset.total_timesteps
        hyperparams = resolve_args(agent.Args, {**chosen, **_hyperparams(args.hp)})
        runs = [_train_seed(args, agent, hyperparams, timesteps, seed, _out_path(args, seed, len(seeds) > 1))
                for seed in seeds]
    except RLError as exc:
        return _fail("train", str(exc))
    except OSError as exc:
        return _fail("train", f"{exc.filename or args.out}: {exc.strerror or exc}")
    if len(runs) == 1:
        summary = runs[0]
    else:
        from actors.rl import stats

        finals = [r["evaluation"]["mean"] for r in runs]
        across = stats.experiment_iqm(finals, seed=args.eval_seed if args.eval_seed is not None else 10_000)
        summary = {"agent": args.agent, "env_id": args.env, "seeds": seeds, "runs": runs,
                   "across_seeds": {"final_returns": finals, "mean": sum(finals) / len(finals), "iqm": across["iqm"],
                                    "ci95": across["ci95"], "over": across["over"]}}
    if args.json:
        print(json.dumps(summary, allow_nan=False))
        return EXIT_OK
    for run in runs:
        print(f"trained {args.agent} on {args.env} (seed {run['seed']}) for {run['timesteps']} steps, "
              f"{run['training_episodes']} episodes in {run['training_wall_time_s']:.1f} s; saved {run['model_path']}")
        _print_result(run["evaluation"])
    if len(runs) > 1:
        a = summary["across_seeds"]
        print(f"across {len(runs)} seeds: mean {a['mean']:.2f}, IQM {a['iqm']:.2f} "
              f"[{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}] (95% bootstrap CI of the IQM of the seeds' final means)")
    return EXIT_OK


def _seed_list(args: argparse.Namespace) -> list[int]:
    if args.seeds is None:
        return [args.seed if args.seed is not None else 1]
    if args.seed is not None:
        raise RLError("give either --seed or --seeds, not both")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise RLError(f"--seeds {args.seeds!r}: expected whole numbers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise RLError(f"--seeds {args.seeds!r}: expected distinct whole numbers >= 0")
    if len(seeds) > MAX_CLI_SEEDS:
        raise RLError(f"--seeds: at most {MAX_CLI_SEEDS} seeds in one command")
    return seeds


def _out_path(args: argparse.Namespace, seed: int, several: bool) -> str:
    default = f"{args.agent.lower()}-{args.env.replace('/', '_')}-seed{seed}.npz"
    if args.out is None:
        return default
    if several and "{seed}" not in args.out:
        raise RLError("--out must contain {seed} when training several seeds, e.g. --out model-{seed}.npz")
    return args.out.replace("{seed}", str(seed))


def _train_seed(args: argparse.Namespace, agent: Any, hyperparams: Any, timesteps: int | None, seed: int,
                out: str) -> dict:
    """Train, evaluate and save one seed; the summary the command prints for it."""
    from actors.rl.evaluation import evaluate
    from actors.rl.policy import save_policy

    eval_seed = args.eval_seed if args.eval_seed is not None else 10_000 + seed
    trained = agent.train(args.env, hyperparams, seed=seed, total_timesteps=timesteps,
                          progress=_ProgressPrinter(not args.json and not args.quiet))
    evaluation = evaluate(trained.policy, args.env, args.eval_episodes, eval_seed, mode="exact").to_dict()
    save_policy(trained.policy, out, {
        "env_id": args.env,
        "agent": args.agent,
        "seed": seed,
        "timesteps": int(trained.timesteps),
        "training": trained.config,
        "training_wall_time_s": float(trained.wall_time_s),
        "evaluation": {k: evaluation[k] for k in ("episodes", "seed", "mode", "mean", "std", "iqm", "ci95", "score")},
    })
    returns = [float(r) for r in trained.episode_returns]
    return {"agent": args.agent, "env_id": args.env, "seed": seed, "timesteps": int(trained.timesteps),
            "training_episodes": len(returns), "training_wall_time_s": float(trained.wall_time_s),
            "last_training_returns": returns[-10:], "model_path": out, "evaluation": evaluation}


def _hyperparams(pairs: list[str] | None) -> dict[str, Any]:
    """``--hp name=value`` pairs; a value is read as JSON (``3e-4``, ``true``, ``[64, 64]``) and
    otherwise kept as text (``relu``). Names and values are checked by the agent's ``Args``."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise RLError(f"--hp {pair!r}: expected name=value")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[name.strip()] = value  # resolve_args turns lists into the dataclass's tuples
    return out


# -- registration ------------------------------------------------------------------------------

def register(subparsers: Any) -> None:
    """Add ``evaluate`` and ``train`` to the ``resimhub`` command line."""
    ev = subparsers.add_parser("evaluate", help="evaluate a model file greedily on a Gymnasium environment",
                               description="Load a model file (npz, torch.save state dict, safetensors, "
                               "ONNX; plain pickle is refused) and run it for exactly N episodes.")
    ev.add_argument("model_file", help="the model file (its format is detected from the content)")
    ev.add_argument("--env", required=True, help="Gymnasium id, e.g. CartPole-v1")
    ev.add_argument("--episodes", type=int, default=100)
    ev.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i (exact mode)")
    ev.add_argument("--mode", choices=("exact", "fast"), default="exact",
                    help="exact: per-episode seeds; fast: gymnasium's vector env, seeded once")
    ev.add_argument("--num-envs", type=int, default=None, help="parallel environments")
    ev.add_argument("--activation", choices=("relu", "tanh"), default=None,
                    help="hidden activation of a state dict (not recorded in such files; default relu)")
    ev.add_argument("--prefix", default=None, help="layer stack of a state dict holding several (e.g. actor)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.set_defaults(func=cmd_evaluate)

    tr = subparsers.add_parser("train", help="train an agent in the foreground, evaluate it and save it",
                               description="Train with the engine's agents, evaluate greedily, save a "
                               ".npz model with its manifest.")
    tr.add_argument("--env", required=True, help="Gymnasium id, e.g. CartPole-v1")
    tr.add_argument("--agent", default="ppo", help="agent name, e.g. ppo, dqn, a2c")
    tr.add_argument("--seed", type=int, default=None, help="the run's seed (default 1)")
    tr.add_argument("--seeds", default=None, metavar="S1,S2,...",
                    help="train one run per seed (e.g. 0,1,2,3,4) and report the IQM across them with its CI; "
                         "--out then needs {seed}")
    tr.add_argument("--timesteps", type=int, default=None, help="total environment steps (agent default)")
    tr.add_argument("--hp", action="append", metavar="NAME=VALUE",
                    help="a hyperparameter (repeat for several), e.g. --hp learning_rate=3e-4 --hp "
                         "hidden_sizes=[64,64]; GET /api/agents/<agent> lists them")
    tr.add_argument("--preset", action="store_true",
                    help="start from RL-Zoo's tuned hyperparameters and budget for this agent and env "
                         "(--hp and --timesteps still override)")
    tr.add_argument("--out", default=None,
                    help="where to save the model (default <agent>-<env>-seed<seed>.npz; {seed} is replaced)")
    tr.add_argument("--eval-episodes", type=int, default=100)
    tr.add_argument("--eval-seed", type=int, default=None, help="default 10000 + seed")
    tr.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    tr.add_argument("--json", action="store_true", help="print one JSON object")
    tr.set_defaults(func=cmd_train)
