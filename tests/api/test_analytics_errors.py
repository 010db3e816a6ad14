"""A snapshot folder the reports cannot read is an error with the API's body, never an empty table."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from storage.context import open_storage
from storage.migrate import upgrade
from tests.analytics import synthetic
from tests.support.hubs import settings_for

PATHS = ["/api/analytics/recent", "/api/analytics/leaderboard", "/api/analytics/experiments/1",
         "/api/analytics/compare?env=CartPole-v1", "/api/analytics/datasets", "/api/v1/analytics/recent",
         "/api/v1/analytics/experiment/1"]


@pytest.fixture
def gateway(tmp_path):
    settings = settings_for(tmp_path)
    upgrade(settings)
    storage = open_storage(settings)
    try:
        with TestClient(create_app(storage)) as client:
            yield client, settings.snapshots_dir
    finally:
        storage.close()


def _check_refused(client, what: str) -> None:
    for path in PATHS:
        r = client.get(path)
        assert r.status_code == 500, (path, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == "snapshots_unreadable" and what in error["message"], (path, error)
        assert error["details"]["path"]


def test_a_folder_partitioned_by_env_only_is_refused(gateway):
    client, snapshots = gateway
    for name in ("episodes", "evaluations", "experiments"):
        directory = snapshots / name / "env_name=CartPole-v1"
        directory.mkdir(parents=True)
        pq.write_table(pa.table({"experiment_id": [1]}), directory / "experiment-1.parquet")
    _check_refused(client, "expected env_name=<env>/date=<YYYY-MM-DD>/<file>.parquet")


def test_files_that_are_not_this_project_s_schema_are_refused(gateway):
    client, snapshots = gateway
    synthetic.experiment(snapshots, 1, "CEM")
    synthetic.experiment(snapshots, 2, "PPO")
    for name in ("episodes", "evaluations", "experiments"):
        for directory in (snapshots / name).rglob("date=*"):
            for f in directory.iterdir():
                pq.write_table(pa.table({"reward": [1.0], "done": [True]}), f)
    _check_refused(client, "are not ReSimHub's")
