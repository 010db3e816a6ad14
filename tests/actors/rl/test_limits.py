"""Bounds on every training cost, and stops that take effect inside long updates.

Each agent's ``Args`` declares the range of every hyperparameter that costs time or memory; the
engine refuses values outside it (so does the API, before anything is written, see
tests/api/test_training_limits.py). A stop requested mid-update ends training within about
``STOP_POLL_S`` plus one gradient step, however many epochs, minibatches or gradient steps remain.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import gymnasium as gym
import pytest

from actors.rl.agents import AGENTS, common, get_agent, qlearning
from actors.rl.agents.actor_critic import MAX_ROLLOUT
from actors.rl.errors import OutOfRange, RLError

LIMITED = [(name, field, limit) for name, module in AGENTS.items()
           for field, limit in common.limits_of(module.Args).items()]
DOCS = Path(__file__).resolve().parents[3] / "docs" / "agents.md"


def _at(limit: common.Limit, default, value: int):
    """``value`` in the shape of the field: a list of widths for hidden_sizes, else the number."""
    return (value,) * (limit.max_len or 1) if isinstance(default, tuple) else value


@pytest.mark.parametrize(("name", "field", "limit"), LIMITED, ids=[f"{n}.{f}" for n, f, _ in LIMITED])
def test_every_limited_hyperparameter_accepts_its_bounds_and_refuses_beyond(name, field, limit):
    args_cls = AGENTS[name].Args
    default = getattr(args_cls(), field)
    assert default is None or isinstance(default, tuple) or limit.minimum <= default <= limit.maximum
    assert getattr(args_cls(**{field: _at(limit, default, limit.maximum)}), field) == _at(limit, default, limit.maximum)
    with pytest.raises(OutOfRange) as over:
        args_cls(**{field: _at(limit, default, limit.maximum + 1)})
    assert (over.value.limit, over.value.value, over.value.bound) == (limit.maximum, limit.maximum + 1, "maximum")
    assert over.value.field.startswith(field) and str(limit.maximum) in str(over.value)
    with pytest.raises(OutOfRange) as under:
        args_cls(**{field: _at(limit, default, limit.minimum - 1)})
    assert under.value.bound == "minimum" and under.value.limit == limit.minimum


def test_layer_count_is_bounded_too():
    with pytest.raises(OutOfRange, match="hidden_sizes has 5 entries; at most 4") as exc:
        get_agent("PPO").Args(hidden_sizes=(8,) * 5)
    assert (exc.value.field, exc.value.limit, exc.value.value) == ("hidden_sizes", 4, 5)
    assert get_agent("CEM").Args(hidden_sizes=()).hidden_sizes == ()


def test_the_rollout_size_of_on_policy_agents_is_bounded():
    for name in ("PPO", "A2C"):
        args_cls = get_agent(name).Args
        assert args_cls(num_envs=8, n_steps=MAX_ROLLOUT // 8).n_steps == MAX_ROLLOUT // 8
        with pytest.raises(OutOfRange, match="transitions per rollout") as exc:
            args_cls(num_envs=64, n_steps=MAX_ROLLOUT // 8)
        assert (exc.value.field, exc.value.limit, exc.value.value) == ("n_steps", MAX_ROLLOUT // 64, MAX_ROLLOUT // 8)


def test_whole_numbers_only_but_json_floats_like_1e3_are_fine():
    dqn_args = get_agent("DQN").Args(buffer_size=1e5, hidden_sizes=[32.0, 32])
    assert dqn_args.buffer_size == 100_000 and type(dqn_args.buffer_size) is int
    assert dqn_args.hidden_sizes == (32, 32)
    for bad in (2.5, float("nan"), "10", True):
        with pytest.raises(RLError, match="whole number"):
            get_agent("PPO").Args(n_epochs=bad)
    with pytest.raises(OutOfRange):
        get_agent("PPO").Args(n_epochs=float("inf"))
    with pytest.raises(OutOfRange, match="n_epochs=100000000.0 exceeds its limit of 100"):
        get_agent("PPO").Args(n_epochs=1e8)


@pytest.mark.parametrize("name", list(AGENTS))
def test_the_engine_refuses_a_step_budget_beyond_its_limit(name):
    env_id = "FrozenLake-v1" if name == "QLEARNING" else "CartPole-v1"
    with pytest.raises(OutOfRange, match="total_timesteps") as exc:
        get_agent(name).train(env_id, total_timesteps=common.MAX_TOTAL_TIMESTEPS + 1)
    assert exc.value.limit == common.MAX_TOTAL_TIMESTEPS


def test_the_engine_refuses_hyperparameters_beyond_their_limits():
    """What the CLI and the train actor call: an experiment stored before a limit existed fails fast."""
    with pytest.raises(OutOfRange, match="n_epochs=100000000 exceeds its limit of 100"):
        get_agent("PPO").train("CartPole-v1", {"n_epochs": 10**8}, total_timesteps=1_000)


def test_the_cli_refuses_a_step_budget_beyond_the_limit_with_one_line(tmp_path, capsys):
    import argparse

    from actors.rl.cli import register

    parser = argparse.ArgumentParser(prog="resimhub")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "--env", "CartPole-v1", "--timesteps", str(common.MAX_TOTAL_TIMESTEPS * 2),
                              "--out", str(tmp_path / "m.npz")])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert err.strip() == "resimhub train: error: total_timesteps=10000000 exceeds its limit of 5000000"
    assert not (tmp_path / "m.npz").exists()


class _HugeTable(gym.Env):
    observation_space = gym.spaces.Discrete(10**8)
    action_space = gym.spaces.Discrete(4)


def test_qlearning_refuses_a_table_beyond_its_limit():
    gym.register("ResimTest/HugeTable-v0", entry_point=_HugeTable)
    try:
        with pytest.raises(RLError, match="table would have 100000000 x 4 entries"):
            qlearning.train("ResimTest/HugeTable-v0", total_timesteps=10)
    finally:
        gym.registry.pop("ResimTest/HugeTable-v0", None)


def test_the_docs_list_every_limit():
    """docs/agents.md has a row per limited hyperparameter, with the limit the code enforces."""
    text = DOCS.read_text()
    for name, field, limit in LIMITED:
        section = text.split(f"### {name}", 1)[1].split("\n### ", 1)[0]
        row = next((line for line in section.splitlines() if line.startswith(f"| `{field}`")), None)
        assert row is not None, f"{name}.{field} is not in docs/agents.md"
        assert f"{limit.maximum:,}" in row, row
        if limit.max_len:
            assert f"{limit.max_len} layers" in row, row
    assert f"{common.MAX_TOTAL_TIMESTEPS:,}" in text


# -- stopping inside long updates -------------------------------------------------------------------
# Each configuration makes one update (or training block) take far longer than the 2 s allowed
# below: without checks inside the inner loops, the stop would wait for the update to finish.
LONG_UPDATES = {
    # 100 epochs x 4096 one-row minibatches: ~400,000 gradient steps per update, minutes of work.
    "PPO": {"n_epochs": 100, "num_minibatches": 4096, "n_steps": 512},
    # 1024 gradient steps on 4096-row batches of a 256-256 network per block: a minute or two.
    "DQN": {"gradient_steps": 1024, "batch_size": 4096, "hidden_sizes": [256, 256], "learning_starts": 256,
            "train_frequency": 256},
}


@pytest.mark.parametrize("name", list(LONG_UPDATES))
def test_a_stop_mid_update_returns_within_a_second(name, tmp_path):
    requested = threading.Event()
    polls: list[float] = []

    def should_stop() -> bool:
        polls.append(time.monotonic())
        return requested.is_set()

    out: dict = {}
    checkpoint = tmp_path / "run.npz"

    def run() -> None:
        out["result"] = get_agent(name).train("CartPole-v1", LONG_UPDATES[name], seed=0, total_timesteps=1_000_000,
                                              should_stop=should_stop, checkpoint_path=str(checkpoint))

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    while not polls and thread.is_alive():  # the loop's first check: set-up is over
        time.sleep(0.01)
    time.sleep(1.0)  # the first rollout or 256 steps take a fraction of that; the long update is under way
    requested.set()
    asked = time.monotonic()
    thread.join(timeout=30)
    took = time.monotonic() - asked
    assert not thread.is_alive(), "training did not stop"
    assert took < 2.0, f"stopped {took:.2f} s after the request"
    result = out["result"]
    assert result.stopped and result.timesteps < 1_000_000 and checkpoint.exists()
    # should_stop stays cheap: asked about every STOP_POLL_S, not once per minibatch or gradient step.
    assert len(polls) <= (asked - started + took) / common.STOP_POLL_S * 1.5 + 5


def test_a_stop_mid_generation_discards_the_cem_generation(tmp_path):
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 2  # the loop's first check says no, the next one (inside the generation) yes

    # 1024 candidates of a 128-128 network on CartPole: a generation takes far longer than STOP_POLL_S.
    result = get_agent("CEM").train("CartPole-v1", {"population": 1024, "hidden_sizes": [128, 128]},
                                    total_timesteps=1_000_000, should_stop=should_stop,
                                    checkpoint_path=str(tmp_path / "cem.npz"))
    assert result.stopped and result.timesteps == 0 and result.episodes == 0
    assert (tmp_path / "cem.npz").exists()  # even a run stopped before its first step leaves one
