"""``preset: true`` starts an experiment from RL-Zoo's tuned setting for its agent and environment,
and the experiment says so; without it nothing changes."""


def _cartpole(hub):
    hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])


def test_a_preset_fills_what_the_request_leaves_out_and_is_recorded(hub):
    _cartpole(hub)
    agent = hub.client.get("/api/agents/DQN").json()
    tuned = next(p for p in agent["presets"] if p["env_name"] == "CartPole-v1")
    r = hub.client.post("/api/experiments", json={"name": "tuned", "env_name": "CartPole-v1", "agent": "DQN",
                                                  "preset": True, "hyperparams": {"learning_starts": 500}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["hyperparams"] == {**tuned["hyperparams"], "learning_starts": 500}
    assert body["total_timesteps"] == tuned["total_timesteps"]
    assert body["preset"]["source"] == tuned["source"] and body["preset"]["overridden"] == ["learning_starts"]
    again = hub.client.get(f"/api/experiments/{body['id']}").json()
    assert again["preset"] == body["preset"] and again["hyperparams"] == body["hyperparams"]
    budget = hub.client.post("/api/experiments", json={"name": "short", "env_name": "CartPole-v1", "agent": "DQN",
                                                       "preset": True, "total_timesteps": 2_000}).json()
    assert budget["total_timesteps"] == 2_000 and budget["hyperparams"] == tuned["hyperparams"]


def test_no_preset_is_chosen_silently_and_a_missing_one_is_refused(hub):
    _cartpole(hub)
    plain = hub.client.post("/api/experiments", json={"name": "plain", "env_name": "CartPole-v1",
                                                      "agent": "DQN"}).json()
    assert plain["preset"] is None and plain["hyperparams"] == {} and plain["total_timesteps"] is None
    r = hub.client.post("/api/experiments", json={"name": "x", "env_name": "CartPole-v1", "agent": "CEM",
                                                  "preset": True})
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_preset"
    assert "GET /api/agents/CEM" in r.json()["error"]["message"]
