"""The statistics library's vectorised forms give the per-sample definitions' numbers: per-group
summaries, the sort-free IQM interval and the stratified improvement interval."""

import numpy as np
import pytest

from actors.rl import stats


@pytest.mark.parametrize("ngroups", [1, 7, 3_000])  # both the per-group path and the global-sort path
def test_grouped_summary_matches_the_per_sample_definitions(ngroups):
    rng = np.random.default_rng(ngroups)
    n = 40_000
    codes = rng.integers(0, ngroups, size=n)
    values = np.round(rng.normal(100, 30, size=n))  # rounded: ties, as CartPole's returns have
    codes[:5] = 0
    out = stats.grouped_summary(codes, values, ngroups + 1)  # the last group is empty
    assert out["count"][-1] == 0 and np.isnan(out["iqm"][-1]) and np.isnan(out["median"][-1])
    for g in rng.choice(ngroups, size=min(ngroups, 25), replace=False):
        mine = values[codes == g]
        assert out["count"][g] == mine.size
        assert out["mean"][g] == pytest.approx(mine.mean())
        assert out["std"][g] == pytest.approx(mine.std())
        assert out["median"][g] == pytest.approx(np.median(mine))
        assert out["iqm"][g] == pytest.approx(stats.iqm(mine))
        assert (out["min"][g], out["max"][g]) == (mine.min(), mine.max())


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 9])
def test_iqm_of_tiny_groups(n):
    values = np.arange(n, dtype=float)[::-1]
    for path in (stats._by_group, stats._by_sort):
        out = {k: np.full(1, np.nan) for k in ("median", "iqm", "min", "max")}
        path(np.zeros(n, dtype=np.int64), values, np.array([n]), out["median"], out["iqm"], out["min"], out["max"])
        assert out["iqm"][0] == pytest.approx(stats.iqm(values)) and out["median"][0] == np.median(values)


def test_iqm_interval_without_sorting_equals_sorting_each_resample():
    values = np.round(np.random.default_rng(2).gamma(2.0, 50.0, size=101))
    s = np.sort(values)
    draws = np.random.default_rng(5).integers(0, s.size, size=(300, s.size))
    direct = np.quantile([stats.iqm(s[row]) for row in draws], [0.025, 0.975])
    assert stats.iqm_ci(values, n_resamples=300, seed=5) == pytest.approx(tuple(direct))
    assert stats.iqm_ci([3.0]) == (3.0, 3.0)


def test_improvement_interval_brackets_the_point_estimate():
    rng = np.random.default_rng(3)
    a, b = np.round(rng.normal(10, 2, 9)), np.round(rng.normal(9, 2, 7))
    low, high = stats.improvement_ci(a, b, seed=1)
    assert 0 <= low <= stats.probability_of_improvement(a, b) <= high <= 1
    assert stats.improvement_ci(a, b, seed=1) == (low, high)  # seeded: the same interval again
    assert stats.improvement_ci([2.0, 3.0], [1.0], seed=0) == (1.0, 1.0)
