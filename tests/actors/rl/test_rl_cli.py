"""``resimhub evaluate`` / ``resimhub train`` driven through argparse, as the real CLI does."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actors.rl.cli import register
from actors.rl.nn import MLP
from actors.rl.policy import MLPPolicy, save_policy
from tests.support.fixtures import SEED_DQN_MODEL

FIXTURE = SEED_DQN_MODEL
REPO = Path(__file__).resolve().parents[3]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="resimhub")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_evaluate_json(capsys):
    code = run(["evaluate", str(FIXTURE), "--env", "CartPole-v1", "--episodes", "12", "--seed", "1000", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["returns"]) == 12 and len(doc["lengths"]) == 12
    assert doc["model"]["sha256"] == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert doc["model"]["format"] == "torch-zip"
    assert doc["seed"] == 1000 and doc["mode"] == "exact" and doc["env_id"] == "CartPole-v1"


def test_evaluate_human_readable(tmp_path, capsys):
    model = tmp_path / "m.npz"
    save_policy(MLPPolicy(MLP([4, 8, 2], "tanh"), "discrete", (4,)), model, {"env_id": "CartPole-v1"})
    assert run(["evaluate", str(model), "--env", "CartPole-v1", "--episodes", "5", "--mode", "fast"]) == 0
    out = capsys.readouterr().out
    assert "mean ± std" in out and "resimhub-npz" in out and "vector_entry_point" in out


def test_refused_file_exits_nonzero_with_one_line(tmp_path, capsys):
    evil = tmp_path / "model.pkl"
    evil.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    assert run(["evaluate", str(evil), "--env", "CartPole-v1"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "pickle" in err and "arbitrary code" in err


def test_mismatch_missing_file_and_unknown_env(tmp_path, capsys):
    assert run(["evaluate", str(FIXTURE), "--env", "Acrobot-v1"]) == 1
    assert "model expects 4 inputs but Acrobot-v1 observations have shape (6,)" in capsys.readouterr().err
    assert run(["evaluate", str(tmp_path / "nope.npz"), "--env", "CartPole-v1"]) == 1
    assert "No such file" in capsys.readouterr().err
    assert run(["evaluate", str(FIXTURE), "--env", "CartPol-v1"]) == 1
    assert "CartPole-v1" in capsys.readouterr().err


def test_evaluate_through_a_real_process():
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from api.cli import main; sys.exit(main(sys.argv[1:]))",
         "evaluate", str(FIXTURE), "--env", "CartPole-v1", "--episodes", "3", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["returns"]) == 3


def _agents_available() -> bool:
    try:
        from actors.rl.agents import get_agent  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _agents_available(), reason="actors.rl.agents.get_agent is not there yet")
def test_train_saves_an_evaluated_model(tmp_path, capsys):
    out = tmp_path / "ppo.npz"
    code = run(["train", "--env", "CartPole-v1", "--agent", "ppo", "--seed", "1", "--timesteps", "2048",
                "--out", str(out), "--eval-episodes", "5", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["model_path"] == str(out) and doc["evaluation"]["episodes"] == 5
    assert doc["evaluation"]["seed"] == 10_001
    with np.load(out, allow_pickle=False) as z:
        manifest = json.loads(str(z["__manifest__"][()]))
    assert manifest["env_id"] == "CartPole-v1" and manifest["agent"] == "ppo" and manifest["seed"] == 1
    assert manifest["evaluation"]["mean"] == doc["evaluation"]["mean"]


def test_train_with_unknown_env_fails_cleanly(capsys):
    if not _agents_available():
        pytest.skip("actors.rl.agents.get_agent is not there yet")
    assert run(["train", "--env", "CartPol-v1", "--agent", "ppo", "--timesteps", "128"]) == 1
    err = capsys.readouterr().err
    assert "CartPole-v1" in err and "Traceback" not in err


def test_train_with_unknown_or_unsuitable_agent_fails_cleanly(capsys):
    if not _agents_available():
        pytest.skip("actors.rl.agents.get_agent is not there yet")
    assert run(["train", "--env", "CartPole-v1", "--agent", "nosuchagent"]) == 1
    err = capsys.readouterr().err
    assert "nosuchagent" in err and err.count("\n") == 1
    assert run(["train", "--env", "Pendulum-v1", "--agent", "dqn", "--timesteps", "128"]) == 1
    err = capsys.readouterr().err
    assert "dqn cannot train on Pendulum-v1" in err and "Traceback" not in err


def test_train_takes_hyperparameters_and_records_them(tmp_path, capsys):
    out = tmp_path / "dqn.npz"
    code = run(["train", "--env", "CartPole-v1", "--agent", "dqn", "--timesteps", "600", "--out", str(out),
                "--eval-episodes", "2", "--json", "--hp", "hidden_sizes=[32]", "--hp", "learning_rate=1e-3",
                "--hp", "activation=tanh", "--hp", "learning_starts=100"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    with np.load(out, allow_pickle=False) as z:
        training = json.loads(str(z["__manifest__"][()]))["training"]
    args = training.get("args", training)
    assert args["hidden_sizes"] == [32] and args["learning_rate"] == 1e-3 and args["activation"] == "tanh"


def test_train_refuses_an_unknown_or_malformed_hyperparameter(capsys):
    assert run(["train", "--env", "CartPole-v1", "--agent", "dqn", "--hp", "learnin_rate=1e-3"]) == 1
    err = capsys.readouterr().err
    assert "learnin_rate" in err and "learning_rate" in err and "Traceback" not in err
    assert run(["train", "--env", "CartPole-v1", "--agent", "dqn", "--hp", "learning_rate"]) == 1
    assert "name=value" in capsys.readouterr().err


def test_train_several_seeds_reports_the_iqm_across_them(tmp_path, capsys):
    from actors.rl import stats

    code = run(["train", "--env", "CartPole-v1", "--agent", "ppo", "--seeds", "0,1,2", "--timesteps", "1024",
                "--out", str(tmp_path / "ppo-{seed}.npz"), "--eval-episodes", "3", "--json", "--quiet"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["seeds"] == [0, 1, 2] and [r["seed"] for r in doc["runs"]] == [0, 1, 2]
    assert [r["evaluation"]["seed"] for r in doc["runs"]] == [10_000, 10_001, 10_002]
    finals = [r["evaluation"]["mean"] for r in doc["runs"]]
    across = doc["across_seeds"]
    assert across["final_returns"] == finals and across["over"] == "seeds"
    assert across["iqm"] == stats.iqm(finals) and across["ci95"] == stats.experiment_iqm(finals, seed=10_000)["ci95"]
    for seed in (0, 1, 2):
        with np.load(tmp_path / f"ppo-{seed}.npz", allow_pickle=False) as z:
            assert json.loads(str(z["__manifest__"][()]))["seed"] == seed


def test_train_refuses_bad_seed_lists(tmp_path, capsys):
    for argv in (["--seeds", "0,0"], ["--seeds", "a,b"], ["--seed", "1", "--seeds", "2,3"],
                 ["--seeds", "0,1", "--out", str(tmp_path / "one.npz")]):
        assert run(["train", "--env", "CartPole-v1", "--agent", "ppo", "--timesteps", "64", *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
