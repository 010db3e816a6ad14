"""``GET /api/agents`` tells a client every hyperparameter it may send, and what it says is what the
engine does: the bounds it lists are the ones a submission is refused beyond."""

import pytest


def test_every_agent_is_listed_with_documented_hyperparameters(hub):
    agents = hub.client.get("/api/agents").json()
    assert [a["name"] for a in agents] == sorted(["PPO", "A2C", "DQN", "CEM", "QLEARNING", "SAC", "TD3"])
    for agent in agents:
        assert agent["default_timesteps"] > 0 and agent["hyperparameters"]
        for hp in agent["hyperparameters"]:
            assert hp["doc"], f"{agent['name']}.{hp['name']} has no documentation"
            assert hp["type"] in ("integer", "number", "boolean", "string", "array of integers",
                                  "integer or null", "number or null")
    spaces = {a["name"]: a["spaces"] for a in agents}
    assert {"observation": "Box", "action": "Box"} in spaces["PPO"]
    assert {"observation": "Box", "action": "Box"} not in spaces["DQN"]
    assert spaces["QLEARNING"] == [{"observation": "Discrete", "action": "Discrete"}]
    assert spaces["SAC"] == spaces["TD3"] == [{"observation": "Box", "action": "Box"}]


def test_one_agent_by_any_spelling_and_an_unknown_one_is_a_422(hub):
    dqn = hub.client.get("/api/agents/dqn").json()
    assert dqn["name"] == "DQN"
    buffer = next(h for h in dqn["hyperparameters"] if h["name"] == "buffer_size")
    assert buffer["type"] == "integer" and buffer["minimum"] == 1 and buffer["maximum"] >= buffer["default"]
    response = hub.client.get("/api/agents/SACK")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_agent"


@pytest.mark.parametrize("agent", ["PPO", "DQN"])
def test_the_listed_bounds_are_the_ones_a_submission_meets(hub, agent):
    hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
    listed = hub.client.get(f"/api/agents/{agent}").json()["hyperparameters"]
    bounded = next(h for h in listed if h.get("maximum") is not None and h["type"] == "integer")
    body = {"name": "x", "env_name": "CartPole-v1", "agent": agent, "total_timesteps": 1000}
    at_limit = hub.client.post("/api/experiments", json={**body, "hyperparams": {bounded["name"]: bounded["maximum"]}})
    beyond = hub.client.post("/api/experiments",
                             json={**body, "hyperparams": {bounded["name"]: bounded["maximum"] + 1}})
    assert beyond.status_code == 422, beyond.text
    assert beyond.json()["error"]["details"][0]["limit"] == bounded["maximum"]
    # At the limit the only possible refusals are combinations the agent checks (e.g. batch > buffer).
    assert at_limit.status_code in (201, 422)
    if at_limit.status_code == 422:
        assert at_limit.json()["error"]["code"] == "invalid_hyperparameter"


def test_presets_are_listed_with_their_source_and_what_differs(hub):
    dqn = hub.client.get("/api/agents/DQN").json()
    cartpole = next(p for p in dqn["presets"] if p["env_name"] == "CartPole-v1")
    assert cartpole["hyperparams"]["hidden_sizes"] == [256, 256] and cartpole["total_timesteps"] == 50_000
    assert "rl-baselines3-zoo" in cartpole["source"]
    ppo = hub.client.get("/api/agents/PPO").json()
    assert any(p["differences"] for p in ppo["presets"])
    assert {"env_name": "Pendulum-v1", "reason": "the zoo explores with gSDE"} in ppo["without_preset"]
    acrobot = next(p for p in ppo["presets"] if p["env_name"] == "Acrobot-v1")  # the zoo's normalize: true
    assert acrobot["hyperparams"]["normalize_obs"] is True and acrobot["hyperparams"]["normalize_reward"] is True
