"""Checks for rlhfkit.eval.scaling: Gao et al. 2022's forms, fitted by hand-solvable least squares."""

import math

import numpy as np
import pytest

from rlhfkit.eval import scaling


def test_bon_curve_and_rl_curve_values():
    # R_bon = d(α − β d) with α = 2, β = 1: d = 0 → 0, 1 → 1, 2 → 0
    np.testing.assert_allclose(scaling.bon_curve([0.0, 1.0, 2.0], 2.0, 1.0), [0.0, 1.0, 0.0], atol=1e-12)
    # R_RL = d(α − β log d) with α = 2, β = 1: d = 0 → 0 (d log d → 0), 1 → 2, e → e(2 − 1) = e
    np.testing.assert_allclose(scaling.rl_curve([0.0, 1.0, math.e], 2.0, 1.0), [0.0, 2.0, math.e], atol=1e-12)


def test_fit_bon_two_points_by_hand():
    # d = 1: α − β = 1; d = 2: 2α − 4β = 0 → α = 2β → β = 1, α = 2. The d = 0 point (R = 0) adds nothing.
    alpha, beta = scaling.fit_bon([0.0, 1.0, 2.0], [0.0, 1.0, 0.0])
    assert math.isclose(alpha, 2.0, abs_tol=1e-9) and math.isclose(beta, 1.0, abs_tol=1e-9)


def test_fit_rl_two_points_by_hand():
    # d = 1: α = 2 (log 1 = 0); d = e: e(α − β) = e → α − β = 1 → β = 1
    alpha, beta = scaling.fit_rl([0.0, 1.0, math.e], [0.0, 2.0, math.e])
    assert math.isclose(alpha, 2.0, abs_tol=1e-9) and math.isclose(beta, 1.0, abs_tol=1e-9)


def test_fits_recover_known_parameters_from_exact_points():
    d = np.sqrt([0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
    np.testing.assert_allclose(scaling.fit_bon(d, scaling.bon_curve(d, 0.7, 0.15)), (0.7, 0.15), atol=1e-9)
    np.testing.assert_allclose(scaling.fit_rl(d, scaling.rl_curve(d, 0.4, 0.25)), (0.4, 0.25), atol=1e-9)


def test_fit_bon_is_least_squares_on_inconsistent_points():
    # d = 1, 1, 2 with R = 0, 2, 0: the two d = 1 points average to 1, and the d = 2 point is met exactly
    # (2 parameters, 2 distinct d), so the answer is the two-point fit above: α = 2, β = 1.
    alpha, beta = scaling.fit_bon([1.0, 1.0, 2.0], [0.0, 2.0, 0.0])
    assert math.isclose(alpha, 2.0, abs_tol=1e-9) and math.isclose(beta, 1.0, abs_tol=1e-9)


@pytest.mark.parametrize("fit", [scaling.fit_bon, scaling.fit_rl])
def test_fits_need_two_distinct_positive_d(fit):
    with pytest.raises(ValueError, match="at least 2 points with distinct d > 0, got 1"):
        fit([0.0, 0.0, 1.0], [0.0, 0.1, 0.5])
    with pytest.raises(ValueError, match="got 1"):
        fit([1.0, 1.0], [0.5, 0.6])
    with pytest.raises(ValueError, match="≥ 0"):
        fit([-1.0, 1.0, 2.0], [0.0, 0.5, 0.6])
    with pytest.raises(ValueError, match="same length"):
        fit([1.0, 2.0], [0.5])
