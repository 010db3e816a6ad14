"""The model leaderboard's kept statistics: whatever happened to the snapshot folder since the last
read (new evaluations, a rewritten batch, a retrain, a compaction, a damaged or unwritable copy),
the next leaderboard equals one computed from scratch."""

import shutil
from datetime import timedelta

import numpy as np
import pytest

from analytics import compaction, model_stats, reports
from analytics.snapshots import Batch, write_batch
from tests.analytics.synthetic import T0, experiment

ENV = "CartPole-v1"


def _board(folder, **kwargs):
    return reports.model_leaderboard(folder, ENV, limit=None, ci_resamples=200, **kwargs)


def _from_scratch(folder):
    shutil.rmtree(folder / model_stats.CACHE_DIR, ignore_errors=True)
    return _board(folder)


def _benchmark(folder, evaluation: str, model: str, returns, when=T0):
    rows = {"source": ["benchmark"] * len(returns), "evaluation_id": [evaluation] * len(returns),
            "model_id": [model] * len(returns), "phase": ["eval"] * len(returns),
            "episode": list(range(len(returns))), "return": [float(r) for r in returns],
            "length": [10] * len(returns), "recorded_at": [when] * len(returns)}
    write_batch(folder, Batch("episodes", f"evaluation-{evaluation}", ENV, when, rows))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(3)
    experiment(tmp_path, 1, "CEM", eval_returns={s: np.round(rng.normal(200, 30, 40)) for s in (0, 1)})
    experiment(tmp_path, 2, "PPO", when=T0 + timedelta(hours=1),
               eval_returns={s: np.round(rng.normal(300, 30, 40)) for s in (0, 1)})
    return tmp_path


def test_a_kept_board_answers_as_a_fresh_one_and_is_kept(folder):
    first = _board(folder)
    assert (folder / model_stats.CACHE_DIR).is_dir()
    assert _board(folder) == first == _from_scratch(folder)
    assert all(e["ci95"] is not None for e in first)


def test_new_and_rewritten_batches_are_seen(folder):
    _board(folder)
    _benchmark(folder, "b1", "model-1-0", np.full(30, 500.0))  # more episodes of a model already there
    _benchmark(folder, "b2", "uploaded-1", np.full(30, 450.0))  # a new model
    board = _board(folder)
    assert board == _from_scratch(folder)
    by_model = {e["model_id"]: e for e in board}
    assert by_model["model-1-0"]["episodes"] == 70 and by_model["uploaded-1"]["iqm"] == 450.0
    _benchmark(folder, "b2", "uploaded-1", np.full(30, 10.0))  # the same batch written again
    board = _board(folder)
    assert {e["model_id"]: e["iqm"] for e in board}["uploaded-1"] == 10.0
    assert board == _from_scratch(folder)


def test_a_retrain_leaves_the_superseded_models_off(folder):
    _board(folder)
    experiment(folder, 1, "CEM", task_id="retrain1-task", when=T0 + timedelta(hours=2),
               eval_returns={s: np.full(40, 499.0) for s in (0, 1)})
    board = _board(folder)
    assert board == _from_scratch(folder)
    assert {e["model_id"] for e in board} == {"model-2-0", "model-2-1", "model-1-0-retrain1-task",
                                              "model-1-1-retrain1-task"}


def test_compaction_changes_no_answer(folder):
    before = _board(folder)
    _benchmark(folder, "b3", "uploaded-2", np.arange(50.0), when=T0)
    compaction.compact(folder, min_files=2)
    after = _board(folder)
    assert after == _from_scratch(folder)
    assert [e for e in after if e["model_id"] != "uploaded-2"] == [e for e in before]


def test_a_damaged_or_unwritable_copy_is_only_a_slower_read(folder):
    want = _board(folder)
    for kept in (folder / model_stats.CACHE_DIR).iterdir():
        kept.write_bytes(b"not parquet")
    assert _board(folder) == want
    shutil.rmtree(folder / model_stats.CACHE_DIR)
    (folder / model_stats.CACHE_DIR).write_text("a file where the folder should be")
    assert _board(folder) == want
    assert _board(folder) == want


def test_other_resampling_settings_and_filters_are_answered_not_mixed(folder):
    default = _board(folder)
    other = reports.model_leaderboard(folder, ENV, limit=None, ci_resamples=300, seed=4)
    assert [e["ci95"] for e in other] != [e["ci95"] for e in default]
    assert _board(folder) == default
    only_cem = reports.model_leaderboard(folder, ENV, agent="CEM", limit=None, ci_resamples=200)
    assert {e["model_id"] for e in only_cem} == {"model-1-0", "model-1-1"}
    unranked = lambda entries: {e["model_id"]: {k: v for k, v in e.items() if k != "rank"} for e in entries}  # noqa: E731
    assert unranked(only_cem) == {m: e for m, e in unranked(default).items() if m in {"model-1-0", "model-1-1"}}


def test_the_per_group_summary_is_the_textbook_one_for_every_group_size():
    from actors.rl import stats

    rng = np.random.default_rng(0)
    for _ in range(200):  # groups of 1 to 11 values: nothing trimmed below 4, the last group included
        counts = rng.integers(1, 12, size=rng.integers(1, 6))
        values = np.concatenate([np.sort(rng.normal(0, 1, c)) for c in counts])
        offsets = np.concatenate([[0], np.cumsum(counts)])
        found = model_stats.Returns(["e"] * len(counts), [str(i) for i in range(len(counts))], [[]] * len(counts),
                                    offsets, values).summary()
        for g in range(len(counts)):
            x = values[offsets[g]:offsets[g + 1]]
            assert found["count"][g] == x.size and found["iqm"][g] == pytest.approx(stats.iqm(x))
            assert found["mean"][g] == pytest.approx(x.mean()) and found["std"][g] == pytest.approx(x.std())
            assert found["median"][g] == pytest.approx(np.median(x))
            assert (found["min"][g], found["max"][g]) == (x.min(), x.max())


def test_the_folder_state_names_every_change_an_answer_depends_on(folder):
    from analytics import readers

    first = readers.folder_state(folder)
    assert first == readers.folder_state(folder) and len(first) > 0
    _benchmark(folder, "b9", "uploaded-9", np.full(5, 1.0))
    written = readers.folder_state(folder)
    assert written != first
    _benchmark(folder, "b9", "uploaded-9", np.full(5, 2.0))  # the same batch again: same name, new file
    assert readers.folder_state(folder) != written
    before = readers.folder_state(folder)
    compaction.compact(folder, min_files=2)
    assert readers.folder_state(folder) != before
