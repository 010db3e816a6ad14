"""``resimhub analytics …`` from a snapshot folder alone: report formats, plots, compaction, listing."""

import json
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from analytics import plots
from api.cli import main
from tests.analytics.synthetic import experiment


@pytest.fixture
def folder(tmp_path, monkeypatch):
    # every service unreachable: nothing here may need one
    monkeypatch.setenv("RESIMHUB_DATABASE_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("RESIMHUB_BROKER_URL", "amqp://nobody@127.0.0.1:1/")
    snapshots = tmp_path / "snapshots"
    experiment(snapshots, 1, "CEM", eval_returns={0: [500.0] * 10, 1: [490.0] * 10})
    experiment(snapshots, 2, "PPO", seeds=(0, 1, 2))
    return snapshots


@pytest.mark.parametrize("fmt", ["md", "csv", "json", "parquet"])
def test_report_in_every_format_with_svg_curves(folder, tmp_path, fmt, capsys):
    out = tmp_path / "out"
    assert main(["analytics", "report", "--snapshots", str(folder), "--env", "CartPole-v1", "--format", fmt,
                 "--out", str(out)]) == 0
    written = capsys.readouterr()
    assert "report CartPole-v1" in written.err and "100%" in written.err  # progress on stderr
    for agent in ("CEM", "PPO"):
        svg = ET.parse(out / "curves" / f"{agent}.svg").getroot()
        assert svg.tag.endswith("svg") and any(e.tag.endswith("polyline") for e in svg.iter())
    if fmt == "md":
        text = (out / "report.md").read_text()
        assert "## Agents" in text and "| 1 | CEM |" in text and "![PPO](curves/PPO.svg)" in text
    elif fmt == "json":
        body = json.loads((out / "report.json").read_text())
        assert body["curves"] == {"CEM": "curves/CEM.svg", "PPO": "curves/PPO.svg"}
        assert body["agent_comparison"][0]["a"] == "CEM"
    else:
        read = pd.read_csv if fmt == "csv" else pd.read_parquet
        agents = read(out / f"leaderboard-agents.{fmt}")
        assert agents["agent"].tolist() == ["CEM", "PPO"] and {"ci95_low", "ci95_high"} <= set(agents.columns)
        assert len(read(out / f"leaderboard-models.{fmt}")) == 5
        assert len(read(out / f"experiments.{fmt}")) == 2


def test_report_for_an_env_without_data_is_empty_not_an_error(folder, tmp_path):
    assert main(["analytics", "report", "-q", "--snapshots", str(folder), "--env", "Acrobot-v1", "--format", "json",
                 "--out", str(tmp_path / "o")]) == 0
    body = json.loads((tmp_path / "o" / "report.json").read_text())
    assert body["leaderboard_agents"] == [] and body["experiments"] == [] and body["curves"] == {}


def test_compact_leaderboard_and_datasets_commands(folder, capsys):
    assert main(["analytics", "compact", "-q", "--snapshots", str(folder)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["dataset"] for line in lines} == {"episodes", "evaluations", "experiments"}
    assert main(["analytics", "datasets", "--json", "--snapshots", str(folder)]) == 0
    datasets = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert datasets["episodes"]["rows"] == 2 * 60 + 3 * 60 and datasets["episodes"]["compacted_files"] == 1
    assert datasets["experiments"]["batches"] == 2
    assert main(["analytics", "leaderboard", "--snapshots", str(folder), "--env", "CartPole-v1"]) == 0
    text = capsys.readouterr().out
    assert "1. CEM" in text and "2. PPO" in text


def test_since_must_be_a_time(folder, capsys):
    with pytest.raises(SystemExit):
        main(["analytics", "report", "--snapshots", str(folder), "--env", "x", "--out", "o", "--since", "soon"])
    assert "ISO 8601" in capsys.readouterr().err


def test_nice_ticks_cover_the_range():
    assert plots.nice_ticks(0, 480) == [0, 100, 200, 300, 400, 500]
    assert plots.nice_ticks(-1.3, 0.2) == pytest.approx([-1.5, -1.0, -0.5, 0.0, 0.5])
    assert plots.nice_ticks(5, 5)[0] <= 5 <= plots.nice_ticks(5, 5)[-1]
