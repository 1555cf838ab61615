"""Hand-computed checks for the critic-free part of rlhfkit.losses (GRPO, Dr. GRPO, DAPO, RLOO, REINFORCE++).

Every expected number is worked out in a comment from the paper's formula, never taken from the function.
"""

import math

import pytest
import torch

from rlhfkit import losses

GARBAGE = 1e6  # written into masked positions: it must never reach a result


def tensor(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def assert_close(actual, expected, atol=1e-6):
    expected = expected if isinstance(expected, torch.Tensor) else tensor(expected)
    torch.testing.assert_close(actual, expected.to(actual.dtype), atol=atol, rtol=0)


# --- group_advantages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, scale",
    [
        ("grpo", None),
        ("grpo", "batch"),
        ("dr_grpo", None),
        ("rloo", None),
        ("rloo", "group"),
        ("reinforce_baseline", None),
        ("reinforce_baseline", "group"),
    ],
)
def test_group_advantages_equal_rewards_give_zero_not_nan(kind, scale):
    # every group constant and the whole batch too: centred values 0, std 0 → 0 / (0 + eps) = 0
    rewards = tensor([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
    assert_close(losses.group_advantages(rewards, kind=kind, scale=scale), torch.zeros(2, 3))


def test_group_advantages_one_flat_group_among_others_stays_zero():
    rewards = tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    # batch scale: centred [[-1, 0, 1], [0, 0, 0]] → flat row stays exactly 0 whatever the divisor
    advantages = losses.group_advantages(rewards, kind="reinforce_baseline")
    assert_close(advantages[1], [0.0, 0.0, 0.0])


def test_group_advantages_rloo_and_grpo_differ_by_k_over_k_minus_1():
    rewards = tensor([[1.0, 2.0, 3.0]])
    # dr_grpo: r − mean = [-1, 0, 1]; rloo: 1 − 2.5, 2 − 2, 3 − 1.5 = [-1.5, 0, 1.5] = 3/2 · [-1, 0, 1]
    assert_close(losses.group_advantages(rewards, kind="dr_grpo"), [[-1.0, 0.0, 1.0]])
    assert_close(losses.group_advantages(rewards, kind="rloo"), [[-1.5, 0.0, 1.5]])
    # grpo default (group std): [-1, 0, 1] / (1 + 1e-4)
    assert_close(losses.group_advantages(rewards, kind="grpo"), [[-1 / 1.0001, 0.0, 1 / 1.0001]])


def test_group_advantages_dr_grpo_is_never_scaled():
    rewards = tensor([[0.0, 4.0, 8.0], [1.0, 1.0, 4.0]])
    # means 4 and 2: [[-4, 0, 4], [-1, -1, 2]], not divided by anything
    assert_close(losses.group_advantages(rewards, kind="dr_grpo"), [[-4.0, 0.0, 4.0], [-1.0, -1.0, 2.0]])
    with pytest.raises(ValueError, match="dr_grpo.*never scaled"):
        losses.group_advantages(rewards, kind="dr_grpo", scale="group")


def test_group_advantages_batch_scale_uses_unbiased_std_of_centred_values():
    rewards = tensor([[1.0, 2.0, 3.0], [0.0, 4.0, 8.0]])
    # centred: [[-1, 0, 1], [-4, 0, 4]], mean 0, Σc² = 1 + 1 + 16 + 16 = 34, unbiased var = 34/5 = 6.8,
    # std = √6.8 ≈ 2.607681 → A = c / 2.607781: ±0.383468 and ±1.533871.
    # (Wrong variants: biased 34/6 → √5.667 ≈ 2.380; TRL's raw-reward std: Σ(r − 3)² = 40, √8 ≈ 2.828.)
    s = math.sqrt(6.8) + 1e-4
    expected = [[-1 / s, 0.0, 1 / s], [-4 / s, 0.0, 4 / s]]
    assert_close(losses.group_advantages(rewards, kind="reinforce_baseline"), expected)
    assert_close(losses.group_advantages(rewards, kind="grpo", scale="batch"), expected)
    # the group scale instead divides each row by its own std, 1 and 4: ±1/1.0001 and ±4/4.0001
    a, b = 1 / 1.0001, 4 / 4.0001
    assert_close(
        losses.group_advantages(rewards, kind="reinforce_baseline", scale="group"),
        [[-a, 0.0, a], [-b, 0.0, b]],
    )


def test_group_advantages_rloo_scaled():
    rewards = tensor([[1.0, 2.0, 3.0]])
    # group: leave-one-out [-1.5, 0, 1.5] divided by the raw rewards' std 1 (+1e-4)
    assert_close(
        losses.group_advantages(rewards, kind="rloo", scale="group"), [[-1.5 / 1.0001, 0.0, 1.5 / 1.0001]]
    )
    # batch: std of [-1.5, 0, 1.5] = √((2.25 + 2.25) / 2) = 1.5 → ±1.5 / 1.5001
    assert_close(
        losses.group_advantages(rewards, kind="rloo", scale="batch"), [[-1.5 / 1.5001, 0.0, 1.5 / 1.5001]]
    )


def test_group_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="k ≥ 2"):
        losses.group_advantages(tensor([[1.0], [2.0]]))
    with pytest.raises(ValueError, match=r"\[P, k\]"):
        losses.group_advantages(tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match="'group', 'batch', 'none'"):
        losses.group_advantages(tensor([[1.0, 2.0]]), scale="prompt")
    with pytest.raises(ValueError, match="dr_grpo.*grpo.*reinforce_baseline.*rloo"):
        losses.group_advantages(tensor([[1.0, 2.0]]), kind="group_norm")


# --- zero_spread_fraction -----------------------------------------------------------------------------


def test_zero_spread_fraction():
    rewards = tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [0.5, 0.5, 0.5], [2.0, 2.05, 2.0]])
    # spreads 0, 2, 0, 0.05 → exactly equal: 2 of 4 groups; within 0.1: 3 of 4
    assert losses.zero_spread_fraction(rewards) == 0.5
    assert losses.zero_spread_fraction(rewards, tol=0.1) == 0.75
    assert isinstance(losses.zero_spread_fraction(rewards), float)


# --- per_token_policy_loss ----------------------------------------------------------------------------


def _ratios_case():
    # ratios ρ = [[1, 1.5], [0.5, 1.1]] as log-probs against old = 0
    logprobs = tensor([[0.0, math.log(1.5)], [math.log(0.5), math.log(1.1)]]).requires_grad_()
    return logprobs, torch.zeros(2, 2, dtype=torch.float64)


def test_per_token_policy_loss_asymmetric_clip():
    logprobs, old = _ratios_case()
    advantages = tensor([1.0, -1.0])  # [B], broadcast over tokens
    loss_tok, clipped = losses.per_token_policy_loss(logprobs, old, advantages, eps_low=0.2, eps_high=0.28)
    # row 0, A = 1:  ρ = 1 → max(−1, −1) = −1;  ρ = 1.5 → clip to 1 + 0.28 = 1.28: max(−1.5, −1.28) = −1.28
    # row 1, A = −1: ρ = 0.5 → clip to 1 − 0.2 = 0.8: max(0.5, 0.8) = 0.8;  ρ = 1.1 → max(1.1, 1.1) = 1.1
    assert_close(loss_tok, [[-1.0, -1.28], [0.8, 1.1]])
    assert clipped.tolist() == [[False, True], [True, False]]
    # gradient −A ρ on unclipped tokens, 0 on clipped ones: [[−1, 0], [0, 1.1]]
    loss_tok.sum().backward()
    assert_close(logprobs.grad, [[-1.0, 0.0], [0.0, 1.1]])


def test_per_token_policy_loss_low_and_high_are_not_swapped():
    logprobs, old = _ratios_case()
    advantages = tensor([1.0, -1.0])
    # ε_low = 0.28, ε_high = 0.2: ρ = 1.5 → 1.2 (−1.2); ρ = 0.5 → 0.72 (0.72)
    loss_tok, _ = losses.per_token_policy_loss(logprobs, old, advantages, eps_low=0.28, eps_high=0.2)
    assert_close(loss_tok, [[-1.0, -1.2], [0.72, 1.1]])
    # eps_high=None means symmetric ε = 0.2: −1.2 and 0.8
    loss_tok, _ = losses.per_token_policy_loss(logprobs, old, advantages, eps_low=0.2)
    assert_close(loss_tok, [[-1.0, -1.2], [0.8, 1.1]])


def test_per_token_policy_loss_per_token_advantages():
    logprobs, old = _ratios_case()
    advantages = tensor([[1.0, -1.0], [2.0, 0.5]])  # [B, T]
    loss_tok, clipped = losses.per_token_policy_loss(logprobs, old, advantages, eps_low=0.2, eps_high=0.28)
    # (0,0) ρ=1, A=1: −1 | (0,1) ρ=1.5, A=−1: max(1.5, 1.28) = 1.5
    # (1,0) ρ=0.5, A=2: max(−1.0, −1.6) = −1.0 | (1,1) ρ=1.1, A=0.5: −0.55
    assert_close(loss_tok, [[-1.0, 1.5], [-1.0, -0.55]])
    assert not clipped.any()


# --- aggregate_loss -----------------------------------------------------------------------------------


def test_aggregate_loss_three_ways_on_padded_batch():
    loss_tok = tensor([[1.0, 2.0, 3.0, GARBAGE], [4.0, GARBAGE, GARBAGE, GARBAGE]])
    mask = tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    # token_mean: (1 + 2 + 3 + 4) / 4 = 2.5
    assert_close(losses.aggregate_loss(loss_tok, mask, "token_mean"), 2.5)
    # seq_mean_token_mean: ((1 + 2 + 3) / 3 + 4 / 1) / 2 = (2 + 4) / 2 = 3.0
    assert_close(losses.aggregate_loss(loss_tok, mask, "seq_mean_token_mean"), 3.0)
    # seq_mean_token_sum_norm: 10 / (B · L_max) = 10 / (2 · 4) = 1.25; with L_max = 5: 10 / 10 = 1.0
    assert_close(losses.aggregate_loss(loss_tok, mask, "seq_mean_token_sum_norm", max_len=4), 1.25)
    assert_close(losses.aggregate_loss(loss_tok, mask, "seq_mean_token_sum_norm", max_len=5), 1.0)


def test_aggregate_loss_row_without_tokens_counts_as_zero_with_finite_gradient():
    loss_tok = tensor([[1.0, 2.0, 3.0, GARBAGE], [GARBAGE] * 4]).requires_grad_()
    mask = tensor([[1, 1, 1, 0], [0, 0, 0, 0]])
    loss = losses.aggregate_loss(loss_tok, mask, "seq_mean_token_mean")
    # row 0 mean 2, empty row 0, still counted: (2 + 0) / 2 = 1.0
    assert_close(loss, 1.0)
    loss.backward()
    # ∂/∂ℓ_{0,t} = 1 / (B · |o_0|) = 1/6 on real tokens, 0 elsewhere (no nan from the empty row)
    assert_close(loss_tok.grad, [[1 / 6, 1 / 6, 1 / 6, 0.0], [0.0] * 4])


def test_aggregate_loss_rejects_bad_arguments():
    loss_tok, mask = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="max_len"):
        losses.aggregate_loss(loss_tok, mask, "seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="seq_mean_token_mean.*seq_mean_token_sum_norm.*token_mean"):
        losses.aggregate_loss(loss_tok, mask, "sum")


# --- kl_loss_per_token --------------------------------------------------------------------------------


def test_kl_loss_values():
    logprobs = tensor([[-1.0, -2.0]])
    ref = tensor([[-1.5, -1.0]])  # d = logπ − logπ_ref = [0.5, −1.0], u = −d = [−0.5, 1.0]
    old = tensor([[-1.2, -2.0]])  # ρ = exp(logπ − old) = [e^0.2, 1]
    # k2 = ½ d² = [0.125, 0.5]
    assert_close(losses.kl_loss_per_token(logprobs, ref, old, kind="k2"), [[0.125, 0.5]])
    # k3 = e^u − 1 − u = [e^−0.5 − 0.5, e − 2] ≈ [0.1065307, 0.7182818]
    k3 = [math.exp(-0.5) - 0.5, math.e - 2]
    assert_close(losses.kl_loss_per_token(logprobs, ref, old, kind="k3"), [k3])
    # k3·ρ = [0.1065307 · 1.2214028, 0.7182818 · 1] ≈ [0.1301168, 0.7182818]
    assert_close(losses.kl_loss_per_token(logprobs, ref, old), [[k3[0] * math.exp(0.2), k3[1]]])


def test_kl_loss_gradients_at_old_equal_current():
    # ALGORITHMS.md §11: at ρ = 1, ∇ mean(k2) = ∇ mean(k3·ρ) = ∇ mean(stopgrad(d)·logπ) = d / N, ∇ mean(k3) is not
    ref = tensor([[-1.5, -1.0, -0.3]])

    def grad_of(kind):
        logprobs = tensor([[-1.0, -2.0, -0.3]]).requires_grad_()
        losses.kl_loss_per_token(logprobs, ref, logprobs.detach(), kind=kind).mean().backward()
        return logprobs.grad

    logprobs = tensor([[-1.0, -2.0, -0.3]]).requires_grad_()
    d = (logprobs - ref).detach()  # [0.5, −1.0, 0.0]
    (d * logprobs).mean().backward()
    reference_grad = logprobs.grad  # d / 3 = [1/6, −1/3, 0]
    assert_close(reference_grad, [[1 / 6, -1 / 3, 0.0]])
    assert_close(grad_of("k2"), reference_grad)
    assert_close(grad_of("k3_ratio"), reference_grad)
    # k3 alone: (1 − e^u) / 3 = [(1 − e^−0.5)/3, (1 − e)/3, 0] ≈ [0.131156, −0.572761, 0]: the forward KL's
    k3_grad = grad_of("k3")
    assert_close(k3_grad, [[(1 - math.exp(-0.5)) / 3, (1 - math.e) / 3, 0.0]])
    assert (k3_grad - reference_grad).abs().max() > 0.1


def test_kl_loss_k3_ratio_gradient_is_rho_times_d_off_policy():
    logprobs = tensor([[-1.0, -2.0]]).requires_grad_()
    ref = tensor([[-1.5, -1.0]])  # d = [0.5, −1.0]
    old = tensor([[-1.2, -1.5]])  # ρ = [e^0.2, e^−0.5]
    losses.kl_loss_per_token(logprobs, ref, old, kind="k3_ratio").sum().backward()
    # ∇ Σ k3·ρ = ρ·d = [0.5 e^0.2, −e^−0.5] ≈ [0.610701, −0.606531]
    assert_close(logprobs.grad, [[0.5 * math.exp(0.2), -math.exp(-0.5)]])


def test_kl_loss_overflow_guard_fp32():
    # token 0: π_ref/π = e^100 (e^100 overflows fp32); token 1: d = 0.5
    logprobs = tensor([[-101.0, -1.0]], dtype=torch.float32).requires_grad_()
    ref = tensor([[-1.0, -1.5]], dtype=torch.float32)
    old = logprobs.detach()
    k3 = losses.kl_loss_per_token(logprobs, ref, old, kind="k3")
    # u capped at 10: e^10 − 1 − 10 ≈ 22015.4658; token 1: e^−0.5 − 0.5 ≈ 0.1065307
    assert_close(k3, [[math.expm1(10) - 10, math.exp(-0.5) - 0.5]], atol=1e-2)
    k3.sum().backward()
    # capped token: no gradient; token 1: 1 − e^−0.5 ≈ 0.393469
    assert_close(logprobs.grad, [[0.0, 1 - math.exp(-0.5)]])

    logprobs.grad = None
    k3_ratio = losses.kl_loss_per_token(logprobs, ref, old, kind="k3_ratio")
    # only e^{ref − old} = e^100 is capped at e^10: value expm1(10) − 0 − 1·100 ≈ 21925.4658; token 1 as k3
    assert_close(k3_ratio, [[math.expm1(10) - 100, math.exp(-0.5) - 0.5]], atol=1e-2)
    k3_ratio.sum().backward()
    # gradient stays ρ·d exactly: [−100, 0.5] (a clamp inside k3·ρ would give +22015 on token 0)
    assert_close(logprobs.grad, [[-100.0, 0.5]], atol=1e-4)


def test_kl_loss_refuses_k1_and_unknown():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="k1.*cannot be a KL loss"):
        losses.kl_loss_per_token(x, x, x, kind="k1")
    with pytest.raises(ValueError, match="k2.*k3.*k3_ratio"):
        losses.kl_loss_per_token(x, x, x, kind="k4")


# --- sequence_policy_loss -----------------------------------------------------------------------------


def test_sequence_policy_loss_one_ratio_per_sequence():
    old = tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    logprobs = tensor([[0.1, 0.2, GARBAGE], [-0.05, GARBAGE, GARBAGE]]).requires_grad_()
    mask = tensor([[1, 1, 0], [1, 0, 0]])
    advantages = tensor([2.0, -1.0])
    loss, clipfrac = losses.sequence_policy_loss(logprobs, old, advantages, mask, eps=0.2)
    # ρ_0 = e^{0.1 + 0.2} ≈ 1.349859, A = 2: max(−2.699718, −2·1.2 = −2.4) = −2.4 (clipped)
    # ρ_1 = e^{−0.05} ≈ 0.951229, A = −1: inside [0.8, 1.2] → 0.951229
    # loss = (−2.4 + 0.951229) / 2 ≈ −0.724385; clipfrac = 1/2
    assert_close(loss, (-2.4 + math.exp(-0.05)) / 2)
    assert_close(clipfrac, 0.5)
    loss.backward()
    # row 0 clipped: 0; row 1: ∂/∂logπ_{1,0} = (1/B)(−A ρ_1) = 0.951229 / 2 on the real token, 0 on padding
    assert_close(logprobs.grad, [[0.0, 0.0, 0.0], [math.exp(-0.05) / 2, 0.0, 0.0]])


# --- kl_penalized_scores ------------------------------------------------------------------------------


def test_kl_penalized_scores_sequence_k1():
    scores = tensor([1.0, 2.0])
    logprobs = tensor([[-1.0, -2.0, GARBAGE], [-0.5, GARBAGE, GARBAGE]])
    ref = tensor([[-1.5, -1.0, 0.0], [-1.0, 0.0, 0.0]])
    mask = tensor([[1, 1, 0], [1, 0, 0]])
    # row 0: Σ d = 0.5 − 1.0 = −0.5 → 1 − 0.1·(−0.5) = 1.05;  row 1: d = 0.5 → 2 − 0.05 = 1.95
    assert_close(losses.kl_penalized_scores(scores, logprobs, ref, mask, beta=0.1), [1.05, 1.95])


# --- bon_kl -------------------------------------------------------------------------------------------


def test_bon_kl():
    assert losses.bon_kl(1) == 0.0  # log 1 − 0
    assert math.isclose(losses.bon_kl(2), 0.1931471805599453, abs_tol=1e-12)  # log 2 − 1/2
    assert math.isclose(losses.bon_kl(64), 3.1745080833596715, abs_tol=1e-12)  # 4.158883 − 63/64
    with pytest.raises(ValueError, match="n ≥ 1"):
        losses.bon_kl(0)


# --- zero_spread_groups, overlong_penalty (DAPO) --------------------------------------------------------


def test_zero_spread_groups_marks_the_flat_groups():
    rewards = tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [0.5, 0.5, 0.5], [2.0, 2.05, 2.0]])
    # spreads 0, 2, 0, 0.05: exactly equal → groups 0 and 2; within 0.1 → also group 3
    assert losses.zero_spread_groups(rewards).tolist() == [True, False, True, False]
    assert losses.zero_spread_groups(rewards, tol=0.1).tolist() == [True, False, True, True]


def test_overlong_penalty_is_zero_then_linear_over_the_buffer_then_minus_one():
    lengths = tensor([3.0, 6.0, 7.0, 9.0, 10.0, 12.0])
    # L_max = 10, L_cache = 4 → no penalty up to 6; (6 − |y|)/4 on 7..10; −1 beyond 10
    # 3 → 0; 6 → 0; 7 → −1/4; 9 → −3/4; 10 → −4/4 = −1; 12 → −1
    assert_close(losses.overlong_penalty(lengths, max_len=10, buffer=4), [0.0, 0.0, -0.25, -0.75, -1.0, -1.0])
    # buffer = L_max: a pure length penalty −|y|/L_max: 3 → −0.3, 6 → −0.6
    assert_close(losses.overlong_penalty(lengths[:2], max_len=10, buffer=10), [-0.3, -0.6])
    for buffer in (0, 11):
        with pytest.raises(ValueError, match="overlong buffer"):
            losses.overlong_penalty(lengths, max_len=10, buffer=buffer)


# --- cispo_policy_loss, token_policy_loss ------------------------------------------------------------


def test_cispo_clips_the_weight_and_keeps_every_token_gradient():
    logprobs, old = _ratios_case()  # ρ = [[1, 1.5], [0.5, 1.1]]
    advantages = tensor([1.0, -1.0])
    loss_tok, clipped = losses.cispo_policy_loss(logprobs, old, advantages, eps_low=0.2, eps_high=0.28)
    # weights sg(clip(ρ, 0.8, 1.28)) = [[1, 1.28], [0.8, 1.1]]; ℓ = −w·A·logπ
    # row 0, A = 1:  −1·0 = 0;  −1.28·ln 1.5 = −1.28·0.405465 = −0.518995
    # row 1, A = −1: 0.8·ln 0.5 = 0.8·(−0.693147) = −0.554518;  1.1·ln 1.1 = 1.1·0.0953102 = 0.104841
    assert_close(loss_tok, [[0.0, -1.28 * math.log(1.5)], [0.8 * math.log(0.5), 1.1 * math.log(1.1)]])
    assert clipped.tolist() == [[False, True], [True, False]]
    # ∂ℓ/∂logπ = −w·A, the clipped tokens included (the clipped surrogate gives them 0); a weight that was not
    # detached would add −A·ρ·logπ: 1.1 + 1.1·ln 1.1 = 1.2048 at (1, 1)
    loss_tok.sum().backward()
    assert_close(logprobs.grad, [[-1.0, -1.28], [0.8, 1.1]])


def test_cispo_tis_weights_multiply_and_symmetric_default():
    logprobs, old = _ratios_case()
    w = tensor([[2.0, 0.5], [1.0, 0.0]])
    loss_tok, clipped = losses.cispo_policy_loss(logprobs.detach(), old, tensor([1.0, -1.0]), 0.2, None, w)
    # ε_high = ε_low = 0.2: ρ = 1.5 → 1.2; row 0: [2·0, 0.5·(−1.2·ln 1.5)]; row 1: [0.8·ln 0.5, 0]
    assert_close(loss_tok, [[0.0, -0.6 * math.log(1.5)], [0.8 * math.log(0.5), 0.0]])
    assert clipped.tolist() == [[False, True], [True, False]]


def test_token_policy_loss_dispatches_by_kind():
    logprobs, old = _ratios_case()
    advantages = tensor([1.0, -1.0])
    for kind, fn in (("clip", losses.per_token_policy_loss), ("cispo", losses.cispo_policy_loss)):
        got, got_clipped = losses.token_policy_loss(logprobs, old, advantages, 0.2, 0.28, kind=kind)
        want, want_clipped = fn(logprobs, old, advantages, 0.2, 0.28)
        assert_close(got, want)
        assert torch.equal(got_clipped, want_clipped)
    with pytest.raises(ValueError, match="cispo.*clip"):
        losses.token_policy_loss(logprobs, old, advantages, kind="reinforce")


# --- gspo_policy_loss ---------------------------------------------------------------------------------


def test_gspo_ratio_is_the_geometric_mean_clipped_per_sequence():
    old = torch.zeros(3, 3, dtype=torch.float64)
    logprobs = tensor([[0.1, 0.3, GARBAGE], [-0.05, -0.15, GARBAGE], [-0.2, GARBAGE, GARBAGE]])
    logprobs.requires_grad_()
    mask = tensor([[1, 1, 0], [1, 1, 0], [1, 0, 0]])
    advantages = tensor([2.0, -1.0, -1.0])
    loss, clipfrac = losses.gspo_policy_loss(logprobs, old, advantages, mask, eps_low=0.1, eps_high=0.15)
    # s_0 = e^{(0.1 + 0.3)/2} = e^0.2 = 1.221403, A = 2: max(−2.442806, −2·1.15 = −2.3) = −2.3 (clipped high)
    # s_1 = e^{(−0.05 − 0.15)/2} = e^−0.1 = 0.904837, A = −1: inside [0.9, 1.15] → 0.904837
    #       (the product e^−0.2 = 0.8187 would be clipped)
    # s_2 = e^−0.2 = 0.818731, A = −1: max(0.818731, 0.9) = 0.9 (clipped low)
    # loss = (−2.3 + 0.904837 + 0.9) / 3 = −0.165054; clipfrac = 2/3
    assert_close(loss, (-2.3 + math.exp(-0.1) + 0.9) / 3)
    assert_close(clipfrac, 2 / 3)
    loss.backward()
    # row 1 only: ∂/∂logπ_{1,t} = (1/B)(−A) s_1 (1/|y_1|) = (1/3)·0.904837·(1/2) = 0.150806 per token
    g = math.exp(-0.1) / 6
    assert_close(logprobs.grad, [[0.0, 0.0, 0.0], [g, g, 0.0], [0.0, 0.0, 0.0]])
    # sequence TIS weights multiply each sequence's term: (−2.3 + 2·0.904837 + 0.9) / 3
    weights = tensor([1.0, 2.0, 1.0])
    weighted, _ = losses.gspo_policy_loss(logprobs.detach(), old, advantages, mask, 0.1, 0.15, weights)
    assert_close(weighted, (-2.3 + 2 * math.exp(-0.1) + 0.9) / 3)
