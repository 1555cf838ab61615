"""Hand-computed checks for rlhfkit.losses: every number below is worked out in the comments."""

import math

import pytest
import torch

from rlhfkit import losses

GARBAGE = 1e6  # written into masked positions: it must never reach a result


def tensor(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def assert_close(actual, expected, atol=1e-6):
    expected = expected if isinstance(expected, torch.Tensor) else tensor(expected)
    torch.testing.assert_close(actual, expected.to(actual.dtype), atol=atol, rtol=0)


# --- masked statistics --------------------------------------------------------------------------------


def test_masked_mean_is_token_level_and_ignores_padding():
    x = tensor([[1.0, 2.0, GARBAGE], [3.0, GARBAGE, GARBAGE]])
    mask = tensor([[1, 1, 0], [1, 0, 0]])
    # token-level: (1 + 2 + 3) / 3 = 2   (a mean of row means would give (1.5 + 3) / 2 = 2.25)
    assert_close(losses.masked_mean(x, mask), 2.0)
    # per row: [(1 + 2) / 2, 3 / 1] = [1.5, 3]
    assert_close(losses.masked_mean(x, mask, dim=1), [1.5, 3.0])


def test_masked_var_biased_and_unbiased():
    x = tensor([[1.0, 2.0, GARBAGE], [3.0, GARBAGE, GARBAGE]])
    mask = tensor([[1, 1, 0], [1, 0, 0]])
    # values 1, 2, 3: mean 2, squared deviations 1, 0, 1 → biased 2/3, unbiased 2/3 · 3/2 = 1
    assert_close(losses.masked_var(x, mask, unbiased=False), 2 / 3)
    assert_close(losses.masked_var(x, mask), 1.0)


def test_masked_whiten():
    x = tensor([[1.0, 2.0, GARBAGE], [3.0, GARBAGE, GARBAGE]])
    mask = tensor([[1, 1, 0], [1, 0, 0]])
    # mean 2, unbiased var 1 → (x − 2) · rsqrt(1 + 1e-8) ≈ [-1, 0, 1]; padding set to 0
    assert_close(losses.masked_whiten(x, mask), [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    # shift_mean=False adds the mean back: [-1, 0, 1] + 2 = [1, 2, 3]
    assert_close(losses.masked_whiten(x, mask, shift_mean=False), [[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    # eps enters under the root: rsqrt(1 + 3) = 0.5 → [-0.5, 0, 0.5]
    assert_close(losses.masked_whiten(x, mask, eps=3.0), [[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0]])


# --- KL ------------------------------------------------------------------------------------------------


def test_kl_penalty_estimators():
    logprobs = tensor([[-1.0, -2.0]])
    ref_logprobs = tensor([[-2.0, -1.0]])
    # d = logp − logp_ref = [1, -1]
    assert_close(losses.kl_penalty(logprobs, ref_logprobs), [[1.0, -1.0]])  # k1 = d is the default
    assert_close(losses.kl_penalty(logprobs, ref_logprobs, "k1"), [[1.0, -1.0]])
    # k2 = ½ d² = [0.5, 0.5]
    assert_close(losses.kl_penalty(logprobs, ref_logprobs, "k2"), [[0.5, 0.5]])
    # k3 = exp(−d) − 1 + d: d = 1 → e^-1 ≈ 0.367879; d = -1 → e − 2 ≈ 0.718282
    assert_close(losses.kl_penalty(logprobs, ref_logprobs, "k3"), [[math.exp(-1), math.e - 2]])


def test_kl_penalty_unknown_kind_lists_choices():
    with pytest.raises(ValueError, match="k1.*k2.*k3"):
        losses.kl_penalty(tensor([[0.0]]), tensor([[0.0]]), kind="k4")


def test_approx_kl():
    logprobs = tensor([[-1.0, -2.0, 5.0]]).requires_grad_()
    old_logprobs = tensor([[-1.5, -1.0, -30.0]])  # last token is padding: d = 35 must be ignored
    mask = tensor([[1, 1, 0]])
    # d = [0.5, -1] → ½ · mean(0.25, 1) = ½ · 0.625 = 0.3125
    result = losses.approx_kl(logprobs, old_logprobs, mask)
    assert_close(result, 0.3125)
    assert not result.requires_grad


def test_kl_shaped_rewards_puts_score_on_last_unmasked_token():
    logprobs = tensor([[-1.0, -3.0, GARBAGE], [-1.0, -1.0, -1.0]])
    ref_logprobs = tensor([[-1.5, -2.0, 0.0], [-2.0, -3.0, -4.0]])
    mask = tensor([[1, 1, 0], [1, 1, 1]])
    scores = tensor([10.0, 20.0])
    rewards, kl = losses.kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, kl_coef=0.1)
    # k1: row 0 d = [0.5, -1, (pad)], row 1 d = [1, 2, 3]
    assert_close(kl, [[0.5, -1.0, 0.0], [1.0, 2.0, 3.0]])
    # r = −0.1 · d; the score goes on the last mask=1 token: row 0 index 1, row 1 index 2
    # row 0: [-0.05, 0.1 + 10, 0]; row 1: [-0.1, -0.2, -0.3 + 20]
    assert_close(rewards, [[-0.05, 10.1, 0.0], [-0.1, -0.2, 19.7]])


def test_kl_shaped_rewards_puts_score_on_the_last_policy_token_of_a_gapped_mask():
    """A multi-turn episode: policy tokens 0, 1 and 3, an environment token at 2 (mask 0), padding at 4."""
    logprobs = tensor([[-1.0, -3.0, GARBAGE, -2.0, GARBAGE]])
    ref_logprobs = tensor([[-1.5, -2.0, GARBAGE, -2.5, 0.0]])
    mask = tensor([[1, 1, 0, 1, 0]])
    rewards, kl = losses.kl_shaped_rewards(tensor([10.0]), logprobs, ref_logprobs, mask, kl_coef=0.1)
    # k1 d = [0.5, -1, (env), 0.5, (pad)]; r = −0.1·d, + 10 on index 3 (mask.sum − 1 = 2 would be the env token)
    assert_close(kl, [[0.5, -1.0, 0.0, 0.5, 0.0]])
    assert_close(rewards, [[-0.05, 0.1, 0.0, 9.95, 0.0]])


def test_kl_shaped_rewards_forwards_the_estimator():
    logprobs = tensor([[-1.0, -3.0]])
    ref_logprobs = tensor([[-1.5, -2.0]])
    mask = tensor([[1, 1]])
    rewards, kl = losses.kl_shaped_rewards(tensor([1.0]), logprobs, ref_logprobs, mask, 0.1, kind="k2")
    # k2 = ½ d² = [0.125, 0.5]; r = [-0.0125, -0.05 + 1]
    assert_close(kl, [[0.125, 0.5]])
    assert_close(rewards, [[-0.0125, 0.95]])


# --- GAE -----------------------------------------------------------------------------------------------


def reference_gae(rewards, values, mask, gamma, lam):
    """The textbook recursion, one row and one token at a time, on each row's real length only."""
    advantages = torch.zeros_like(rewards)
    returns = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        length = int(mask[b].sum())
        next_advantage = 0.0
        for t in reversed(range(length)):
            next_value = values[b, t + 1].item() if t + 1 < length else 0.0
            delta = rewards[b, t].item() + gamma * next_value - values[b, t].item()
            next_advantage = delta + gamma * lam * next_advantage
            advantages[b, t] = next_advantage
            returns[b, t] = next_advantage + values[b, t].item()
    return advantages, returns


def test_gae_hand_case():
    rewards = tensor([[0.0, 1.0], [2.0, GARBAGE]])
    values = tensor([[0.5, 0.2], [0.5, GARBAGE]])
    mask = tensor([[1, 1], [1, 0]])
    advantages, returns = losses.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # row 0: t=1: δ = 1 + 1·0 − 0.2 = 0.8, A = 0.8
    #        t=0: δ = 0 + 1·0.2 − 0.5 = -0.3, A = -0.3 + 1·0.5·0.8 = 0.1;  R = A + V = [0.6, 1.0]
    # row 1 (length 1): δ = 2 + 0 − 0.5 = 1.5 (V after the last token is 0, not the garbage), R = 2.0
    assert_close(advantages, [[0.1, 0.8], [1.5, 0.0]])
    assert_close(returns, [[0.6, 1.0], [2.0, 0.0]])


def test_gae_passes_over_the_environment_tokens_of_a_gapped_mask():
    """Policy tokens at 0 and 2, an environment token at 1 (mask 0, its value and reward garbage), padding
    at 3: each policy token bootstraps from the next policy token, as on the row [0, 2] without the gap."""
    rewards = tensor([[1.0, GARBAGE, 2.0, GARBAGE]])
    values = tensor([[0.5, GARBAGE, 1.0, GARBAGE]])
    mask = tensor([[1, 0, 1, 0]])
    advantages, returns = losses.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # t=2: δ = 2 + 1·0 − 1 = 1, A = 1;  t=1: env, A = 0 (carries V = 1, A = 1 through)
    # t=0: δ = 1 + 1·1 − 0.5 = 1.5, A = 1.5 + 1·0.5·1 = 2.0;  R = A + V = [2.5, 0, 2.0, 0]
    assert_close(advantages, [[2.0, 0.0, 1.0, 0.0]])
    assert_close(returns, [[2.5, 0.0, 2.0, 0.0]])
    compact, _ = losses.gae(tensor([[1.0, 2.0]]), tensor([[0.5, 1.0]]), tensor([[1, 1]]), 1.0, 0.5)
    assert_close(advantages[:, [0, 2]], compact)


def test_gae_discount_hand_case():
    rewards = tensor([[1.0, 0.0, 2.0]])
    values = tensor([[0.0, 1.0, 0.0]])
    mask = tensor([[1, 1, 1]])
    advantages, _ = losses.gae(rewards, values, mask, gamma=0.5, lam=1.0)
    # t=2: δ = 2, A = 2; t=1: δ = 0 + 0.5·0 − 1 = -1, A = -1 + 0.5·2 = 0
    # t=0: δ = 1 + 0.5·1 − 0 = 1.5, A = 1.5 + 0.5·0 = 1.5
    assert_close(advantages, [[1.5, 0.0, 2.0]])


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 1.0)])
def test_gae_matches_plain_loop_on_ragged_batch(gamma, lam):
    generator = torch.Generator().manual_seed(0)
    lengths = [1, 3, 7, 7, 5]
    mask = tensor([[1.0] * n + [0.0] * (7 - n) for n in lengths])
    rewards = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    values = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    rewards = torch.where(mask.bool(), rewards, GARBAGE)
    values = torch.where(mask.bool(), values, -GARBAGE)

    advantages, returns = losses.gae(rewards, values, mask, gamma, lam)
    expected_advantages, expected_returns = reference_gae(rewards, values, mask, gamma, lam)
    assert_close(advantages, expected_advantages)
    assert_close(returns, expected_returns)


# --- PPO -----------------------------------------------------------------------------------------------


def test_ppo_policy_loss_hand_case_and_gradient():
    logprobs = tensor([[1.0, 0.0, -1.0, -1.0, 10.0]]).requires_grad_()
    old_logprobs = tensor([[0.0, 0.0, 0.0, 0.0, -20.0]])
    advantages = tensor([[1.0, 2.0, -1.0, 1.0, GARBAGE]])
    mask = tensor([[1, 1, 1, 1, 0]])
    loss, clipfrac = losses.ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_range=0.2)
    # tok 0: ratio = e ≈ 2.718 → clipped to 1.2; A=1:  max(-2.718, -1.2)  = -1.2    (clipped)
    # tok 1: ratio = 1;                          A=2:  max(-2, -2)        = -2      (tie: not clipped)
    # tok 2: ratio = e^-1 ≈ 0.368 → clipped 0.8; A=-1: max(0.368, 0.8)    = 0.8     (clipped)
    # tok 3: ratio = e^-1 ≈ 0.368 → clipped 0.8; A=1:  max(-0.368, -0.8)  = -0.368  (unclipped)
    # loss = (-1.2 - 2 + 0.8 - e^-1) / 4 ≈ -0.691970;  clipfrac = 2 / 4
    assert_close(loss, (-2.4 - math.exp(-1)) / 4)
    assert_close(clipfrac, 0.5)
    assert not clipfrac.requires_grad
    loss.backward()
    # only unclipped tokens carry gradient: ∂/∂logp (−A ρ) / 4 = −A ρ / 4 → tok 1: -0.5, tok 3: -e^-1 / 4
    assert_close(logprobs.grad, [[0.0, -0.5, 0.0, -math.exp(-1) / 4, 0.0]])


def test_ppo_policy_loss_step_zero_sanity():
    logprobs = tensor([[-0.3, -1.2, -2.0]])
    advantages = tensor([[1.5, -2.0, 0.5]])
    mask = tensor([[1, 1, 1]])
    # ratio = 1 everywhere → loss = −mean(A) = −(1.5 − 2 + 0.5)/3 = 0, clipfrac = 0
    loss, clipfrac = losses.ppo_policy_loss(logprobs, logprobs, advantages, mask)
    assert_close(loss, 0.0)
    assert_close(clipfrac, 0.0)


def test_ppo_value_loss_hand_case_and_gradient():
    values = tensor([[1.0, 0.5, 1.0, 0.0, GARBAGE]]).requires_grad_()
    old_values = tensor([[0.5, 0.4, 0.0, 0.5, 0.0]])
    returns = tensor([[0.0, 1.0, 2.0, -1.0, -GARBAGE]])
    mask = tensor([[1, 1, 1, 1, 0]])
    loss, vf_clipfrac = losses.ppo_value_loss(values, old_values, returns, mask, clip_range=0.2)
    # tok 0: v − v_old = 0.5 → 0.2,  v_clip = 0.7: max((1−0)², (0.7−0)²)  = max(1, 0.49)   = 1     (unclipped)
    # tok 1: v − v_old = 0.1 in range, v_clip = 0.5: max(0.25, 0.25)      = 0.25                  (tie)
    # tok 2: v − v_old = 1 → 0.2,    v_clip = 0.2: max((1−2)², (0.2−2)²)  = max(1, 3.24)    = 3.24  (clipped)
    # tok 3: v − v_old = -0.5 → -0.2, v_clip = 0.3: max((0+1)², (0.3+1)²) = max(1, 1.69)    = 1.69  (clipped)
    # loss = ½ · (1 + 0.25 + 3.24 + 1.69) / 4 = ½ · 6.18 / 4 = 0.7725;  vf_clipfrac = 2 / 4
    assert_close(loss, 0.5 * 6.18 / 4)
    assert_close(vf_clipfrac, 0.5)
    assert not vf_clipfrac.requires_grad
    loss.backward()
    # ∂/∂v ½ (v − R)² / 4 = (v − R) / 4 where v is not clipped: tok 0: 1/4; tok 1: (0.5 − 1)/4 = -0.125
    # (at the tie both branches equal v, so the gradient is the same); clipped tokens 2, 3 get 0
    assert_close(values.grad, [[0.25, -0.125, 0.0, 0.0, 0.0]])


def test_entropy_from_logits():
    logits = tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e4, -1e4]]])  # [B=1, T=2, V=4]
    # t=0 uniform over 4 → ln 4 ≈ 1.386294
    # t=1 p = (1/4, 3/4, 0, 0) → −(¼ ln ¼ + ¾ ln ¾) ≈ 0.562335
    expected = [[math.log(4), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]]
    assert_close(losses.entropy_from_logits(logits), expected)


def test_entropy_from_logits_matches_definition_and_is_stable():
    logits = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = -(log_probs.exp() * log_probs).sum(-1)  # [2, 3]
    assert_close(losses.entropy_from_logits(logits), expected)
    # a near one-hot distribution: entropy ≈ 0, not nan
    assert_close(losses.entropy_from_logits(tensor([[[1000.0, 0.0, 0.0]]])), [[0.0]])


def test_explained_variance():
    returns = tensor([[1.0, 2.0, GARBAGE], [3.0, -GARBAGE, GARBAGE]])
    mask = tensor([[1, 1, 0], [1, 0, 0]])
    perfect = tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    assert_close(losses.explained_variance(perfect, returns, mask), 1.0)
    # V = 0 explains nothing: Var(R − 0) / Var(R) = 1 → 0
    assert_close(losses.explained_variance(torch.zeros_like(returns), returns, mask), 0.0)
    # V = [1, 2, 4]: residual [0, 0, -1], mean -1/3, biased var = (1/9 + 1/9 + 4/9) / 3 = 2/9
    # Var(R) = 2/3 → EV = 1 − (2/9) / (2/3) = 2/3
    partial = tensor([[1.0, 2.0, GARBAGE], [4.0, GARBAGE, 0.0]])
    assert_close(losses.explained_variance(partial, returns, mask), 2 / 3)


def test_explained_variance_is_nan_for_constant_returns():
    returns = tensor([[5.0, 5.0, GARBAGE]])
    mask = tensor([[1, 1, 0]])
    assert torch.isnan(losses.explained_variance(tensor([[4.0, 6.0, 0.0]]), returns, mask))


# --- reward model --------------------------------------------------------------------------------------


def test_bradley_terry_loss():
    chosen = tensor([2.0, 0.0])
    rejected = tensor([1.0, 1.0])
    # r_c − r_r = [1, -1]: −log σ(1) ≈ 0.313262, −log σ(-1) ≈ 1.313262 → mean ≈ 0.813262
    assert_close(losses.bradley_terry_loss(chosen, rejected), (0.31326168751822286 + 1.3132616875182228) / 2)
    # a [B] margin [1, -1] moves both logits to 0: −log σ(0) = ln 2
    assert_close(losses.bradley_terry_loss(chosen, rejected, margin=tensor([1.0, -1.0])), math.log(2))
    # a float margin 1: logits [0, -2] → (ln 2 + softplus(2)) / 2
    expected = (math.log(2) + math.log1p(math.exp(2))) / 2
    assert_close(losses.bradley_terry_loss(chosen, rejected, margin=1.0), expected)


# --- DPO family ----------------------------------------------------------------------------------------

# row 0: logits = (π_c − π_r) − (ref_c − ref_r) = (-1 + 3) − (-2 + 2) = 2
# row 1: logits = (-2 + 2) − (-1 + 3) = -2   (the reference alone makes this pair "wrong")
DPO_INPUTS = {
    "policy_chosen_logps": tensor([-1.0, -2.0]),
    "policy_rejected_logps": tensor([-3.0, -2.0]),
    "ref_chosen_logps": tensor([-2.0, -1.0]),
    "ref_rejected_logps": tensor([-2.0, -3.0]),
    "beta": 0.25,  # β·logits = [0.5, -0.5];  1/(2β) = 2
}
SOFTPLUS_HALF = 0.9740769841801067  # softplus(0.5) = −log σ(-0.5);  softplus(-0.5) = 0.4740769841801067


@pytest.mark.parametrize(
    "loss_type, label_smoothing, expected",
    [
        # −log σ(β·logits) = [softplus(-0.5), softplus(0.5)] ≈ [0.474077, 0.974077]
        ("sigmoid", 0.0, [SOFTPLUS_HALF - 0.5, SOFTPLUS_HALF]),
        # 0.9·softplus(∓0.5) + 0.1·softplus(±0.5); softplus(x) − softplus(−x) = x → [0.524077, 0.924077]
        ("sigmoid", 0.1, [SOFTPLUS_HALF - 0.5 + 0.1 * 0.5, SOFTPLUS_HALF - 0.1 * 0.5]),
        # (logits − 1/(2β))² = [(2 − 2)², (-2 − 2)²] = [0, 16]
        ("ipo", 0.0, [0.0, 16.0]),
        # relu(1 − β·logits) = [relu(0.5), relu(1.5)] = [0.5, 1.5]
        ("hinge", 0.0, [0.5, 1.5]),
    ],
)
def test_dpo_loss_variants(loss_type, label_smoothing, expected):
    loss, chosen_rewards, rejected_rewards = losses.dpo_loss(
        **DPO_INPUTS, loss_type=loss_type, label_smoothing=label_smoothing
    )
    assert_close(loss, expected)
    # r̂ = β (π − ref): chosen [0.25·(-1 + 2), 0.25·(-2 + 1)], rejected [0.25·(-3 + 2), 0.25·(-2 + 3)]
    assert_close(chosen_rewards, [0.25, -0.25])
    assert_close(rejected_rewards, [-0.25, 0.25])


def test_dpo_loss_gradient_and_detached_rewards():
    policy_chosen = tensor([-1.0]).requires_grad_()
    losses_, chosen_rewards, rejected_rewards = losses.dpo_loss(
        policy_chosen, tensor([-3.0]), tensor([-2.0]), tensor([-2.0]), beta=0.25
    )
    losses_.sum().backward()
    # ∂/∂π_c −log σ(β·logits) = −β·σ(−β·logits) = −0.25·σ(-0.5) ≈ −0.25 · 0.377541
    assert_close(policy_chosen.grad, [-0.25 / (1 + math.exp(0.5))])
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad


def test_dpo_loss_rejects_unknown_type_and_misplaced_label_smoothing():
    with pytest.raises(ValueError, match="hinge.*ipo.*sigmoid"):
        losses.dpo_loss(**DPO_INPUTS, loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.dpo_loss(**DPO_INPUTS, loss_type="ipo", label_smoothing=0.1)


def test_simpo_loss():
    policy_chosen = tensor([-4.0, -9.0]).requires_grad_()
    policy_rejected = tensor([-9.0, -4.0])
    chosen_lengths = tensor([2.0, 3.0])
    rejected_lengths = tensor([3.0, 2.0])
    loss, chosen_rewards, rejected_rewards = losses.simpo_loss(
        policy_chosen, policy_rejected, chosen_lengths, rejected_lengths, beta=2.0, gamma=0.5
    )
    # row 0: β·(-4/2) = -4, β·(-9/3) = -6 → −log σ(-4 + 6 − 0.5) = softplus(-1.5) ≈ 0.201413
    # row 1: β·(-9/3) = -6, β·(-4/2) = -4 → −log σ(-6 + 4 − 0.5) = softplus(2.5)  ≈ 2.578890
    assert_close(loss, [math.log1p(math.exp(-1.5)), math.log1p(math.exp(2.5))])
    assert_close(chosen_rewards, [-4.0, -6.0])
    assert_close(rejected_rewards, [-6.0, -4.0])
    assert not chosen_rewards.requires_grad


# --- group baselines -----------------------------------------------------------------------------------


def test_group_advantages_grpo():
    rewards = tensor([[1.0, 2.0, 3.0], [0.0, 4.0, 8.0], [5.0, 5.0, 5.0]])  # 3 prompts × k=3
    # group [1, 2, 3]: mean 2, unbiased std 1 → (r − 2) / (1 + 1e-4) = [-0.99990, 0, 0.99990]
    # group [0, 4, 8]: mean 4, unbiased std 4 → (r − 4) / (4 + 1e-4) = [-0.99998, 0, 0.99998]
    # group [5, 5, 5]: std 0 → 0 / (0 + 1e-4) = 0 (eps keeps it finite)
    a, b = 1 / 1.0001, 4 / 4.0001
    expected = [[-a, 0.0, a], [-b, 0.0, b], [0.0, 0.0, 0.0]]
    assert_close(losses.group_advantages(rewards), expected)
    # (r − mean) / (std + 1): ±1/2 and ±4/5
    expected_eps_1 = [[-0.5, 0.0, 0.5], [-0.8, 0.0, 0.8], [0.0, 0.0, 0.0]]
    assert_close(losses.group_advantages(rewards, kind="grpo", eps=1.0), expected_eps_1)


def test_group_advantages_rloo():
    rewards = tensor([[1.0, 2.0, 3.0], [0.0, 4.0, 8.0]])
    # r_i − mean of the other two: 1 − 2.5, 2 − 2, 3 − 1.5  |  0 − 6, 4 − 4, 8 − 2
    expected = [[-1.5, 0.0, 1.5], [-6.0, 0.0, 6.0]]
    assert_close(losses.group_advantages(rewards, kind="rloo"), expected)


def test_group_advantages_unknown_kind():
    with pytest.raises(ValueError, match="dr_grpo.*grpo.*reinforce_baseline.*rloo"):
        losses.group_advantages(tensor([[1.0, 2.0]]), kind="ppo")


# --- KL controllers ------------------------------------------------------------------------------------


def test_adaptive_kl_controller_update_numbers():
    controller = losses.AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    # KL 9: e = 9/6 − 1 = 0.5 → clipped to 0.2; β = 0.1 · (1 + 0.2 · 256/10000) = 0.100512
    controller.update(9.0, n_steps=256)
    assert controller.value == pytest.approx(0.100512, abs=1e-12)
    # KL 5.4: e = 0.9 − 1 = -0.1; β = 0.100512 · (1 − 0.1 · 1000/10000) = 0.100512 · 0.99 = 0.09950688
    controller.update(tensor(5.4), n_steps=1000)  # a 0-dim tensor works too
    assert controller.value == pytest.approx(0.09950688, abs=1e-12)
    # KL 0: e = -1 → clipped to -0.2; β = 0.09950688 · (1 − 0.2 · 0.5) = 0.089556192
    controller.update(0.0, n_steps=5000)
    assert controller.value == pytest.approx(0.089556192, abs=1e-12)

    restored = losses.AdaptiveKLController(init_kl_coef=1.0, target=1.0, horizon=1)
    restored.load_state_dict(controller.state_dict())
    restored.update(9.0, n_steps=256)
    controller.update(9.0, n_steps=256)
    assert restored.value == controller.value


def test_fixed_kl_controller():
    controller = losses.FixedKLController(kl_coef=0.05)
    controller.update(100.0, n_steps=1000)
    assert controller.value == 0.05
    restored = losses.FixedKLController(kl_coef=1.0)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == 0.05
