"""Progress over several seeds, and retraining a finished experiment: the runs a retrain replaced
never count again, and their models say they were superseded."""

import time

import pytest

from actors.training import TRAINING_SHARE, _aggregate_progress
from storage import tasks
from storage.models import Environment, Experiment, TrainingRun


@pytest.fixture
def cartpole(hub):
    hub.wait_task(hub.client.post("/api/environments", json={"env_name": "CartPole-v1"}).json()["task_id"])
    return hub


def _train(hub, exp_id: int) -> dict:
    r = hub.client.post(f"/api/experiments/{exp_id}/train")
    assert r.status_code == 202, r.text
    task = hub.wait_task(r.json()["task_id"], timeout=120)
    assert task["status"] == "succeeded", task["error"]
    return task


def test_every_run_of_a_task_counts_in_its_progress_whether_started_or_not(hub):
    """The fraction once summed only the runs that had started (a queued run has no budget yet), so it
    fell when a later seed started; and an episode budget was measured in its step allowance."""
    with hub.storage.db.session() as session:
        env = Environment(env_name="CartPole-v1", status="verified")
        session.add(env)
        session.flush()
        exp = Experiment(name="x", environment_id=env.id, env_name="CartPole-v1", agent="DQN", seeds=[0, 1, 2])
        session.add(exp)
        task = tasks.create(session, "train")
        session.flush()
        session.add_all([
            TrainingRun(experiment_id=exp.id, task_id=task.id, seed=0, status="running", timesteps=500,
                        total_timesteps=1000, episodes=2),
            TrainingRun(experiment_id=exp.id, task_id=task.id, seed=1, status="completed", timesteps=1000,
                        total_timesteps=1000, episodes=9),
            TrainingRun(experiment_id=exp.id, task_id=task.id, seed=2, status="queued"),
        ])
        session.flush()
        progress = _aggregate_progress(session, task, 1000, None)
        assert progress["fraction"] == pytest.approx(TRAINING_SHARE * (0.5 + 1.0 + 0.0) / 3, abs=1e-4)
        assert progress["runs"] == 3 and progress["runs_trained"] == 1 and progress["timesteps"] == 1500
        # An episode budget of 10 with a step allowance of 5,000: 2 of 10 episodes is 20 %, not 10 %.
        by_episodes = _aggregate_progress(session, task, 5000, 10)
        assert by_episodes["fraction"] == pytest.approx(TRAINING_SHARE * (0.2 + 1.0 + 0.0) / 3, abs=1e-4)


@pytest.mark.slow
def test_the_progress_of_three_seeds_on_two_threads_only_moves_forward(cartpole):
    hub = cartpole
    r = hub.client.post("/api/experiments", json={"name": "seeds", "env_name": "CartPole-v1", "agent": "PPO",
                                                  "total_timesteps": 30_000, "seeds": [0, 1, 2], "eval_episodes": 3})
    task_id = hub.client.post(f"/api/experiments/{r.json()['id']}/train").json()["task_id"]
    seen = []
    deadline = time.monotonic() + 180
    while True:
        task = hub.client.get(f"/api/tasks/{task_id}").json()
        seen.append((task["status"], (task["progress"] or {}).get("fraction", 0.0)))
        if task["status"] in tasks.TERMINAL:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert task["status"] == "succeeded", task["error"]
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions), seen
    assert all(f < 1.0 for status, f in seen if status != "succeeded") and fractions[-1] == 1.0
    assert len(set(fractions)) > 3, "the test saw too little of the training"


def test_a_retrain_supersedes_the_earlier_runs_everywhere(cartpole):
    hub = cartpole
    client = hub.client
    exp = client.post("/api/experiments", json={"name": "again", "env_name": "CartPole-v1", "agent": "CEM",
                                                "total_timesteps": 2000, "seed": 0, "eval_episodes": 4})
    exp_id = exp.json()["id"]
    first = _train(hub, exp_id)
    old_model = first["result"]["runs"][0]["model_id"]
    assert client.get(f"/benchmark/models/{old_model}").json()["superseded"] is False
    second = _train(hub, exp_id)
    new_model = second["result"]["runs"][0]["model_id"]

    # The experiment's statistics: the latest training only.
    results = client.get(f"/api/experiments/{exp_id}").json()["results"]
    assert [r["model_id"] for r in results["runs"]] == [new_model] and results["seeds"] == [0]
    # The replaced model says so; the new one does not.
    old = client.get(f"/benchmark/models/{old_model}").json()
    assert old["superseded"] is True and old["superseded_by_task_id"] == second["task_id"] and old["superseded_at"]
    assert client.get(f"/benchmark/models/{new_model}").json()["superseded"] is False
    # The leaderboards count one run of one experiment, with its 4 evaluation episodes.
    deadline = time.monotonic() + 30
    while True:  # the snapshot of the second training is written with its completion
        board = client.get("/api/analytics/leaderboard", params={"env": "CartPole-v1"})
        assert board.status_code == 200, board.text
        (entry,) = board.json()["leaderboards"]
        if {m["model_id"] for m in entry["models"]} == {new_model} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (agent,) = entry["agents"]
    assert (agent["runs"], agent["experiments"], agent["evaluation_episodes"]) == (1, 1, 4), agent
    assert [m["model_id"] for m in entry["models"]] == [new_model]
    # Compared by id, a superseded model is still there, and marked.
    compared = client.get("/benchmark/compare", params={"model_ids": f"{old_model},{new_model}"}).json()
    assert {m["model_id"]: m["superseded"] for m in compared["models"]} == {old_model: True, new_model: False}
