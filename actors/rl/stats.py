"""The project's one statistics library for episode returns: the engine's evaluations, the
pipeline's experiment results, the benchmark comparisons and the analytics reports all use it.

RL returns are few, skewed and often bounded (CartPole piles up at 500), so a mean alone misleads.
The functions here follow the usual reliable-evaluation practice: the interquartile mean (trimming
``floor(n/4)`` values from each end) as a robust centre, seeded percentile-bootstrap intervals, and
comparisons by probability of improvement plus a test of difference. Every value returned is a
built-in ``float``/``int`` (or ``None`` where a statistic is undefined) so that results serialise to
JSON unchanged. :func:`grouped_summary` computes the same definitions for many groups at once, for
reports over millions of episode rows. It needs only numpy and scipy, so the analytics jobs import
it without the rest of the engine.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import stats as _sp

ArrayLike = Sequence[float] | np.ndarray

# Bootstrap resamples are drawn in blocks of at most this many values to bound memory.
_BOOTSTRAP_BLOCK = 4_000_000
#: Above this many groups, one global sort beats a Python-level loop over the groups.
_GROUP_LOOP_LIMIT = 2_000
#: The learning curve's defaults, wherever it is drawn (an experiment's results, the analytics API).
CURVE_BINS = 20
CURVE_RESAMPLES = 1000


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
    return _percentile_interval(values, confidence)


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def iqm_ci(x: ArrayLike, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the IQM, resampling positions of the sorted values.

    Drawing indices into the sorted values lets each resample be ordered by sorting its indices
    as 32-bit integers (or 16-bit ones with a radix sort, below 32,768 values) instead of its float
    values, which is about twice as fast at 10,000 values and gives the same resample. The
    resamples are drawn from the sorted values, so the interval is a different (equally valid)
    draw from ``bootstrap_ci(x, iqm, seed=seed)``'s.
    """
    s = np.sort(_as_array(x))
    n = s.size
    if n == 1:
        return float(s[0]), float(s[0])
    k = n // 4
    small = n <= np.iinfo(np.int16).max
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    block = max(1, min(n_resamples, _BOOTSTRAP_BLOCK // n))
    for start in range(0, n_resamples, block):
        m = min(block, n_resamples - start)
        # Drawn as int64 whatever the width sorted: the draws (so the interval) stay those of the seed.
        draws = rng.integers(0, n, size=(m, n)).astype(np.int16 if small else np.int32)
        draws.sort(axis=1, kind="stable" if small else None)
        out[start: start + m] = s[draws[:, k: n - k]].mean(axis=1)
    return _percentile_interval(out, confidence)


def improvement_ci(a: ArrayLike, b: ArrayLike, *, n_resamples: int = 2000, confidence: float = 0.95,
                   seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the probability of improvement, resampling each side on its own
    (stratified), as is usual for comparisons across seeds."""
    xa, xb = _as_array(a, "a"), _as_array(b, "b")
    wins = (xa[:, None] > xb[None, :]) + 0.5 * (xa[:, None] == xb[None, :])
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    block = max(1, min(n_resamples, _BOOTSTRAP_BLOCK // max(1, xa.size * xb.size)))
    for start in range(0, n_resamples, block):
        m = min(block, n_resamples - start)
        i = rng.integers(0, xa.size, size=(m, xa.size))
        j = rng.integers(0, xb.size, size=(m, xb.size))
        out[start: start + m] = wins[i[:, :, None], j[:, None, :]].mean(axis=(1, 2))
    return _percentile_interval(out, confidence)


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
    """The summary of a set of episode returns the evaluation protocol reports (docs/architecture.md, "The
    evaluation protocol"): population std, IQM, bootstrap CI of the mean."""
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


def experiment_iqm(finals: ArrayLike, episodes: ArrayLike | None = None, *, seed: int = 0,
                   n_resamples: int = 2000) -> dict:
    """The IQM an experiment reports and the 95 % percentile bootstrap interval of that IQM.

    Across its runs' final mean returns when it has several seeds (the unit of a claim about an
    agent); over the evaluation episodes of its one run when it has a single seed (``episodes``),
    as an IQM of one number would say nothing. ``over`` names which.
    """
    finals = _as_array(finals, "finals")
    if finals.size == 1 and episodes is not None:
        values, over = _as_array(episodes, "episodes"), "evaluation episodes"
    else:
        values, over = finals, "seeds"
    low, high = bootstrap_ci(values, iqm, n_resamples=n_resamples, seed=seed)
    return {"iqm": iqm(values), "ci95": [low, high], "over": over}


def learning_curve(curves: Mapping[int, tuple[ArrayLike, ArrayLike]], *, bins: int = CURVE_BINS,
                   n_resamples: int = CURVE_RESAMPLES,
                   confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """The project's one learning curve: training returns by environment step, per seed and across seeds.

    ``curves`` maps each seed to (the environment steps done when each of its episodes ended, their
    returns). Steps from 0 to the last episode's end over all seeds are cut into ``bins`` equal bins,
    each reported at its right edge. A seed's value in a bin is the mean return of its episodes that
    ended there; a seed with no episode ending in a bin (it stopped earlier, or its episodes are
    longer than a bin) is not counted there, and nothing is imputed, so seeds of unequal length
    need no care. Across the seeds counted in a bin: their mean, IQM, the percentile bootstrap
    interval of the IQM across seeds (null with one seed: there is no spread to resample), min and
    max. Bins no seed reached are left out.
    """
    if bins < 1:
        raise ValueError("bins must be at least 1")
    parts = [(int(s), np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(r, dtype=np.float64).reshape(-1))
             for s, (x, r) in sorted(curves.items())]
    parts = [(s, x, r) for s, x, r in parts if x.size]
    if not parts:
        return []
    for s, x, r in parts:
        if x.size != r.size:
            raise ValueError(f"seed {s}: {x.size} steps for {r.size} returns")
    top = max(float(x.max()) for _, x, _ in parts)
    edges = np.linspace(0.0, top, bins + 1)
    means = np.full((len(parts), bins), np.nan)
    episodes = np.zeros(bins, dtype=np.int64)
    for i, (_, x, r) in enumerate(parts):
        index = np.clip(np.searchsorted(edges, x, side="left") - 1, 0, bins - 1)
        counts = np.bincount(index, minlength=bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[i] = np.bincount(index, weights=r, minlength=bins) / counts
        episodes += counts
    out = []
    for b in range(bins):
        present = np.flatnonzero(~np.isnan(means[:, b]))
        if not present.size:
            continue
        values = means[present, b]
        ci = bootstrap_ci(values, iqm, n_resamples=n_resamples, confidence=confidence, seed=seed) \
            if values.size > 1 else None
        out.append({"step": int(round(edges[b + 1])), "seeds": int(values.size), "episodes": int(episodes[b]),
                    "mean_return": float(values.mean()), "iqm_return": iqm(values),
                    "ci95": None if ci is None else [ci[0], ci[1]],
                    "min_return": float(values.min()), "max_return": float(values.max()),
                    "per_seed": {str(parts[i][0]): float(means[i, b]) for i in present}})
    return out


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
