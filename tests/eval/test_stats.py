"""Tests for rlhfkit.eval.stats: win rates with ties, bootstrap intervals, paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from rlhfkit.eval.stats import bootstrap_ci, paired_bootstrap_diff, pass_at_k, win_rate, win_rate_ci

# --- win_rate ----------------------------------------------------------------------------------------------


def test_win_rate_counts_ties_as_half():
    # b - a = [1, 0, -2]: win, tie, loss → (1 + 0.5 + 0) / 3
    assert win_rate([0, 1, 2], [1, 1, 0]) == pytest.approx(1.5 / 3, abs=1e-12)


def test_win_rate_is_directional():
    # swapping the policies turns wins into losses: (0 + 0.5 + 1) / 3 for b = [0,1,2] over a = [1,1,0]
    assert win_rate([1, 1, 0], [0, 1, 2]) == pytest.approx(1.5 / 3, abs=1e-12)
    assert win_rate([0, 0, 0, 0], [1, 1, 1, -1]) == pytest.approx(0.75, abs=1e-12)  # 3 wins, 1 loss
    assert win_rate([1, 1, 1, -1], [0, 0, 0, 0]) == pytest.approx(0.25, abs=1e-12)


def test_win_rate_tie_tol_is_inclusive():
    # b - a = [0.1, 0.25, -0.3, 1.0]; tie_tol = 0.25 → tie, tie, loss, win = (0.5 + 0.5 + 0 + 1) / 4
    a = [0.0, 0.0, 0.0, 0.0]
    b = [0.1, 0.25, -0.3, 1.0]
    assert win_rate(a, b, tie_tol=0.25) == pytest.approx(0.5, abs=1e-12)
    assert win_rate(a, b) == pytest.approx(0.75, abs=1e-12)  # tie_tol 0: win, win, loss, win


def test_win_rate_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="same length"):
        win_rate([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="non-empty"):
        win_rate([], [])


def test_win_rate_ci_matches_win_rate_and_brackets_it():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=200), rng.normal(loc=0.3, size=200)
    rate, low, high = win_rate_ci(a, b, seed=3)
    assert rate == win_rate(a, b)
    # a percentile bootstrap over 200 pairs: width ≈ 2·1.96·√(r(1−r)/n) (binomial standard error)
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(rate * (1 - rate) / 200), rel=0.25)
    assert win_rate_ci(a, b, seed=3) == (rate, low, high)  # deterministic given the seed


def test_win_rate_ci_all_wins_is_degenerate():
    assert win_rate_ci([0, 0, 0], [1, 2, 3]) == (1.0, 1.0, 1.0)


# --- bootstrap_ci ------------------------------------------------------------------------------------------


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=20), rng.normal(size=2000)
    estimate, low, high = bootstrap_ci(small)
    assert estimate == pytest.approx(float(np.mean(small)), abs=1e-12)
    # a percentile interval of the mean: centred on it, width ≈ 2·1.96·σ/√n
    assert (low + high) / 2 == pytest.approx(estimate, abs=0.1 * (high - low))
    assert high - low == pytest.approx(2 * 1.96 * np.std(small) / np.sqrt(20), rel=0.25)
    large_estimate, large_low, large_high = bootstrap_ci(large)
    # width ~ 2·1.96·σ/√n: about 0.88 at n = 20, 0.088 at n = 2000
    assert large_high - large_low < (high - low) / 5


def test_bootstrap_ci_is_deterministic_given_the_seed():
    values = np.random.default_rng(0).normal(size=50)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_bootstrap_ci_is_a_percentile_interval():
    # a wider confidence gives a wider interval around the same estimate
    values = np.random.default_rng(0).normal(size=100)
    estimate, low_90, high_90 = bootstrap_ci(values, confidence=0.90)
    _, low_99, high_99 = bootstrap_ci(values, confidence=0.99)
    assert low_99 < low_90 < estimate < high_90 < high_99


def test_bootstrap_ci_uses_the_given_statistic():
    values = [1.0, 2.0, 3.0, 100.0]
    estimate, low, high = bootstrap_ci(values, stat=np.median)
    assert estimate == 2.5  # median of [1, 2, 3, 100]


def test_bootstrap_ci_of_constant_values_is_a_point():
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_resamples": 0}, "n_resamples"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0}, "confidence"),
    ],
)
def test_bootstrap_ci_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci([1.0, 2.0], **kwargs)


def test_bootstrap_ci_rejects_empty_values():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])


# --- paired_bootstrap_diff ---------------------------------------------------------------------------------


def test_paired_diff_of_a_constant_shift_is_exact():
    a = np.arange(10.0)  # integers, so b - a is exactly 1.0 in floating point
    assert paired_bootstrap_diff(a, a + 1) == (1.0, 1.0, 1.0)
    assert paired_bootstrap_diff(a + 1, a) == (-1.0, -1.0, -1.0)  # the sign follows b - a


def test_paired_diff_keeps_pairs_together():
    # a and b vary a lot between prompts but b - a is always 2 or 4: the paired CI stays within [2, 4]
    # although the unpaired spread of a or b alone is ~300
    a = np.array([0.0, 100.0, 300.0, 50.0, 200.0, 10.0])
    b = a + np.array([2.0, 4.0, 2.0, 4.0, 2.0, 4.0])
    diff, low, high = paired_bootstrap_diff(a, b)
    assert diff == 3.0
    assert 2.0 <= low < diff < high <= 4.0


def test_paired_diff_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap_diff([1.0, 2.0], [1.0])


# --- pass_at_k ---------------------------------------------------------------------------------------------


def test_pass_at_k_hand_computed():
    # n = 4, c = 1, k = 2: 1 − C(3, 2)/C(4, 2) = 1 − 3/6 = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5, abs=1e-12)
    # n = 5, c = 2, k = 2: 1 − C(3, 2)/C(5, 2) = 1 − 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-12)
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8, abs=1e-12)  # k = 1 is c/n
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(8, 1, 8) == 1.0  # k = n: any correct sample
    assert pass_at_k(4, 3, 2) == 1.0  # n − c = 1 < k: every pair holds a correct one


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="c must be in"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="k must be in"):
        pass_at_k(4, 1, 5)
