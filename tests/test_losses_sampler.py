"""Hand-computed checks for the sampler-vs-trainer part of rlhfkit.losses (ALGORITHMS.md §12): the gap
metrics, truncated importance sampling weights, and their effect on the expected policy gradient.

Every expected number is worked out in a comment from the formula, never taken from the function."""

import math

import pytest
import torch

from rlhfkit import losses

GARBAGE = 1e6  # written into masked positions: it must never reach a result


def tensor(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def assert_close(actual, expected, atol=1e-9):
    torch.testing.assert_close(actual, tensor(expected).to(actual.dtype), atol=atol, rtol=0)


def test_sampler_gap_k1_k3_and_max_over_masked_tokens():
    # g = log μ − log π_old on 3 valid tokens: 0.1, −0.2, 0.0; the 4th is padding (garbage must not count)
    old = tensor([[-1.0, -2.0, -0.5, 0.0]])
    sampler = tensor([[-0.9, -2.2, -0.5, GARBAGE]])
    mask = tensor([[1.0, 1.0, 1.0, 0.0]])
    k1, k3, max_abs = losses.sampler_gap(sampler, old, mask)
    assert_close(k1, (0.1 - 0.2 + 0.0) / 3)  # −0.0333
    # k3(g) = e^{−g} − 1 + g: e^{−0.1} − 0.9 = 0.0048374, e^{0.2} − 1.2 = 0.0214028, 0
    assert_close(k3, (math.exp(-0.1) - 0.9 + math.exp(0.2) - 1.2) / 3)
    assert_close(max_abs, 0.2)


def test_sampler_gap_is_zero_when_the_sampler_is_the_trainer():
    old = tensor([[-1.0, -2.0], [-0.1, -3.0]])
    k1, k3, max_abs = losses.sampler_gap(old.clone(), old, torch.ones_like(old))
    assert k1 == 0 and k3 == 0 and max_abs == 0


def test_tis_weights_per_token_truncated_at_the_cap():
    # log π_old − log μ = 0.5, −1.0, ln 3 (≈ 1.0986), padding
    old = tensor([[-1.0, -2.0, math.log(3) - 1.0, GARBAGE]])
    sampler = tensor([[-1.5, -1.0, -1.0, 0.0]])
    mask = tensor([[1.0, 1.0, 1.0, 0.0]])
    w = losses.tis_weights(old, sampler, mask, cap=2.0)
    # e^0.5 = 1.6487 (kept), e^−1 = 0.3679 (weights below 1 are kept), 3 → 2 (the cap), padding → 0
    assert_close(w, [[math.exp(0.5), math.exp(-1.0), 2.0, 0.0]])
    assert not w.requires_grad


def test_tis_weights_per_sequence_is_the_capped_product():
    # row 0: Σ_t (old − μ) = 0.2 − 0.1 = 0.1 → e^0.1 = 1.10517; row 1: 0.5 + 0.5 = 1 → e = 2.718 → capped at 2
    old = tensor([[-1.0, -1.0, GARBAGE], [-1.0, -1.0, -1.0]])
    sampler = tensor([[-1.2, -0.9, 0.0], [-1.5, -1.5, -1.0]])
    mask = tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    assert_close(losses.tis_weights(old, sampler, mask, cap=2.0, level="sequence"), [math.exp(0.1), 2.0])
    with pytest.raises(ValueError, match="unknown TIS level"):
        losses.tis_weights(old, sampler, mask, cap=2.0, level="batch")


def test_weights_multiply_each_policy_gradient_term():
    # at ρ = 1 (logπ = old) each token's surrogate is −A; weights 2 and 0.5 on two tokens, A = 1 and −3:
    # PPO: masked_mean(w·(−A)) = (2·(−1) + 0.5·3) / 2 = −0.25
    logp = tensor([[-1.0, -2.0, 0.0]], dtype=torch.float64).requires_grad_()
    adv = tensor([[1.0, -3.0, GARBAGE]])
    mask = tensor([[1.0, 1.0, 0.0]])
    w = tensor([[2.0, 0.5, 0.0]])
    loss, _ = losses.ppo_policy_loss(logp, logp.detach(), adv, mask, 0.2, w)
    assert_close(loss, -0.25)
    loss.backward()  # ∇ = −w·A/2 per token (ρ's gradient is ρ·∇logπ = ∇logπ at ρ = 1): −1, 0.75
    assert_close(logp.grad, [[-1.0, 0.75, 0.0]])
    # per token (critic-free): ℓ_t = w_t·(−A_t) before aggregation
    loss_tok, _ = losses.per_token_policy_loss(logp.detach(), logp.detach(), adv[:, :2].sum(1), 0.2, None, w)
    assert_close(loss_tok, [[2.0 * 2.0, 0.5 * 2.0, 0.0]])  # A = 1 − 3 = −2 per sequence: −A·w
    # per sequence (RLOO): L = mean_i w_i·(−A_i) = (1.5·(−1) + 0.5·(−2)) / 2 = −1.25
    seq, _ = losses.sequence_policy_loss(tensor([[-1.0], [-2.0]]), tensor([[-1.0], [-2.0]]), tensor([1.0, 2.0]),
                                         tensor([[1.0], [1.0]]), 0.2, tensor([1.5, 0.5]))
    assert_close(seq, -1.25)


def expected_gradient(theta, probs_of_samples, advantages, weights=None):
    """E_{y ~ q}[∇_θ ℓ(y)] for a one-token policy π = softmax(θ) over V outcomes, computed exactly by
    enumerating y (q = probs_of_samples), with ℓ the per-token PPO surrogate at ρ = 1 and TIS `weights`."""
    theta = theta.clone().requires_grad_()
    logp = torch.log_softmax(theta, -1)  # [V]
    y = torch.arange(len(theta))
    loss_tok, _ = losses.per_token_policy_loss(logp[y][:, None], logp[y][:, None].detach(), advantages, 0.2, None,
                                               None if weights is None else weights[:, None])  # [V, 1]
    (probs_of_samples * loss_tok[:, 0]).sum().backward()
    return theta.grad


def test_tis_moves_the_expected_gradient_of_a_perturbed_sampler_towards_the_on_policy_one():
    """The sampler draws at temperature 1.3 instead of 1 (a deliberate mismatch μ ≠ π_old); the update is
    meant to be E_π[A ∇log π]. Uncorrected, E_μ[A ∇log π] points elsewhere; with w = min(π/μ, C) it comes
    back: exactly for a cap no weight reaches, closer for a cap that truncates (C = 1.2 here)."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(12, generator=gen, dtype=torch.float64) * 2  # [V]
    advantages = torch.randn(12, generator=gen, dtype=torch.float64)  # [V]: one advantage per outcome
    pi = torch.softmax(theta, -1)  # π_old = π_θ at ρ = 1
    mu = torch.softmax(theta / 1.3, -1)  # the perturbed sampler
    on_policy = expected_gradient(theta, pi, advantages)
    uncorrected = expected_gradient(theta, mu, advantages)
    log_pi, log_mu = pi.log()[:, None], mu.log()[:, None]
    ones = torch.ones(12, 1, dtype=torch.float64)
    exact = expected_gradient(theta, mu, advantages, losses.tis_weights(log_pi, log_mu, ones, cap=1e9)[:, 0])
    capped = expected_gradient(theta, mu, advantages, losses.tis_weights(log_pi, log_mu, ones, cap=1.2)[:, 0])
    torch.testing.assert_close(exact, on_policy, atol=1e-12, rtol=0)  # Σ_y μ (π/μ) g(y) = Σ_y π g(y)
    error = lambda g: (g - on_policy).norm().item()  # noqa: E731
    assert error(uncorrected) > 0.05  # the mismatch is visible (measured 0.063)
    assert error(capped) < 0.5 * error(uncorrected)  # measured 0.012 vs 0.063
    assert (pi / mu).max() > 1.2  # the cap was active, so `capped` is not `exact` in disguise


def test_tis_weights_sequence_mean_is_the_capped_geometric_mean():
    # row 0: Σ_t (old − μ) = 0.2 − 0.1 = 0.1 over 2 tokens → e^0.05 = 1.051271
    # row 1: 0.5 + 0.5 + 0 = 1 over 3 tokens → e^(1/3) = 1.395612 (the product e^1 would be capped at 2)
    old = tensor([[-1.0, -1.0, GARBAGE], [-1.0, -1.0, -1.0]])
    sampler = tensor([[-1.2, -0.9, 0.0], [-1.5, -1.5, -1.0]])
    mask = tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    w = losses.tis_weights(old, sampler, mask, cap=2.0, level="sequence_mean")
    assert_close(w, [math.exp(0.05), math.exp(1 / 3)])
    # a cap of 1.2 truncates row 1 only
    w = losses.tis_weights(old, sampler, mask, cap=1.2, level="sequence_mean")
    assert_close(w, [math.exp(0.05), 1.2])
