"""CleanRL-style state dicts: the acting network picked by role, returns equal to the torch module's.

Fixtures and their returns come from tests/fixtures/cleanrl/make_fixtures.py (torch in a side
environment, not imported here). Discrete actions must match exactly; the continuous agent is
checked like SB3's Box policies (see test_sb3_files.py): actions on its own trajectory within
1e-5, returns within a relative 2e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from actors.rl.evaluation import evaluate
from actors.rl.modelfiles import load_policy

HERE = Path(__file__).resolve().parents[2] / "fixtures" / "cleanrl"
REF = json.loads((HERE / "returns.json").read_text())
TRACES = json.loads((HERE / "actions.json").read_text())
CASES = [(name, f) for name, ref in REF.items() if not name.startswith("_") for f in ref["files"]]


def _returns(policy, ref) -> list[float]:
    return evaluate(policy, ref["env_id"], ref["episodes"], ref["seed"], mode="exact").returns


@pytest.mark.parametrize(("name", "filename"), CASES)
def test_returns_equal_the_torch_modules_own(name, filename):
    ref = REF[name]
    loaded = load_policy(HERE / filename, env_id=ref["env_id"])
    assert loaded.manifest["activation"] == ref["activation"]  # recognised from the layout, no upload option
    got = _returns(loaded.policy, ref)
    assert len(set(ref["returns"])) > 1
    if loaded.policy.head == "discrete":
        assert got == ref["returns"]
    else:
        np.testing.assert_allclose(got, ref["returns"], rtol=2e-5, atol=1e-5)


def test_ppo_agent_acts_with_the_actor_and_says_tanh_is_assumed():
    m = load_policy(HERE / "ppo_agent_cartpole.pth", env_id="CartPole-v1").manifest
    assert m["acting_network"]["layout"] == "cleanrl-ppo"
    assert m["layers"] == ["actor.0", "actor.2", "actor.4"] and m["acting_network"]["ignored"] == ["critic"]
    (a,) = [x for x in m["assumptions"] if x["name"] == "activation"]
    assert a["value"] == "tanh" and "CleanRL" in a["reason"]


def test_continuous_agent_acts_with_actor_mean_and_flags_normalisation():
    m = load_policy(HERE / "ppo_continuous_agent_pendulum.pth", env_id="Pendulum-v1").manifest
    assert m["acting_network"]["layout"] == "cleanrl-ppo-continuous"
    assert m["layers"][0] == "actor_mean.0" and m["acting_network"]["action_transform"] == "clip"
    (n,) = [x for x in m["assumptions"] if x["name"] == "observation_normalization"]
    assert "NormalizeObservation" in n["reason"]


def test_continuous_actions_equal_the_modules_on_its_trajectory():
    trace = TRACES["ppo_continuous_agent_pendulum"]
    policy = load_policy(HERE / "ppo_continuous_agent_pendulum.pth", env_id="Pendulum-v1").policy
    np.testing.assert_allclose(policy.act(np.array(trace["observations"], np.float32)),
                               np.array(trace["actions"], np.float32), rtol=0, atol=1e-5)


def test_dqn_checkpoint_with_a_target_network_acts_with_the_online_one():
    loaded = load_policy(HERE / "dqn_with_target_cartpole.pth", env_id="CartPole-v1")
    m = loaded.manifest
    assert m["layers"] == ["q_network.network.0", "q_network.network.2", "q_network.network.4"]
    assert m["acting_network"]["ignored"] == ["target_network.network"]
    assert "target network" in m["acting_network"]["reason"]
    online, target = REF["dqn_q_network_cartpole"], REF["dqn_target_network_cartpole"]
    assert online["returns"] != target["returns"]  # choosing the wrong one would change the score
    assert _returns(loaded.policy, online) == online["returns"]
