"""Statistics come out as plain Python numbers and match their textbook definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from actors.rl import stats
from actors.rl.stats import bootstrap_ci, iqm, probability_of_improvement, significance_test, summarize


def test_iqm_trims_a_quarter_at_each_end():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(np.mean([3, 4, 5, 6]))
    assert iqm([5.0]) == 5.0
    assert isinstance(iqm(np.arange(10)), float)


def test_bootstrap_ci_is_seeded_and_brackets_the_statistic():
    x = np.random.default_rng(3).normal(100.0, 15.0, size=200)
    a = bootstrap_ci(x, seed=1)
    assert a == bootstrap_ci(x, seed=1)
    assert a != bootstrap_ci(x, seed=2)
    assert a[0] < x.mean() < a[1]
    assert all(type(v) is float for v in a)
    lo, hi = bootstrap_ci(x, stat=iqm, seed=1)
    assert lo < iqm(x) < hi
    lo2, hi2 = bootstrap_ci(x, stat=lambda r: float(np.percentile(r, 50)), n_resamples=200, seed=0)
    assert lo2 < hi2


def test_bootstrap_ci_width_shrinks_with_confidence():
    x = np.arange(50, dtype=float)
    lo95, hi95 = bootstrap_ci(x, confidence=0.95)
    lo50, hi50 = bootstrap_ci(x, confidence=0.5)
    assert lo95 < lo50 < hi50 < hi95
    assert bootstrap_ci([7.0]) == (7.0, 7.0)


def test_probability_of_improvement():
    assert probability_of_improvement([3, 4, 5], [0, 1, 2]) == 1.0
    assert probability_of_improvement([0, 1, 2], [3, 4, 5]) == 0.0
    assert probability_of_improvement([1, 1], [1, 1]) == 0.5
    # Pairs: (1>0), (1=1), (1<2), (2>0), (2>1), (2=2) -> (3 wins + 0.5 * 2 ties) / 6
    assert probability_of_improvement([1, 2], [0, 1, 2]) == pytest.approx(4 / 6)


def test_significance_test_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    a, b = rng.normal(10, 1, 60), rng.normal(8, 1, 60)
    res = significance_test(a, b)
    assert res["welch_t"]["p_value"] < 1e-6 and res["mann_whitney_u"]["p_value"] < 1e-6
    assert res["probability_of_improvement"] > 0.85
    same = significance_test(a, a)
    assert same["mann_whitney_u"]["p_value"] > 0.9
    json.dumps(res, allow_nan=False)


def test_significance_test_with_constant_samples_is_json_safe():
    res = significance_test([500.0] * 10, [500.0] * 10)
    assert res["welch_t"]["p_value"] is None
    assert res["mann_whitney_u"]["p_value"] == 1.0
    assert res["probability_of_improvement"] == 0.5
    json.dumps(res, allow_nan=False)


def test_summarize():
    s = summarize([10.0, 20.0, 30.0, 40.0])
    assert s["mean"] == 25.0 and s["std"] == pytest.approx(np.std([10, 20, 30, 40]))
    assert s["median"] == 25.0 and s["min"] == 10.0 and s["max"] == 40.0
    assert s["iqm"] == 25.0 and s["score"] == pytest.approx(25.0 - s["std"])
    assert s["ci95"][0] <= 25.0 <= s["ci95"][1]
    assert all(type(s[k]) is float for k in ("mean", "std", "median", "min", "max", "iqm", "score"))
    with pytest.raises(ValueError):
        summarize([])


# -- the learning curve ---------------------------------------------------------------------------------

def test_learning_curve_bins_by_step_per_seed_with_the_spread_across_seeds():
    # Three seeds; episodes end every 10 steps; seed s returns s + step / 10.
    curves = {s: (np.arange(10, 101, 10), s + np.arange(1, 11)) for s in (0, 1, 2)}
    curve = stats.learning_curve(curves, bins=5, n_resamples=500, seed=3)
    assert [p["step"] for p in curve] == [20, 40, 60, 80, 100]
    first = curve[0]  # episodes ending at steps 10 and 20
    assert first["per_seed"] == {"0": 1.5, "1": 2.5, "2": 3.5} and first["seeds"] == 3 and first["episodes"] == 6
    assert first["mean_return"] == 2.5 and first["iqm_return"] == 2.5
    assert (first["min_return"], first["max_return"]) == (1.5, 3.5)
    assert first["ci95"][0] >= 1.5 and first["ci95"][1] <= 3.5 and first["ci95"][0] < first["ci95"][1]
    assert stats.learning_curve(curves, bins=5, n_resamples=500, seed=3) == curve


def test_learning_curve_takes_seeds_of_unequal_length_without_imputing():
    curves = {0: ([50, 100, 150, 200], [1.0, 2.0, 3.0, 4.0]), 7: ([50, 100], [10.0, 20.0])}
    curve = stats.learning_curve(curves, bins=4)
    assert [p["step"] for p in curve] == [50, 100, 150, 200]
    assert [p["seeds"] for p in curve] == [2, 2, 1, 1]
    assert curve[1]["per_seed"] == {"0": 2.0, "7": 20.0} and curve[1]["mean_return"] == 11.0
    assert curve[2]["per_seed"] == {"0": 3.0} and curve[2]["ci95"] is None  # one seed: no band
    # Long episodes leave a bin empty for a seed: it is not counted there, nothing is carried over.
    sparse = stats.learning_curve({0: ([100], [5.0]), 1: ([25, 50, 75, 100], [1.0, 1.0, 1.0, 1.0])}, bins=4)
    assert [p["seeds"] for p in sparse] == [1, 1, 1, 2]
    assert stats.learning_curve({}, bins=4) == [] and stats.learning_curve({0: ([], [])}) == []
    with pytest.raises(ValueError):
        stats.learning_curve({0: ([1, 2], [1.0])})


def test_experiment_iqm_is_across_seeds_or_over_the_one_runs_episodes():
    episodes = np.random.default_rng(5).normal(100.0, 30.0, size=200) ** 1.1
    one = stats.experiment_iqm([float(episodes.mean())], episodes, seed=9)
    assert one["over"] == "evaluation episodes" and one["iqm"] == iqm(episodes)
    assert one["ci95"] == list(bootstrap_ci(episodes, iqm, seed=9))  # the IQM's interval, not the mean's
    several = stats.experiment_iqm([1.0, 5.0, 3.0, 9.0], episodes, seed=9)
    assert several["over"] == "seeds" and several["iqm"] == iqm([1.0, 5.0, 3.0, 9.0])
    assert several["ci95"] == list(bootstrap_ci([1.0, 5.0, 3.0, 9.0], iqm, seed=9))
