"""Statistics of returns for analytics, computed for many groups at once.

The definitions are the project's (ARCHITECTURE §5, as the RL engine computes them for one
evaluation): population std, the interquartile mean that trims ``floor(n/4)`` values from each end,
seeded percentile bootstrap intervals, and probability of improvement as the Mann–Whitney U over
n·m. Analytics keeps its own implementation because it needs them per group over millions of rows
without a Python loop per row, and because the snapshot folder must be analysable without the RL
engine; the tests check both give the same numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as _sp

#: Bootstrap resamples are drawn in blocks of at most this many values to bound memory.
_BLOCK_VALUES = 4_000_000
#: Above this many groups, one global sort beats a Python-level loop over the groups.
_GROUP_LOOP_LIMIT = 2_000


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def iqm(values: Sequence[float] | np.ndarray) -> float:
    arr = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if arr.size == 0:
        raise ValueError("no values")
    k = arr.size // 4
    return float(arr[k: arr.size - k].mean())


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    n = samples.shape[1]
    k = n // 4
    return np.sort(samples, axis=1)[:, k: n - k].mean(axis=1)


def bootstrap_ci(values: Sequence[float] | np.ndarray, statistic: str = "iqm", *, n_resamples: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (``iqm``, ``mean`` or ``median``); the same
    seed draws the same resamples as the RL engine's ``bootstrap_ci``, so both give one interval."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("no values")
    reduce = {"iqm": _iqm_rows, "mean": lambda s: s.mean(axis=1),
              "median": lambda s: np.median(s, axis=1)}[statistic]
    if arr.size == 1:
        v = float(arr[0])
        return v, v
    rng = np.random.default_rng(seed)
    n = arr.size
    block = max(1, min(n_resamples, _BLOCK_VALUES // n))
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        m = min(block, n_resamples - start)
        out[start: start + m] = reduce(arr[rng.integers(0, n, size=(m, n))])
    alpha = 1.0 - confidence
    low, high = np.quantile(out, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def iqm_ci(values: Sequence[float] | np.ndarray, *, n_resamples: int = 2000, confidence: float = 0.95,
           seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the IQM without sorting any resample.

    A resample of the sorted values is fully described by how often each value was drawn; the
    IQM of the resample weights each value by how many of its copies fall in the kept middle
    positions. That is linear per resample instead of n log n, which matters for models with
    many thousands of evaluation episodes.
    """
    s = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    n = s.size
    if n == 0:
        raise ValueError("no values")
    if n == 1:
        return float(s[0]), float(s[0])
    k = n // 4
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    block = max(1, min(n_resamples, _BLOCK_VALUES // n))
    for start in range(0, n_resamples, block):
        m = min(block, n_resamples - start)
        draws = rng.integers(0, n, size=(m, n)) + (np.arange(m) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=m * n).reshape(m, n)
        upper = np.cumsum(counts, axis=1)
        kept = np.minimum(upper, n - k) - np.maximum(upper - counts, k)
        out[start: start + m] = (np.clip(kept, 0, None) @ s) / (n - 2 * k)
    alpha = 1.0 - confidence
    low, high = np.quantile(out, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def probability_of_improvement(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """P(X > Y) + ½·P(X = Y), X from ``a`` and Y from ``b``."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.size == 0 or xb.size == 0:
        raise ValueError("no values")
    ranks = _sp.rankdata(np.concatenate([xa, xb]))
    u = ranks[: xa.size].sum() - xa.size * (xa.size + 1) / 2.0
    return float(u / (xa.size * xb.size))


def improvement_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, n_resamples: int = 2000,
                   confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the probability of improvement, resampling each side's runs on its own
    (stratified), as is usual for comparisons across seeds."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    wins = (xa[:, None] > xb[None, :]) + 0.5 * (xa[:, None] == xb[None, :])
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    block = max(1, min(n_resamples, _BLOCK_VALUES // max(1, xa.size * xb.size)))
    for start in range(0, n_resamples, block):
        m = min(block, n_resamples - start)
        i = rng.integers(0, xa.size, size=(m, xa.size))
        j = rng.integers(0, xb.size, size=(m, xb.size))
        out[start: start + m] = wins[i[:, :, None], j[:, None, :]].mean(axis=(1, 2))
    alpha = 1.0 - confidence
    low, high = np.quantile(out, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def difference_tests(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict:
    """Welch's t-test and the two-sided Mann–Whitney U test; p-values are None where undefined."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        welch_p = _finite(_sp.ttest_ind(xa, xb, equal_var=False).pvalue) if xa.size > 1 and xb.size > 1 else None
        if np.all(xa == xa[0]) and np.all(xb == xa[0]):
            mw_p = 1.0
        else:
            mw_p = _finite(_sp.mannwhitneyu(xa, xb, alternative="two-sided").pvalue)
    return {"welch_p": welch_p, "mann_whitney_p": mw_p, "mean_difference": float(xa.mean() - xb.mean())}


def grouped_summary(codes: np.ndarray, values: np.ndarray, ngroups: int) -> dict[str, np.ndarray]:
    """count, mean, std (population), median, IQM, min and max of ``values`` per group code
    (``0 <= code < ngroups``), vectorised; a group with no values gets count 0 and NaNs.

    With few groups, the values are ordered by code (a radix sort for small integer codes) and each
    group's slice is sorted on its own, which is much cheaper than one sort by (code, value); with
    many small groups the per-group loop would dominate, and one such sort does it all.
    """
    codes = np.asarray(codes)
    values = np.asarray(values, dtype=np.float64)
    counts = np.bincount(codes, minlength=ngroups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(codes, weights=values, minlength=ngroups) / counts
        dev = values - mean[codes]
        std = np.sqrt(np.bincount(codes, weights=dev * dev, minlength=ngroups) / counts)
    median = np.full(ngroups, np.nan)
    centre = np.full(ngroups, np.nan)
    low = np.full(ngroups, np.nan)
    high = np.full(ngroups, np.nan)
    if values.size:
        if ngroups <= _GROUP_LOOP_LIMIT:
            _by_group(codes, values, counts, median, centre, low, high)
        else:
            _by_sort(codes, values, counts, median, centre, low, high)
    return {"count": counts, "mean": mean, "std": std, "median": median, "iqm": centre, "min": low, "max": high}


def _small_codes(codes: np.ndarray, ngroups: int) -> np.ndarray:
    for dtype in (np.uint8, np.uint16):
        if ngroups <= np.iinfo(dtype).max + 1:
            return codes.astype(dtype, copy=False)
    return codes


def _by_group(codes, values, counts, median, centre, low, high) -> None:
    order = np.argsort(_small_codes(codes, counts.size), kind="stable")
    grouped = values[order]
    ends = np.cumsum(counts)
    for g in np.flatnonzero(counts):
        n = int(counts[g])
        chunk = np.sort(grouped[ends[g] - n: ends[g]])
        k = n // 4
        median[g] = 0.5 * (chunk[(n - 1) // 2] + chunk[n // 2])
        centre[g] = chunk[k: n - k].mean()
        low[g], high[g] = chunk[0], chunk[n - 1]


def _by_sort(codes, values, counts, median, centre, low, high) -> None:
    order = np.lexsort((values, codes))
    s, c = values[order], codes[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    present = counts > 0
    n = counts[present]
    first = starts[present]
    median[present] = 0.5 * (s[first + (n - 1) // 2] + s[first + n // 2])
    low[present], high[present] = s[first], s[first + n - 1]
    rank = np.arange(s.size) - starts[c]
    k = counts // 4
    keep = (rank >= k[c]) & (rank < counts[c] - k[c])
    with np.errstate(invalid="ignore", divide="ignore"):
        centre[:] = np.bincount(c[keep], weights=s[keep], minlength=counts.size) / (counts - 2 * k)
    centre[~present] = np.nan
