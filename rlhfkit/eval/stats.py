"""Win rates, pass@k and percentile-bootstrap intervals for per-prompt evaluation values. numpy only."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def bootstrap_ci(
    values: ArrayLike,
    stat: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """A statistic of `values` and its percentile-bootstrap interval (Efron & Tibshirani 1993, §13.3).

    θ̂ = stat(x). For r = 1..R draw x*_r by resampling the n values with replacement; θ*_r = stat(x*_r).
    With α = 1 - confidence: low = quantile_{α/2}(θ*), high = quantile_{1-α/2}(θ*) (numpy's linear quantile).
    Constant values give low == high == θ̂.

    Args:
        values: [n] one value per independent unit (e.g. per prompt), n >= 1.
        stat: maps a [n] array to a scalar.
        n_resamples: R, the number of bootstrap resamples.
        confidence: the interval's coverage, in (0, 1).
        seed: seeds `np.random.default_rng`; the same inputs and seed give the same interval.
    Returns:
        (estimate θ̂, low, high) as floats.
    Raises:
        ValueError: empty or non-1-D values, n_resamples < 1, or confidence outside (0, 1).
    """
    x = np.asarray(values, dtype=float)  # [n]
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {x.shape}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, x.size, size=(n_resamples, x.size))  # [R, n]
    resampled = np.array([stat(x[row]) for row in indices], dtype=float)  # [R]
    alpha = 1.0 - confidence
    low, high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    return float(stat(x)), float(low), float(high)


def paired_bootstrap_diff(
    a: ArrayLike, b: ArrayLike, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean paired difference b - a and its percentile-bootstrap CI, resampling prompt indices.

    d_i = b_i - a_i for prompt i; the estimate is mean_i d_i. Resampling prompts keeps each pair together, so
    the interval reflects per-prompt correlation between the two policies (it is `bootstrap_ci(d)`).

    Args:
        a, b: [n] per-prompt values of the baseline (a) and the candidate (b), aligned by prompt.
        n_resamples, confidence, seed: as in `bootstrap_ci`.
    Returns:
        (mean_diff, low, high) as floats; positive means b scores higher.
    Raises:
        ValueError: a and b differ in length, or as in `bootstrap_ci`.
    """
    diffs = _paired_diffs(a, b)  # [n]
    return bootstrap_ci(diffs, np.mean, n_resamples, confidence, seed)


def win_rate(a: ArrayLike, b: ArrayLike, tie_tol: float = 0.0) -> float:
    """Share of prompts where b beats a, a tie counting one half.

    w_i = 1 if b_i - a_i > tie_tol, ½ if |b_i - a_i| <= tie_tol, else 0;  win rate = mean_i w_i.
    Example: a = [0, 1, 2], b = [1, 1, 0] → (1 + ½ + 0) / 3 = 0.5.

    Args:
        a, b: [n] per-prompt values of the baseline (a) and the candidate (b), aligned by prompt.
        tie_tol: differences this small (inclusive) are ties; 0.0 means only exact equality.
    Returns:
        The win rate of b over a, in [0, 1].
    Raises:
        ValueError: a and b differ in length or are empty.
    """
    return float(np.mean(_win_scores(a, b, tie_tol)))


def win_rate_ci(
    a: ArrayLike,
    b: ArrayLike,
    tie_tol: float = 0.0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """`win_rate(a, b, tie_tol)` with a paired percentile-bootstrap CI.

    It is `bootstrap_ci(w)` over the per-prompt scores w_i ∈ {0, ½, 1} defined in `win_rate`, so prompts are
    resampled with both policies' values together.

    Returns:
        (rate, low, high) as floats.
    """
    return bootstrap_ci(_win_scores(a, b, tie_tol), np.mean, n_resamples, confidence, seed)


def _win_scores(a: ArrayLike, b: ArrayLike, tie_tol: float) -> np.ndarray:
    """w_i ∈ {0, ½, 1}: b_i loses, ties or wins against a_i."""
    diffs = _paired_diffs(a, b)  # [n]
    return np.where(np.abs(diffs) <= tie_tol, 0.5, (diffs > 0).astype(float))  # [n]


def _paired_diffs(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """d_i = b_i - a_i, after checking a and b are aligned."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)  # [n], [n]
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(
            f"a and b must be non-empty 1-D and the same length, got shapes {x.shape}, {y.shape}"
        )
    return y - x  # [n]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from n samples of which c are correct (Chen et al. 2021, eq. 1):

    pass@k = 1 − C(n−c, k) / C(n, k),  the chance that k of the n samples drawn without replacement hold at
    least one correct one. Example: n = 4, c = 1, k = 2 → 1 − C(3, 2)/C(4, 2) = 1 − 3/6 = 0.5; k = 1 is c/n.

    Args:
        n: samples drawn for the problem. c: how many were correct, 0 <= c <= n. k: 1 <= k <= n.
    Returns:
        The estimate, in [0, 1].
    Raises:
        ValueError: c outside [0, n] or k outside [1, n].
    """
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n] = [0, {n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n] = [1, {n}], got {k}")
    if n - c < k:  # every draw of k holds a correct sample
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
