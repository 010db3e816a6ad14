"""Statistics for episode returns, as plain Python numbers.

RL returns are few, skewed and often bounded (CartPole piles up at 500), so a mean alone misleads.
The functions here follow the usual reliable-evaluation practice: the interquartile mean as a
robust centre, seeded percentile-bootstrap intervals, and comparisons by probability of
improvement plus a test of difference. Every value returned is a built-in ``float``/``int`` (or
``None`` where a statistic is undefined) so that results serialise to JSON unchanged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _sp

ArrayLike = Sequence[float] | np.ndarray

# Bootstrap resamples are drawn in blocks of at most this many values to bound memory.
_BOOTSTRAP_BLOCK = 4_000_000


def _as_array(x: ArrayLike, name: str = "x") -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _plain(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def iqm(x: ArrayLike) -> float:
    """Interquartile mean: the mean of the middle 50% (the lowest and highest 25% trimmed)."""
    arr = np.sort(_as_array(x))
    k = int(0.25 * arr.size)
    return float(arr[k: arr.size - k].mean())


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    n = samples.shape[1]
    k = int(0.25 * n)
    return np.sort(samples, axis=1)[:, k: n - k].mean(axis=1)


def bootstrap_ci(x: ArrayLike, stat: Callable = np.mean, n_resamples: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat(x)``; the same seed gives the same interval.

    ``np.mean``, ``np.median`` and :func:`iqm` are computed for all resamples at once; any other
    callable is applied per resample.
    """
    arr = _as_array(x)
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    if arr.size == 1:
        v = float(stat(arr))
        return v, v
    rng = np.random.default_rng(seed)
    n = arr.size
    block = max(1, min(n_resamples, _BOOTSTRAP_BLOCK // n))
    values = np.empty(n_resamples, dtype=np.float64)
    done = 0
    while done < n_resamples:
        m = min(block, n_resamples - done)
        samples = arr[rng.integers(0, n, size=(m, n))]
        if stat is np.mean:
            values[done: done + m] = samples.mean(axis=1)
        elif stat is np.median:
            values[done: done + m] = np.median(samples, axis=1)
        elif stat is iqm:
            values[done: done + m] = _iqm_rows(samples)
        else:
            values[done: done + m] = [float(stat(row)) for row in samples]
        done += m
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def probability_of_improvement(a: ArrayLike, b: ArrayLike) -> float:
    """P(X > Y) + ½·P(X = Y) for X drawn from ``a`` and Y from ``b`` (the Mann–Whitney U over n·m)."""
    xa, xb = _as_array(a, "a"), _as_array(b, "b")
    ranks = _sp.rankdata(np.concatenate([xa, xb]))  # average ranks count ties as one half
    u_a = ranks[: xa.size].sum() - xa.size * (xa.size + 1) / 2.0
    return float(u_a / (xa.size * xb.size))


def significance_test(a: ArrayLike, b: ArrayLike) -> dict:
    """Welch's t-test and the two-sided Mann–Whitney U test of ``a`` against ``b``.

    p-values are ``None`` when a test is undefined (e.g. Welch with two constant samples).
    """
    xa, xb = _as_array(a, "a"), _as_array(b, "b")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if xa.size > 1 and xb.size > 1:
            welch = _sp.ttest_ind(xa, xb, equal_var=False)
            welch_stat, welch_p = _plain(welch.statistic), _plain(welch.pvalue)
            welch_df = _plain(getattr(welch, "df", float("nan")))
        else:
            welch_stat = welch_p = welch_df = None
        if np.all(xa == xa[0]) and np.all(xb == xa[0]):
            # Identical constant samples: scipy's normal approximation divides by zero.
            mw_stat, mw_p = float(xa.size * xb.size / 2.0), 1.0
        else:
            mw = _sp.mannwhitneyu(xa, xb, alternative="two-sided")
            mw_stat, mw_p = _plain(mw.statistic), _plain(mw.pvalue)
    return {
        "n_a": int(xa.size),
        "n_b": int(xb.size),
        "mean_a": float(xa.mean()),
        "mean_b": float(xb.mean()),
        "mean_difference": float(xa.mean() - xb.mean()),
        "welch_t": {"statistic": welch_stat, "p_value": welch_p, "df": welch_df},
        "mann_whitney_u": {"statistic": mw_stat, "p_value": mw_p},
        "probability_of_improvement": probability_of_improvement(xa, xb),
    }


def summarize(returns: ArrayLike, *, seed: int = 0, n_resamples: int = 2000) -> dict:
    """The §5 summary of a set of episode returns (population std, IQM, bootstrap CI of the mean)."""
    arr = _as_array(returns, "returns")
    mean = float(arr.mean())
    std = float(arr.std())
    low, high = bootstrap_ci(arr, np.mean, n_resamples=n_resamples, seed=seed)
    return {
        "n": int(arr.size),
        "mean": mean,
        "std": std,
        "median": float(np.median(arr)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "iqm": iqm(arr),
        "ci95": [low, high],
        "score": mean - std,
    }
