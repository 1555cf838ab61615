"""Gao et al. 2022's fitted forms of gold reward against d = √KL, for best-of-n and RL. numpy only.

Gao, Schulman & Hilton 2022, "Scaling Laws for Reward Model Overoptimization" (arXiv 2210.10760) eq. 1-2,
ALGORITHMS.md §10:  R_bon(d) = d(α − β d),  R_RL(d) = d(α − β log d),  d = √KL(π‖π_init).
R is measured relative to the initial policy, so R(0) = 0 by construction; both forms are linear in (α, β),
so the fit is ordinary least squares on the design columns (d, −d²) or (d, −d log d).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def _d_log_d(d: np.ndarray) -> np.ndarray:
    """d · log d with its limit 0 at d = 0 (log 0 is never evaluated)."""
    safe_d = np.where(d > 0, d, 1.0)  # [n]  log(1) = 0 stands in where d = 0
    return d * np.log(safe_d)  # [n]


def bon_curve(d: ArrayLike, alpha: float, beta: float) -> np.ndarray:
    """Best-of-n form R_bon(d) = d(α − β d).

    Args:
        d: [n] √KL values, d ≥ 0. alpha, beta: α, β from `fit_bon`.
    Returns:
        [n] predicted reward (relative to the initial policy).
    """
    d = np.asarray(d, dtype=float)  # [n]
    return d * (alpha - beta * d)  # [n]


def rl_curve(d: ArrayLike, alpha: float, beta: float) -> np.ndarray:
    """RL form R_RL(d) = d(α − β log d), with R_RL(0) = 0 (d log d → 0).

    Args:
        d: [n] √KL values, d ≥ 0. alpha, beta: α, β from `fit_rl`.
    Returns:
        [n] predicted reward (relative to the initial policy).
    """
    d = np.asarray(d, dtype=float)  # [n]
    return alpha * d - beta * _d_log_d(d)  # [n]


def _least_squares(
    d: ArrayLike, rewards: ArrayLike, second_column: Callable[[np.ndarray], np.ndarray]
) -> tuple[float, float]:
    """Fit R ≈ α d − β g(d) by least squares; g = `second_column`."""
    d = np.asarray(d, dtype=float)  # [n]
    rewards = np.asarray(rewards, dtype=float)  # [n]
    if d.ndim != 1 or d.shape != rewards.shape:
        raise ValueError(
            f"d and R must be 1-D and of the same length, got shapes {d.shape} and {rewards.shape}"
        )
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(rewards))):
        raise ValueError("d and R must be finite")
    if np.any(d < 0):
        raise ValueError(f"d = √KL must be ≥ 0, got min(d) = {d.min()}")
    # Points at d = 0 have an all-zero design row: R(0) := 0, they carry no information on α, β.
    n_informative = np.unique(d[d > 0]).size
    if n_informative < 2:
        raise ValueError(
            f"fitting α, β needs at least 2 points with distinct d > 0, got {n_informative}; "
            "evaluate more KL strengths (points at d = 0 do not count)"
        )
    design = np.stack([d, -second_column(d)], axis=1)  # [n, 2]
    (alpha, beta), *_ = np.linalg.lstsq(design, rewards, rcond=None)
    return float(alpha), float(beta)


def fit_bon(d: ArrayLike, rewards: ArrayLike) -> tuple[float, float]:
    """Least-squares α, β of R = d(α − β d) (Gao et al. 2022 eq. 1, best-of-n).

    Args:
        d: [n] √KL of each point (for best-of-n, d = √(log n − (n − 1)/n)), d ≥ 0.
        rewards: [n] reward minus the initial policy's reward (so R(0) = 0).
    Returns:
        (alpha, beta).
    Raises:
        ValueError: fewer than 2 distinct d > 0, negative or non-finite values, or mismatched shapes.
    """
    return _least_squares(d, rewards, lambda x: x**2)


def fit_rl(d: ArrayLike, rewards: ArrayLike) -> tuple[float, float]:
    """Least-squares α, β of R = d(α − β log d) (Gao et al. 2022 eq. 2, RL), with d log d := 0 at d = 0.

    Args:
        d: [n] √KL of each point, d ≥ 0. rewards: [n] reward minus the initial policy's reward.
    Returns:
        (alpha, beta).
    Raises:
        ValueError: fewer than 2 distinct d > 0, negative or non-finite values, or mismatched shapes.
    """
    return _least_squares(d, rewards, _d_log_d)
