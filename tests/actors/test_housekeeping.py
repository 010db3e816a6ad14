"""The relays' periodic snapshot compaction: piles of small files get merged in the background."""

import os
import threading
import time
from types import SimpleNamespace

from actors import housekeeping
from analytics import readers
from analytics.snapshots import write_batch
from tests.analytics.test_compaction import batch, check


def _storage(tmp_path):
    return SimpleNamespace(settings=SimpleNamespace(snapshots_dir=tmp_path))


def _age(root, seconds):
    past = time.time() - seconds
    for path in root.rglob("*.parquet"):
        os.utime(path, (past, past))


def _wait_idle(thread: str = "snapshot-compaction", timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while any(t.name == thread for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_many_old_small_files_are_merged_without_losing_or_doubling_rows(tmp_path):
    ids = [i for i in range(80) if i % 4 == 0]  # all in one partition
    for i in ids:
        write_batch(tmp_path, batch(i))
    _age(tmp_path, 120)
    before = len(readers.read(tmp_path, "episodes"))
    housekeeping.compact_snapshots(_storage(tmp_path))
    _wait_idle()
    files = list((tmp_path / "episodes").rglob("*.parquet"))
    assert len(files) == 1
    frame = readers.read(tmp_path, "episodes")
    assert len(frame) == before
    check(frame, {f"run-{i}" for i in ids})


def test_few_or_young_files_are_left_alone(tmp_path):
    few = housekeeping.COMPACT_MIN_FILES - 1
    for i in range(0, 4 * few, 4):  # under the threshold
        write_batch(tmp_path, batch(i))
    _age(tmp_path, 120)
    housekeeping.compact_snapshots(_storage(tmp_path))
    _wait_idle()
    assert len(list((tmp_path / "episodes").rglob("*.parquet"))) == few
    for i in range(4 * few, 4 * few + 80, 4):  # now many more files, but the new ones are young
        write_batch(tmp_path, batch(i))
    housekeeping.compact_snapshots(_storage(tmp_path))
    _wait_idle()
    assert len(list((tmp_path / "episodes").rglob("*.parquet"))) > 1


def test_the_leaderboard_statistics_of_changed_envs_are_refreshed_in_the_background(tmp_path):
    import numpy as np

    from analytics import model_stats, reports
    from tests.analytics.synthetic import experiment

    rng = np.random.default_rng(0)
    experiment(tmp_path, 1, "CEM", eval_returns={s: rng.normal(100, 10, 30) for s in (0, 1)})
    experiment(tmp_path, 2, "PPO", env="Acrobot-v1", eval_returns={s: rng.normal(-90, 5, 30) for s in (0, 1)})
    assert not model_stats.is_current(tmp_path, "CartPole-v1")
    housekeeping.refresh_leaderboards(_storage(tmp_path))
    _wait_idle("leaderboard-refresh", 60)
    assert model_stats.is_current(tmp_path, "CartPole-v1") and model_stats.is_current(tmp_path, "Acrobot-v1")
    before = reports.leaderboards(tmp_path, env="Acrobot-v1")
    experiment(tmp_path, 3, "PPO", eval_returns={s: rng.normal(400, 10, 30) for s in (0, 1)})
    assert not model_stats.is_current(tmp_path, "CartPole-v1") and model_stats.is_current(tmp_path, "Acrobot-v1")
    housekeeping.refresh_leaderboards(_storage(tmp_path))
    _wait_idle("leaderboard-refresh", 60)
    assert model_stats.is_current(tmp_path, "CartPole-v1")
    board = reports.leaderboards(tmp_path, env="CartPole-v1")["leaderboards"][0]["models"]
    assert board[0]["model_id"].startswith("model-3-") and board[0]["ci95"] is not None
    assert reports.leaderboards(tmp_path, env="Acrobot-v1") == before
