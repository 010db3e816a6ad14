"""Analytics end to end on the embedded hub: experiments really trained, snapshotted by the pipeline,
and read back through both API layers, the report job and a rebuild from the database."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from analytics import readers, reports
from api.cli import main
from storage.models import Evaluation, Experiment, TrainingRun
from tests.support.hubs import running_hub, settings_for

ENV = "CartPole-v1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two agents on CartPole, two seeds each: CEM learns it, PPO on a tiny budget does not."""
    with running_hub(settings_for(tmp_path_factory.mktemp("analytics"))) as hub:
        hub.wait_task(hub.client.post("/api/environments", json={"env_name": ENV}).json()["task_id"])
        ids = {}
        for agent, steps in (("CEM", 300_000), ("PPO", 4_096)):
            r = hub.client.post("/api/experiments", json={"name": f"{agent.lower()} run", "env_name": ENV,
                                                          "agent": agent, "total_timesteps": steps, "seeds": [0, 1],
                                                          "eval_episodes": 20})
            assert r.status_code == 201, r.text
            ids[agent] = r.json()["id"]
        tasks = [hub.client.post(f"/api/experiments/{i}/train").json()["task_id"] for i in ids.values()]
        for task_id in tasks:
            assert hub.wait_task(task_id, timeout=300)["status"] == "succeeded"
        hub.ids = ids
        yield hub


def _frame(snapshots, name: str) -> pd.DataFrame:
    frame = readers.read(snapshots, name).drop(columns=["batch_version"])
    key = [c for c in ("batch_id", "phase", "run_id", "evaluation_id", "episode", "status", "recorded_at")
           if c in frame.columns]
    return frame.sort_values(key).reset_index(drop=True)


def test_snapshot_totals_equal_the_database(trained):
    snapshots = trained.settings.snapshots_dir
    with trained.storage.db.session() as session:
        runs = list(session.scalars(select(TrainingRun)))
        evaluations = list(session.scalars(select(Evaluation).where(Evaluation.experiment_id.is_not(None))))
        experiments = {e.id: e for e in session.scalars(select(Experiment))}
    episodes = readers.read(snapshots, "episodes")
    train, evals = episodes[episodes.phase == "train"], episodes[episodes.phase == "eval"]
    assert len(train) == sum(len(r.episode_returns) for r in runs) == sum(r.episodes for r in runs)
    assert train["return"].sum() == pytest.approx(sum(sum(r.episode_returns) for r in runs))
    assert train["length"].sum() == sum(sum(r.episode_lengths) for r in runs)
    assert len(evals) == sum(len(e.result["returns"]) for e in evaluations)
    assert evals["return"].sum() == pytest.approx(sum(sum(e.result["returns"]) for e in evaluations))
    per_run = train.groupby("run_id")["step"].max().to_dict()
    assert per_run == {r.id: sum(r.episode_lengths) for r in runs}

    table = readers.read(snapshots, "evaluations")
    assert sorted(table.evaluation_id) == sorted(e.id for e in evaluations)
    assert table.set_index("evaluation_id")["mean"].to_dict() == pytest.approx(
        {e.id: e.result["mean"] for e in evaluations})

    latest = trained.client.get("/api/analytics/recent", params={"limit": 100}).json()
    assert latest["summary"]["total_experiments"] == len(experiments)
    for row in latest["experiments"]:
        db = experiments[row["id"]]
        assert row["status"] == db.status == "completed"
        assert row["avg_reward"] == pytest.approx(db.results["mean_return"])
        assert row["iqm"] == pytest.approx(db.results["iqm"]) and row["ci95"] == pytest.approx(db.results["ci95"])
        assert row["episodes"] == db.results["training_episodes"]
    assert latest["summary"]["avg_reward"] == pytest.approx(np.mean([e.results["mean_return"]
                                                                     for e in experiments.values()]))


def test_legacy_routes_answer_the_seed_shapes(trained):
    client, cem = trained.client, trained.ids["CEM"]
    body = client.get("/api/v1/analytics/recent").json()
    assert set(body) == {"summary", "experiments"}
    assert set(body["summary"]) == {"total_experiments", "avg_reward", "avg_duration"}
    assert body["summary"]["total_experiments"] == 2 and body["summary"]["avg_duration"] > 0
    assert {"id", "agent", "avg_reward"} <= set(body["experiments"][0])
    assert all(isinstance(e["avg_reward"], float) for e in body["experiments"])

    detail = client.get(f"/api/v1/analytics/experiment/{cem}").json()
    assert detail["agent"] == "CEM" and detail["status"] == "completed" and detail["episodes"] > 0
    assert detail["final_return"] >= 475 and detail["average_return"] < detail["final_return"]
    assert detail["reward_threshold"] == 475.0 and detail["duration"] > 0
    curve = detail["learning_curve"]
    assert 1 < len(curve) <= 20 and [p["step"] for p in curve] == sorted(p["step"] for p in curve)
    assert curve[-1]["mean_return"] > curve[0]["mean_return"] and curve[0]["seeds"] == 2
    steps = detail["convergence_steps"]
    assert set(steps) == {"0", "1"} and detail["convergence_step"] == max(steps.values())
    assert 0 < detail["convergence_step"] <= 2 * 300_000 + 500
    assert [h["status"] for h in detail["history"]] == ["created", "training", "evaluating", "completed"]

    for path in ("/api/v1/analytics/experiment/999999", "/api/analytics/experiments/999999"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/analytics/recent", params={"limit": "x"}).status_code == 422
    assert client.get("/api/v1/analytics/recent", params={"since": "yesterday"}).status_code == 422


def test_fastapi_routes_filter_rank_and_compare(trained):
    client = trained.client
    only_cem = client.get("/api/analytics/recent", params={"agent": "cem"}).json()
    assert [e["agent"] for e in only_cem["experiments"]] == ["CEM"] and only_cem["summary"]["total_experiments"] == 1
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert client.get("/api/analytics/recent", params={"since": future}).json()["summary"]["total_experiments"] == 0
    assert len(client.get("/api/analytics/recent", params={"limit": 1}).json()["experiments"]) == 1
    assert client.get("/api/analytics/recent", params={"env": "Pendulum-v1"}).json()["experiments"] == []
    assert client.get("/api/analytics/recent", params={"agent": "NOPE"}).status_code == 422

    board = client.get("/api/analytics/leaderboard", params={"env": ENV}).json()
    (lb,) = board["leaderboards"]
    assert [a["agent"] for a in lb["agents"]] == ["CEM", "PPO"]
    cem = lb["agents"][0]
    assert cem["runs"] == 2 and cem["ci95"][0] <= cem["iqm"] <= cem["ci95"][1]
    assert len(lb["models"]) == 4 and lb["models"][0]["agent"] == "CEM" and lb["models"][0]["episodes"] == 20
    assert all(m["ci95"] is not None and m["rank"] == i + 1 for i, m in enumerate(lb["models"]))

    compared = client.get("/api/analytics/compare", params={"env": ENV, "agents": "CEM,PPO"}).json()
    (pair,) = compared["pairs"]
    assert (pair["a"], pair["b"]) == ("CEM", "PPO") and pair["probability_of_improvement"] == 1.0
    r = client.get("/api/analytics/compare", params={"env": ENV, "agents": "CEM,DQN"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "not_enough_data"

    datasets = {d["name"]: d for d in client.get("/api/analytics/datasets").json()}
    assert datasets["episodes"]["rows"] > 0 and datasets["experiments"]["batches"] == 2


def test_an_experiment_has_one_learning_curve(trained):
    """The curve in an experiment's results (the aggregate actor's, from the database) is the one the
    analytics API draws from the snapshot files: by environment step, each seed, the IQM and its band."""
    for experiment_id in trained.ids.values():
        results = trained.client.get(f"/api/experiments/{experiment_id}").json()["results"]
        curve = trained.client.get(f"/api/analytics/experiments/{experiment_id}").json()["learning_curve"]
        assert curve == results["learning_curve"] and len(curve) > 1
        steps = [p["step"] for p in curve]
        assert steps == sorted(steps) and 0 < steps[-1] <= max(r["timesteps"] for r in results["runs"])
        for point in curve:
            assert set(point["per_seed"]) <= {str(s) for s in results["seeds"]}
            assert point["seeds"] == len(point["per_seed"])
            assert point["min_return"] <= point["iqm_return"] <= point["max_return"]
            if point["seeds"] > 1:
                assert point["ci95"][0] <= point["iqm_return"] <= point["ci95"][1]


def test_the_gateway_answers_what_a_read_of_the_files_answers(trained):
    """The gateway answers from the snapshot files (and the per-model statistics it keeps beside them,
    recomputed where a batch changed): a repeated request answers the same, and what the reports
    answer from the files."""
    client = trained.client
    first = client.get("/api/analytics/leaderboard", params={"env": ENV}).json()
    assert client.get("/api/analytics/leaderboard", params={"env": ENV}).json() == first
    assert client.get("/api/v1/analytics/recent").status_code == 200
    assert reports.leaderboards(trained.settings.snapshots_dir, env=ENV) == first


def test_rebuild_from_the_database_writes_what_the_pipeline_wrote(trained, monkeypatch, capsys):
    snapshots = trained.settings.snapshots_dir
    before = {name: _frame(snapshots, name) for name in ("episodes", "evaluations", "experiments")}
    monkeypatch.setenv("RESIMHUB_DATA_DIR", str(trained.settings.data_dir))
    # The first run rewrites the pipeline's files under their own names and compacts them; the
    # second writes them again and removes the compacted copies; neither changes a row.
    for removed in (0, 3):
        assert main(["analytics", "snapshot", "--quiet"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["experiments"] == 2 and out["files_removed"] == removed
        for name, frame in before.items():
            pd.testing.assert_frame_equal(_frame(snapshots, name), frame)
    files = list((snapshots / "episodes").rglob("*.parquet"))
    assert len(files) == 1 and files[0].name.startswith("part-")  # compacted afterwards


def test_report_runs_from_a_copy_of_the_snapshot_folder_alone(trained, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "snapshots"
    shutil.copytree(trained.settings.snapshots_dir, copy)
    monkeypatch.setenv("RESIMHUB_DATABASE_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    assert main(["analytics", "report", "--snapshots", str(copy), "--env", ENV, "--format", "md",
                 "--out", str(tmp_path / "md")]) == 0
    report = (tmp_path / "md" / "report.md").read_text()
    assert "| rank |" not in report or "CEM" in report
    assert "![CEM](curves/CEM.svg)" in report and "![PPO](curves/PPO.svg)" in report
    assert "report CartPole-v1" in capsys.readouterr().err  # the progress bar
    assert main(["analytics", "report", "--snapshots", str(copy), "--env", ENV, "--format", "json", "--no-plots",
                 "--out", str(tmp_path / "json"), "-q"]) == 0
    body = json.loads((tmp_path / "json" / "report.json").read_text())
    assert [a["agent"] for a in body["leaderboard_agents"]] == ["CEM", "PPO"]
    assert body["agent_comparison"][0]["probability_of_improvement"] == 1.0


def test_benchmark_evaluations_join_the_model_leaderboard_after_a_rebuild(trained, monkeypatch, capsys):
    client = trained.client
    model_id = client.get(f"/api/experiments/{trained.ids['CEM']}").json()["results"]["runs"][0]["model_id"]
    r = client.post("/benchmark/run", json={"model_id": model_id, "episodes": 10, "seed": 5, "wait": 60})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    monkeypatch.setenv("RESIMHUB_DATA_DIR", str(trained.settings.data_dir))
    assert main(["analytics", "snapshot", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["benchmark_evaluations"] == 1
    evaluations = readers.read(trained.settings.snapshots_dir, "evaluations")
    bench = evaluations[evaluations.source == "benchmark"]
    assert len(bench) == 1 and bench.iloc[0]["agent"] == "CEM" and bench.iloc[0]["model_id"] == model_id
    (lb,) = client.get("/api/analytics/leaderboard", params={"env": ENV}).json()["leaderboards"]
    (entry,) = [m for m in lb["models"] if m["model_id"] == model_id]
    assert entry["evaluations"] == 2 and entry["episodes"] == 30
    assert [a["runs"] for a in lb["agents"]] == [2, 2]  # a re-evaluation is not another training run
