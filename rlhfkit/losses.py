"""Pure tensor math for RLHF: masked statistics, KL estimators, GAE, PPO, RM, DPO and critic-free losses
(GRPO, DAPO, GSPO, CISPO)."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Notation follows ALGORITHMS.md. Shapes: B batch, T response tokens, V vocab, G samples per prompt.
# Every [B, T] tensor is right-padded; `mask` is 1.0 on response tokens up to and including EOS, 0.0 after.
# Masked-out entries must be finite (they are multiplied by 0, and inf * 0 = nan).


# === Masked statistics ===


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Token-level mean over the positions where mask is 1: sum(x·mask) / sum(mask).

    No epsilon: an all-zero mask gives nan, which is a bug upstream, not something to hide.

    Args:
        x: [B, T] values.
        mask: [B, T] float, 1.0 on tokens that count.
        dim: None averages over the whole batch (every token weighs the same); an int sums over that
            dim only, e.g. dim=1 gives the per-row mean [B].
    Returns:
        [] if dim is None, else x reduced over `dim`.
    """
    if dim is None:
        return (x * mask).sum() / mask.sum()  # []
    return (x * mask).sum(dim=dim) / mask.sum(dim=dim)  # x.shape without `dim`


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over the masked tokens of the whole batch.

    Var = mean_t (x_t − mean(x))², times n/(n−1) when unbiased (Bessel), n = sum(mask).

    Args:
        x: [B, T]. mask: [B, T]. unbiased: apply Bessel's correction (needs n ≥ 2, else inf/nan).
    Returns:
        [] variance.
    """
    mean = masked_mean(x, mask)  # []
    var = masked_mean((x - mean) ** 2, mask)  # []
    if unbiased:
        n = mask.sum()  # []
        var = var * n / (n - 1)  # []
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8,
                  sum_over=None) -> Tensor:
    """Normalise x to zero mean and unit variance over the masked tokens (advantage whitening).

    x̂ = (x − mean) · rsqrt(Var + eps), with the masked mean and the unbiased masked variance;
    with shift_mean=False the mean is added back (x̂ + mean), as is done for rewards.
    Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO", advantage whitening.

    Args:
        x: [B, T]. mask: [B, T]. shift_mean: keep the result zero-mean. eps: added to the variance so a
            constant x does not divide by zero. sum_over: optional function summing a tensor over processes
            (e.g. accelerate's reduce "sum"), so the moments are those of every process's batch.
    Returns:
        [B, T] whitened x, 0.0 where mask is 0.
    """
    total = sum_over if sum_over is not None else (lambda t: t)
    n, x_sum = total(torch.stack([mask.sum(), (x * mask).sum()]))  # [], []
    mean = x_sum / n  # []
    var = total(((x - mean) ** 2 * mask).sum()) / (n - 1)  # [] unbiased: Σ(x − mean)² / (n − 1)
    whitened = (x - mean) * torch.rsqrt(var + eps)  # [B, T]
    if not shift_mean:
        whitened = whitened + mean  # [B, T]
    return whitened * mask  # [B, T]


# === KL estimators (Schulman 2020, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html) ===


def _kl_k1(d: Tensor) -> Tensor:
    return d  # [B, T]  unbiased, can be negative per token


def _kl_k2(d: Tensor) -> Tensor:
    return 0.5 * d**2  # [B, T]  biased, ≥ 0


def _kl_k3(d: Tensor) -> Tensor:
    # exp(−d) − 1 + d = π_ref/π − 1 − log(π_ref/π); expm1 keeps precision when d ≈ 0.
    return torch.expm1(-d) + d  # [B, T]  unbiased, ≥ 0, low variance


_KL_ESTIMATORS = {"k1": _kl_k1, "k2": _kl_k2, "k3": _kl_k3}


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(π‖π_ref) from samples y ~ π (Schulman 2020).

    d = logπ − logπ_ref;  k1 = d,  k2 = ½ d²,  k3 = exp(−d) − 1 + d.

    Args:
        logprobs: [B, T] log π(y_t). ref_logprobs: [B, T] log π_ref(y_t). kind: "k1", "k2" or "k3".
    Returns:
        [B, T] kl_t (not masked).
    """
    if kind not in _KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator kind={kind!r}; choose one of {sorted(_KL_ESTIMATORS)}")
    return _KL_ESTIMATORS[kind](logprobs - ref_logprobs)  # [B, T]


def approx_kl(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Diagnostic KL between the updated and the rollout policy (Schulman 2020, the k2 estimator).

    approx_kl = ½ masked_mean((logπ − logπ_old)²). It is 0 at the first minibatch of a step.

    Args:
        logprobs, old_logprobs, mask: [B, T].
    Returns:
        [] detached.
    """
    return (0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask)).detach()  # []


# === the sampler is a second engine (ALGORITHMS.md §12): measure its gap to the trainer, correct for it ===


def sampler_gap(sampler_logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """How far the sampler's distribution μ is from the trainer's π_old on the sampled tokens y_t ~ μ.

    g_t = log μ(y_t) − log π_old(y_t);  k1 = masked_mean(g),  k3 = masked_mean(e^{−g} − 1 + g),  max_t |g_t|.
    k1 and k3 estimate KL(μ‖π_old) per token (Schulman 2020, as `kl_penalty` with μ in the role of π); 0 when
    the sampler computes exactly what the trainer's forward computes.

    Args:
        sampler_logprobs: [B, T] log μ(y_t) as the sampler computed them. old_logprobs: [B, T] log π_old(y_t)
            from the trainer's forward. mask: [B, T].
    Returns:
        (k1 [], k3 [], max_abs_gap []) detached, nats per token.
    """
    gap = (sampler_logprobs - old_logprobs).detach()  # [B, T]
    k1 = masked_mean(gap, mask)  # []
    k3 = masked_mean(kl_penalty(sampler_logprobs.detach(), old_logprobs.detach(), "k3"), mask)  # []
    max_abs = (gap.abs() * mask).max() if mask.any() else gap.new_zeros(())  # []
    return k1, k3, max_abs


def tis_weights(old_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor, cap: float,
                level: str = "token") -> Tensor:
    """Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL framework secretly brings you
    off-policy RL training"): samples come from the sampler μ, the policy gradient is meant for π_old.

    token:          w_t = min(π_old(y_t) / μ(y_t), C) = min(exp(log π_old − log μ), C)        [B, T]
    sequence:       w_i = min(Π_t π_old(y_t) / μ(y_t), C) = min(exp(Σ_t (log π_old − log μ) m_t), C)   [B]
    sequence_mean:  w_i = min(exp((1/|y_i|) Σ_t (log π_old − log μ) m_t), C), the geometric mean of the
                    token ratios (the level of GSPO's ratio, `gspo_policy_loss`)                 [B]
    Detached: a constant factor on each token's (sequence's) policy-gradient term, so E_μ[w ∇ℓ] → E_π_old[∇ℓ]
    as C → ∞; the cap bounds the variance (C ≈ 2 in TRL and verl). The KL term is not weighted.

    Args:
        old_logprobs, sampler_logprobs, mask: [B, T]. cap: C > 0. level: "token", "sequence" or
            "sequence_mean".
    Returns:
        [B, T] (token; 0 on padding) or [B] (sequence, sequence_mean) weights, detached.
    """
    log_ratio = (old_logprobs - sampler_logprobs).detach() * mask  # [B, T]
    if level == "token":
        return log_ratio.exp().clamp(max=cap) * mask  # [B, T]
    if level == "sequence":
        return log_ratio.sum(dim=1).exp().clamp(max=cap)  # [B]
    if level == "sequence_mean":
        return (log_ratio.sum(dim=1) / mask.sum(dim=1)).exp().clamp(max=cap)  # [B]
    raise ValueError(f"unknown TIS level={level!r}; choose token, sequence or sequence_mean")


def kl_shaped_rewards(
    scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float, kind: str = "k1"
) -> tuple[Tensor, Tensor]:
    """Per-token PPO reward: the KL penalty on every token plus the sequence score at the last one.

    r_t = −β · kl_t · mask_t, and r_{EOS} += s, where EOS is the last position with mask = 1
    (Ziegler et al. 2019 §2.2; ALGORITHMS.md "PPO" step 4). β is `kl_coef`.

    Args:
        scores: [B] reward-model scores s. logprobs, ref_logprobs: [B, T]. mask: [B, T], right-padded,
            at least one response token per row; it may have gaps (a multi-turn episode's environment
            turns): the score goes to the last policy token all the same. kl_coef: β. kind: KL estimator,
            see `kl_penalty`.
    Returns:
        (rewards [B, T], kl [B, T]); both 0.0 where mask is 0.
    """
    kl = kl_penalty(logprobs, ref_logprobs, kind) * mask  # [B, T]
    rewards = -kl_coef * kl  # [B, T]
    positions = torch.arange(mask.shape[1], device=mask.device)  # [T]
    last_index = (positions * (mask > 0)).amax(dim=1)  # [B]  the last mask=1 position
    rewards = rewards.scatter_add(1, last_index[:, None], scores[:, None].to(rewards.dtype))  # [B, T]
    return rewards, kl


# === PPO ===


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016; PPO paper, Schulman et al. 2017, eq. 11-12).

    δ_t = r_t + γ V_{t+1} − V_t, with V = 0 after the last response token;
    A_t = δ_t + γλ A_{t+1};  R_t = A_t + V_t.
    t + 1 is the next position with mask 1: masked positions are skipped (padding after the last token; in a
    multi-turn episode the environment's tokens between two policy turns, which are no actions), so each
    policy token bootstraps from the next policy token's value.

    Args:
        rewards: [B, T] per-token rewards r_t. values: [B, T] V(s_t) from the rollout critic.
        mask: [B, T], right-padded; rows may have different lengths and gaps. gamma: γ. lam: λ.
    Returns:
        (advantages [B, T], returns [B, T]), both 0.0 where mask is 0. Call on rollout tensors
        (no grad): nothing here is detached.
    """
    values = values * mask  # [B, T]  padding values must not leak into V_{t+1}
    next_value = torch.zeros_like(values[:, 0])  # [B]  V_T = 0
    next_advantage = torch.zeros_like(values[:, 0])  # [B]  A_T = 0
    advantages_reversed = []
    # Reverse loop over time, t = T-1 .. 0. A masked position keeps (V_{t+1}, A_{t+1}) as they are for the
    # policy token before it and stores A_t = 0: every row enters its last real token with A_{t+1} = 0 and
    # V_{t+1} = 0, whatever its length, and a gap (an environment turn) is passed over.
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # [B]
        advantage = delta + gamma * lam * next_advantage  # [B]
        counts = mask[:, t] > 0  # [B]
        next_advantage = torch.where(counts, advantage, next_advantage)  # [B]
        next_value = torch.where(counts, values[:, t], next_value)  # [B]
        advantages_reversed.append(advantage * mask[:, t])  # [B]
    advantages = torch.stack(advantages_reversed[::-1], dim=1)  # [B, T]
    returns = advantages + values  # [B, T]  both terms already 0 on padding
    return advantages, returns


def ppo_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float = 0.2,
    tis_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Clipped surrogate objective, Schulman et al. 2017 eq. 7, averaged over masked tokens.

    L = masked_mean(w_t · max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε))),  ρ_t = exp(logπ_t − logπ_old_t),
    w_t = 1, or the truncated importance weights of `tis_weights` (the sampler ≠ π_old correction).

    Args:
        logprobs: [B, T] under the current policy. old_logprobs: [B, T] from the rollout.
        advantages: [B, T]. mask: [B, T]. clip_range: ε. tis_weights: [B, T] detached, or None (w = 1).
    Returns:
        (loss [], clipfrac [] detached: share of masked tokens where the clipped term is strictly larger).
    """
    ratio = torch.exp(logprobs - old_logprobs)  # [B, T]
    unclipped = -advantages * ratio  # [B, T]
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)  # [B, T]
    surrogate = torch.maximum(unclipped, clipped)  # [B, T]
    loss = masked_mean(surrogate if tis_weights is None else tis_weights * surrogate, mask)  # []
    clipfrac = masked_mean((clipped > unclipped).float(), mask)  # []
    return loss, clipfrac.detach()


def ppo_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float = 0.2
) -> tuple[Tensor, Tensor]:
    """Clipped value loss (OpenAI baselines ppo2; Huang et al. 2022, "37 implementation details", #9).

    V_clip = V_old + clip(V − V_old, −ε, ε);  L_v = ½ masked_mean(max((V − R)², (V_clip − R)²)).

    Args:
        values: [B, T] current critic. old_values: [B, T] from the rollout. returns: [B, T] R_t.
        mask: [B, T]. clip_range: ε_v (in reward units).
    Returns:
        (loss [], vf_clipfrac [] detached: share of masked tokens where the clipped term is strictly larger).
    """
    values_clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)  # [B, T]
    unclipped = (values - returns) ** 2  # [B, T]
    clipped = (values_clipped - returns) ** 2  # [B, T]
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)  # []
    vf_clipfrac = masked_mean((clipped > unclipped).float(), mask)  # []
    return loss, vf_clipfrac.detach()


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution at each position.

    H = −Σ_v p_v log p_v = logsumexp(z) − Σ_v p_v z_v,  p = softmax(z). Only the softmax is kept
    as a [B, T, V] copy; no log_softmax is materialised next to it.

    Args:
        logits: [B, T, V].
    Returns:
        [B, T] entropy in nats.
    """
    probs = F.softmax(logits, dim=-1)  # [B, T, V]
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)  # [B, T]


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """How much of the variance of the returns the critic explains (1 is perfect, ≤ 0 is useless).

    EV = 1 − Var(R − V) / Var(R), with biased masked variances; nan when Var(R) = 0.

    Args:
        values, returns, mask: [B, T].
    Returns:
        [] float, detached.
    """
    var_returns = masked_var(returns, mask, unbiased=False)  # []
    var_residual = masked_var(returns - values, mask, unbiased=False)  # []
    ev = torch.where(var_returns == 0, torch.full_like(var_returns, math.nan), 1 - var_residual / var_returns)
    return ev.detach()  # []


# === Reward model ===


def bradley_terry_loss(
    chosen_rewards: Tensor, rejected_rewards: Tensor, margin: Tensor | float | None = None
) -> Tensor:
    """Pairwise reward-model loss, Ouyang et al. 2022 eq. 1; margin m as in Touvron et al. 2023 eq. 2.

    L = mean_b −log σ(r_c − r_r − m),  m = 0 when margin is None.

    Args:
        chosen_rewards: [B] r_c. rejected_rewards: [B] r_r. margin: None, a float or a [B] tensor m.
    Returns:
        [] batch-mean loss.
    """
    logits = chosen_rewards - rejected_rewards  # [B]
    if margin is not None:
        logits = logits - margin  # [B]
    return -F.logsigmoid(logits).mean()  # []


# === DPO family (π = summed log-prob of the response under the policy, ref = under π_ref) ===


def _dpo_sigmoid(logits: Tensor, beta: float, label_smoothing: float) -> Tensor:
    # Rafailov et al. 2023 eq. 7; label_smoothing ε gives conservative DPO (Mitchell 2023).
    agree = -F.logsigmoid(beta * logits)  # [B]  loss if the label is right
    disagree = -F.logsigmoid(-beta * logits)  # [B]  loss if the label is flipped
    return (1 - label_smoothing) * agree + label_smoothing * disagree  # [B]


def _dpo_ipo(logits: Tensor, beta: float, label_smoothing: float) -> Tensor:
    # Azar et al. 2023 (IPO): squared distance of the log-ratio gap to 1/(2β), with τ = β.
    return (logits - 1 / (2 * beta)) ** 2  # [B]


def _dpo_hinge(logits: Tensor, beta: float, label_smoothing: float) -> Tensor:
    # Zhao et al. 2023 (SLiC-HF), calibration hinge loss on the log-ratio gap.
    return F.relu(1 - beta * logits)  # [B]


_DPO_LOSSES = {"sigmoid": _dpo_sigmoid, "ipo": _dpo_ipo, "hinge": _dpo_hinge}


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Direct preference optimisation and its variants (ALGORITHMS.md "DPO family").

    logits = (π_c − π_r) − (ref_c − ref_r);
    sigmoid: −(1−ε) log σ(β·logits) − ε log σ(−β·logits)   (Rafailov et al. 2023 eq. 7; ε = label_smoothing)
    ipo:     (logits − 1/(2β))²                             (Azar et al. 2023)
    hinge:   relu(1 − β·logits)                             (Zhao et al. 2023, SLiC-HF)
    Implicit rewards r̂ = β (π − ref).

    Args:
        policy_chosen_logps, policy_rejected_logps: [B] summed response log-probs under the policy.
        ref_chosen_logps, ref_rejected_logps: [B] the same under the reference.
        beta: β. loss_type: "sigmoid", "ipo" or "hinge". label_smoothing: ε, used by "sigmoid" only.
    Returns:
        (losses [B] per example, not averaged; chosen_rewards [B] detached; rejected_rewards [B] detached).
    """
    if loss_type not in _DPO_LOSSES:
        raise ValueError(f"unknown DPO loss_type={loss_type!r}; choose one of {sorted(_DPO_LOSSES)}")
    if label_smoothing != 0.0 and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing={label_smoothing} only applies to loss_type='sigmoid'")
    logits = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)  # [B]
    losses = _DPO_LOSSES[loss_type](logits, beta, label_smoothing)  # [B]
    chosen_rewards = (beta * (policy_chosen_logps - ref_chosen_logps)).detach()  # [B]
    rejected_rewards = (beta * (policy_rejected_logps - ref_rejected_logps)).detach()  # [B]
    return losses, chosen_rewards, rejected_rewards


def simpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_lengths: Tensor,
    rejected_lengths: Tensor,
    beta: float = 2.0,
    gamma: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """Reference-free SimPO, Meng et al. 2024 eq. 6.

    L = −log σ(β (π_c/|y_c| − π_r/|y_r|) − γ);  rewards r̂ = β π/|y|.
    Here γ is SimPO's target reward margin, not a discount factor.

    Args:
        policy_chosen_logps, policy_rejected_logps: [B] summed response log-probs under the policy.
        chosen_lengths, rejected_lengths: [B] response lengths |y| in tokens. beta: β. gamma: γ.
    Returns:
        (losses [B] per example; chosen_rewards [B] detached; rejected_rewards [B] detached).
    """
    chosen_rewards = beta * policy_chosen_logps / chosen_lengths  # [B]
    rejected_rewards = beta * policy_rejected_logps / rejected_lengths  # [B]
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)  # [B]
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


# === Critic-free baselines and losses (GRPO, Dr. GRPO, DAPO, RLOO, REINFORCE++; ALGORITHMS.md §8) ===
# Sequence rewards are laid out [P, k]: P prompts × k completions of each. Per-token tensors are [B, T],
# B = P·k, the completions of one prompt on consecutive rows.


def _centre_on_group_mean(rewards: Tensor) -> Tensor:
    return rewards - rewards.mean(dim=1, keepdim=True)  # [P, k]  r_i − mean_g r


def _centre_leave_one_out(rewards: Tensor) -> Tensor:
    # r_i − (Σ_j r_j − r_i)/(k − 1); algebraically k/(k − 1) · (r_i − mean_g r).
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (rewards.shape[1] - 1)  # [P, k]
    return rewards - others_mean  # [P, k]


# kind -> (baseline, scale used when scale=None)
_GROUP_BASELINES = {
    "grpo": (_centre_on_group_mean, "group"),
    "dr_grpo": (_centre_on_group_mean, "none"),
    "rloo": (_centre_leave_one_out, "none"),
    "reinforce_baseline": (_centre_on_group_mean, "batch"),
}
_ADVANTAGE_SCALES = ("group", "batch", "none")


def group_advantages(
    rewards: Tensor, kind: str = "grpo", scale: str | None = None, eps: float = 1e-4
) -> Tensor:
    """Sequence-level advantages from the other completions of the same prompt (no critic).

    Baselines (c_i = centred reward):
      grpo, dr_grpo, reinforce_baseline: c_i = r_i − mean_g r     (Shao et al. 2024 §4.1.2; Liu et al. 2025;
                                                                    OpenRLHF `reinforce_baseline`)
      rloo:                              c_i = r_i − 1/(k−1) Σ_{j≠i} r_j   (Ahmadian et al. 2024 §3)
    Scales (A_i = c_i / s, or A_i = c_i for "none"):
      group: s = std_g(r) + eps, the unbiased std (÷ k−1) of the prompt's raw rewards, as TRL's
             `scale_rewards="group"` (`rewards.view(-1, k).std(dim=1)`, torch's default is unbiased).
      batch: s = std(c) + eps, the unbiased std of all P·k centred values: OpenRLHF's advantage whitening
             (their mean shift is a no-op here: every baseline above gives Σ_i c_i = 0 per group). TRL's
             `scale_rewards="batch"` divides by the std of the raw rewards instead, which also counts the
             spread between prompts and so gives smaller advantages. One value per completion, not per token.
      none:  s = 1 (Dr. GRPO: the std division biases towards prompts that are too easy or too hard).
    Defaults (scale=None): grpo → group, dr_grpo → none, rloo → none, reinforce_baseline → batch.
    A group of equal rewards gives c = 0 and so A = 0 under every scale (eps keeps 0/0 away).

    Args:
        rewards: [P, k] sequence rewards, row p holding the k ≥ 2 completions of prompt p.
        kind: "grpo", "dr_grpo", "rloo" or "reinforce_baseline".
        scale: "group", "batch", "none" or None for the kind's default; dr_grpo only allows "none".
        eps: added to the std; unused with "none".
    Returns:
        [P, k] advantages A_i, one per completion.
    """
    if kind not in _GROUP_BASELINES:
        raise ValueError(f"unknown group advantage kind={kind!r}; choose one of {sorted(_GROUP_BASELINES)}")
    baseline, default_scale = _GROUP_BASELINES[kind]
    scale = default_scale if scale is None else scale
    if scale not in _ADVANTAGE_SCALES:
        raise ValueError(
            f"unknown advantage scale={scale!r}; choose one of {list(_ADVANTAGE_SCALES)} or None"
        )
    if kind == "dr_grpo" and scale != "none":
        raise ValueError(f"kind='dr_grpo' is never scaled (got scale={scale!r}); use kind='grpo' to scale")
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(
            f"rewards must be [P, k] with k ≥ 2 completions per prompt, got shape {tuple(rewards.shape)}: "
            "a group baseline needs at least two samples of the same prompt"
        )
    centred = baseline(rewards)  # [P, k]
    if scale == "group":
        return centred / (rewards.std(dim=1, keepdim=True) + eps)  # [P, k]
    if scale == "batch":
        return centred / (centred.std() + eps)  # [P, k]
    return centred  # [P, k]


def zero_spread_groups(rewards: Tensor, tol: float = 0.0) -> Tensor:
    """Which prompts have k rewards that are all equal: [max_i r_{p,i} − min_i r_{p,i} ≤ tol]. Their group
    advantages are 0, so they teach nothing; DAPO's dynamic sampling (Yu et al. 2025 §3.2) drops them.

    Args:
        rewards: [P, k] sequence rewards. tol: spreads up to tol count as zero (0.0: exactly equal).
    Returns:
        [P] bool.
    """
    spread = rewards.max(dim=1).values - rewards.min(dim=1).values  # [P]
    return spread <= tol  # [P]


def zero_spread_fraction(rewards: Tensor, tol: float = 0.0) -> float:
    """Share of prompts whose k rewards are all equal (`zero_spread_groups`):
    fraction = (1/P) Σ_p [max_i r_{p,i} − min_i r_{p,i} ≤ tol].

    Args:
        rewards: [P, k] sequence rewards. tol: spreads up to tol count as zero (0.0: exactly equal).
    Returns:
        float in [0, 1].
    """
    return zero_spread_groups(rewards, tol).float().mean().item()


def overlong_penalty(lengths: Tensor, max_len: int, buffer: int) -> Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025 §3.4, eq. 13), a length term of the sequence reward:

    R_len(|y|) = 0                                  if |y| ≤ L_max − L_cache
               = ((L_max − L_cache) − |y|) / L_cache    if L_max − L_cache < |y| ≤ L_max
               = −1                                 if |y| > L_max
    It falls linearly from 0 to −1 over the last L_cache tokens of the budget, so a response that would be
    cut off is penalised softly rather than dropped or scored as if complete.

    Args:
        lengths: [B] response lengths |y| in tokens (EOS included). max_len: L_max (max_new_tokens).
        buffer: L_cache, 1 ≤ L_cache ≤ L_max.
    Returns:
        [B] penalties in [−1, 0] (multiply by a factor and add to the score).
    """
    if not 1 <= buffer <= max_len:
        raise ValueError(f"overlong buffer L_cache={buffer} must be in [1, L_max={max_len}]")
    start = max_len - buffer  # L_max − L_cache
    inside = (start - lengths) / buffer  # [B], in [−1, 0) on the buffer
    penalty = torch.where(lengths <= max_len, inside, -1.0)  # [B]
    return torch.where(lengths <= start, torch.zeros_like(inside), penalty)  # [B]


def per_token_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    tis_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Clipped surrogate per token with asymmetric clipping (DAPO "clip-higher", Yu et al. 2025).

    ℓ_t = w_t · max(−A ρ_t, −A clip(ρ_t, 1 − ε_low, 1 + ε_high)),  ρ_t = exp(logπ_t − logπ_old_t),
    w_t = 1 or the truncated importance weights `tis_weights` (`tis_weights()`).
    Not reduced: combine with a KL loss term, then `aggregate_loss`.

    Args:
        logprobs: [B, T] under the current policy. old_logprobs: [B, T] from the rollout.
        advantages: [B] (one per sequence, broadcast over its tokens) or [B, T].
        eps_low: ε_low. eps_high: ε_high; None means ε_high = ε_low (symmetric, PPO).
        tis_weights: [B, T] detached, or None (w = 1).
    Returns:
        (loss_tok [B, T], clipped [B, T] bool, True where the clipped term is strictly larger: clipfrac's
        numerator). Padding is not masked here.
    """
    eps_high = eps_low if eps_high is None else eps_high
    if advantages.dim() == 1:
        advantages = advantages[:, None]  # [B, 1]
    ratio = torch.exp(logprobs - old_logprobs)  # [B, T]
    unclipped = -advantages * ratio  # [B, T]
    clipped = -advantages * ratio.clamp(1 - eps_low, 1 + eps_high)  # [B, T]
    loss_tok = torch.maximum(unclipped, clipped)  # [B, T]
    return loss_tok if tis_weights is None else tis_weights * loss_tok, (clipped > unclipped).detach()


def cispo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    tis_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """CISPO (MiniMax-M1, 2025, arXiv 2506.13585 §3.1): clip the importance weight, not the objective.

    ℓ_t = −w_t · sg(clip(ρ_t, 1 − ε_low, 1 + ε_high)) · A · logπ_t,  ρ_t = exp(logπ_t − logπ_old_t),
    sg = stop-gradient, w_t = 1 or the truncated importance weights `tis_weights`. ∇ℓ_t = −w_t ĉ_t A ∇logπ_t:
    REINFORCE weighted by the clipped ratio ĉ_t, so a token whose ratio left the range still gets its
    gradient (the clipped surrogate gives it none), only with a bounded weight. At ρ = 1 the gradient is the
    clipped surrogate's. The value is not a surrogate near 0: it holds logπ itself. MiniMax-M1 tunes only
    ε_high (no lower clip: ε_low ≥ 1); aggregate with `aggregate_loss` (the paper: token_mean).

    Args:
        logprobs: [B, T] under the current policy. old_logprobs: [B, T] from the rollout.
        advantages: [B] (one per sequence, broadcast over its tokens) or [B, T].
        eps_low: ε_low. eps_high: ε_high; None means ε_high = ε_low.
        tis_weights: [B, T] detached, or None (w = 1).
    Returns:
        (loss_tok [B, T], clipped [B, T] bool, True where the weight was clipped). Padding is not masked here.
    """
    eps_high = eps_low if eps_high is None else eps_high
    if advantages.dim() == 1:
        advantages = advantages[:, None]  # [B, 1]
    ratio = torch.exp(logprobs - old_logprobs).detach()  # [B, T]
    weight = ratio.clamp(1 - eps_low, 1 + eps_high)  # [B, T] sg(clip(ρ))
    loss_tok = -weight * advantages * logprobs  # [B, T]
    return loss_tok if tis_weights is None else tis_weights * loss_tok, weight != ratio


_TOKEN_POLICY_LOSSES = {"clip": per_token_policy_loss, "cispo": cispo_policy_loss}


def token_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    tis_weights: Tensor | None = None,
    kind: str = "clip",
) -> tuple[Tensor, Tensor]:
    """The per-token policy loss `kind`: "clip" (PPO/GRPO/DAPO clipped surrogate, `per_token_policy_loss`)
    or "cispo" (clipped importance weight on REINFORCE, `cispo_policy_loss`). Same arguments and returns
    (loss_tok [B, T], clipped [B, T] bool); combine with a KL term, then `aggregate_loss`."""
    if kind not in _TOKEN_POLICY_LOSSES:
        raise ValueError(f"unknown policy loss kind={kind!r}; choose one of {sorted(_TOKEN_POLICY_LOSSES)}")
    return _TOKEN_POLICY_LOSSES[kind](logprobs, old_logprobs, advantages, eps_low, eps_high, tis_weights)


def _agg_token_mean(loss_tok: Tensor, mask: Tensor, max_len: int | None) -> Tensor:
    return masked_mean(loss_tok, mask)  # []


def _agg_seq_mean_token_mean(loss_tok: Tensor, mask: Tensor, max_len: int | None) -> Tensor:
    # A row without tokens has Σ_t ℓ·m = 0; dividing by max(|o_i|, 1) keeps it at 0 (not 0/0 = nan, whose
    # gradient would poison the batch) while it still counts in the mean over B, as TRL's loss_type="grpo".
    per_row = (loss_tok * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [B]
    return per_row.mean()  # []


def _agg_seq_mean_token_sum_norm(loss_tok: Tensor, mask: Tensor, max_len: int | None) -> Tensor:
    if max_len is None:
        raise ValueError("loss_agg='seq_mean_token_sum_norm' needs max_len (the generation budget L_max)")
    return (loss_tok * mask).sum() / (loss_tok.shape[0] * max_len)  # []


_LOSS_AGGREGATIONS = {
    "token_mean": _agg_token_mean,
    "seq_mean_token_mean": _agg_seq_mean_token_mean,
    "seq_mean_token_sum_norm": _agg_seq_mean_token_sum_norm,
}


def aggregate_loss(
    loss_tok: Tensor, mask: Tensor, loss_agg: str = "token_mean", max_len: int | None = None
) -> Tensor:
    """Reduce a per-token loss to a scalar; the choice sets each token's weight (ALGORITHMS.md §8).

    token_mean (DAPO, Yu et al. 2025; TRL loss_type="dapo"/"bnpo"):  Σ_{i,t} ℓ m / Σ_{i,t} m.
        Every token weighs the same, so long sequences weigh more in total, but a token's weight does not
        depend on its own sequence's length. The normaliser changes with the batch's token count.
    seq_mean_token_mean (GRPO, Shao et al. 2024 eq. 3; TRL loss_type="grpo"):  (1/B) Σ_i (Σ_t ℓ m / |o_i|).
        Length bias: a token of sequence i weighs 1/|o_i|, so with A > 0 short answers are pushed up harder
        and with A < 0 long answers are pushed down less: favours short correct and long wrong answers.
        A row with no tokens contributes 0 and still counts in B.
    seq_mean_token_sum_norm (Dr. GRPO, Liu et al. 2025; TRL loss_type="dr_grpo"):  Σ_{i,t} ℓ m / (B·L_max).
        A constant normaliser: no length bias, and the gradient scale does not move with the batch's token
        count (it is token_mean × Σm / (B·L_max), so it shrinks when responses are short).

    Args:
        loss_tok: [B, T] per-token loss ℓ. mask: [B, T] 1.0 on tokens that count.
        loss_agg: one of the three names above. max_len: L_max, the generation budget (max_new_tokens);
            required by "seq_mean_token_sum_norm", ignored otherwise.
    Returns:
        [] loss. token_mean is nan for an all-zero mask (a bug upstream, as `masked_mean`).
    """
    if loss_agg not in _LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss_agg={loss_agg!r}; choose one of {sorted(_LOSS_AGGREGATIONS)}")
    return _LOSS_AGGREGATIONS[loss_agg](loss_tok, mask, max_len)


def _kl_loss_k2(logprobs: Tensor, ref_logprobs: Tensor, old_logprobs: Tensor, max_log_ratio: float) -> Tensor:
    return 0.5 * (logprobs - ref_logprobs) ** 2  # [B, T]  gradient d·∇logπ; no exponential, no bound needed


def _kl_loss_k3(logprobs: Tensor, ref_logprobs: Tensor, old_logprobs: Tensor, max_log_ratio: float) -> Tensor:
    # u = logπ_ref − logπ is capped at max_log_ratio: e^u would overflow, and clamp gives those tokens
    # zero gradient instead of a weight (1 − e^u) in the millions.
    u = (ref_logprobs - logprobs).clamp(max=max_log_ratio)  # [B, T]
    return torch.expm1(u) - u  # [B, T]


def _kl_loss_k3_ratio(
    logprobs: Tensor, ref_logprobs: Tensor, old_logprobs: Tensor, max_log_ratio: float
) -> Tensor:
    # k3·ρ = (e^u − 1 − u)·ρ with u = ref − logπ, ρ = e^{logπ − old}, and e^u·ρ = e^{ref − old}, a constant of θ:
    # k3·ρ = expm1(ref − old) − (ρ − 1) − ρ·u. Written this way nothing differentiable is exponentiated
    # beyond ρ, so the gradient ρ·d·∇logπ is exact even where e^u would overflow; max_log_ratio caps only
    # the constant (a clamp of u in the product form would flip the gradient's sign on those tokens).
    ratio = torch.exp(logprobs - old_logprobs)  # [B, T]
    u = ref_logprobs - logprobs  # [B, T]
    constant = torch.expm1((ref_logprobs - old_logprobs).clamp(max=max_log_ratio))  # [B, T]
    return constant - torch.expm1(logprobs - old_logprobs) - ratio * u  # [B, T]


_KL_LOSSES = {"k2": _kl_loss_k2, "k3": _kl_loss_k3, "k3_ratio": _kl_loss_k3_ratio}


def kl_loss_per_token(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    old_logprobs: Tensor,
    kind: str = "k3_ratio",
    max_log_ratio: float = 10.0,
) -> Tensor:
    """KL(π‖π_ref) as a per-token LOSS term (add β·kl to ℓ_t); gradients from ALGORITHMS.md §3.

    With d = logπ − logπ_ref, u = −d, ρ = exp(logπ − logπ_old) (differentiable):
      k2       = ½ d²                  ∇ = d·∇logπ: the reverse-KL gradient (OpenRLHF "k2 as loss").
      k3       = e^u − 1 − u           ∇ = (1 − π_ref/π)·∇logπ: the forward KL's, biased (DeepSeekMath eq. 4).
      k3_ratio = k3 · ρ                ∇ = ρ·d·∇logπ, = d·∇logπ at ρ = 1 (DeepSeek-V3.2; TRL PR #4638,
                                       `use_bias_correction_kl`).
    "k1" (= d) is refused: its expected gradient E_π[∇logπ] is 0, no KL pull, only noise; put k1 in the
    reward instead (`kl_penalized_scores`).
    Overflow guard (named, not silent): k3 uses min(u, max_log_ratio), so a token with π_ref/π > e^10 ≈ 22026
    gets k3 = e^10 − 11 ≈ 22015 and no gradient. k3_ratio caps only its θ-free term e^{ref − old} at
    e^max_log_ratio: the value is then too low, the gradient stays exact. OpenRLHF clamps at the same ±10
    without saying so. k2 needs no guard.

    Args:
        logprobs: [B, T] current policy. ref_logprobs: [B, T] reference. old_logprobs: [B, T] rollout policy
            (used by k3_ratio only). kind: "k2", "k3" or "k3_ratio". max_log_ratio: the cap above, in nats.
    Returns:
        [B, T] per-token KL loss, not masked.
    """
    if kind == "k1":
        raise ValueError(
            "kind='k1' cannot be a KL loss: E_π[∇ log π] = 0, so it gives no pull towards π_ref, only noise "
            "(ALGORITHMS.md §3); use k1 in the reward (kl_penalized_scores) or k2 / k3_ratio as a loss"
        )
    if kind not in _KL_LOSSES:
        raise ValueError(f"unknown KL loss kind={kind!r}; choose one of {sorted(_KL_LOSSES)}")
    return _KL_LOSSES[kind](logprobs, ref_logprobs, old_logprobs, max_log_ratio)  # [B, T]


def sequence_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, eps: float = 0.2,
    tis_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Clipped surrogate with one importance ratio per sequence (RLOO as in TRL's RLOOTrainer).

    ρ_i = exp(Σ_t (logπ_t − logπ_old_t)·m_t);  L = (1/B) Σ_i w_i · max(−A_i ρ_i, −A_i clip(ρ_i, 1 − ε, 1 + ε)),
    w_i = 1 or the sequence-level truncated importance weights `tis_weights` (`tis_weights(level="sequence")`).
    Ahmadian et al. 2024 treat the whole completion as one action; the clip is TRL's addition for
    num_iterations > 1 (at ρ = 1 it is REINFORCE with the RLOO baseline).

    Args:
        logprobs, old_logprobs: [B, T]. advantages: [B] A_i. mask: [B, T]. eps: ε.
        tis_weights: [B] detached, or None (w = 1).
    Returns:
        (loss [], clipfrac [] detached: share of sequences where the clipped term is strictly larger).
    """
    ratio = torch.exp(((logprobs - old_logprobs) * mask).sum(dim=1))  # [B]
    unclipped = -advantages * ratio  # [B]
    clipped = -advantages * ratio.clamp(1 - eps, 1 + eps)  # [B]
    surrogate = torch.maximum(unclipped, clipped)  # [B]
    loss = (surrogate if tis_weights is None else tis_weights * surrogate).mean()  # []
    return loss, (clipped > unclipped).float().mean().detach()


def gspo_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, eps_low: float = 3e-4,
    eps_high: float | None = 4e-4, tis_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """GSPO (Zheng et al. 2025, arXiv 2507.18071 §4.1): a length-normalised sequence ratio, clipped.

    s_i = exp((1/|y_i|) Σ_t (logπ_t − logπ_old_t)·m_t)   (the geometric mean of the token ratios),
    L = (1/B) Σ_i w_i · max(−A_i s_i, −A_i clip(s_i, 1 − ε_low, 1 + ε_high)),  w_i = 1 or `tis_weights`.
    ∇s_i = s_i (1/|y_i|) Σ_t ∇logπ_t: each sequence weighs the same, its tokens 1/|y_i| each. Unlike
    `sequence_policy_loss` (the product Π_t ρ_t, which moves exponentially with length) s_i stays near 1, so
    the paper clips at ε_low = 3e-4, ε_high = 4e-4 (the defaults here).

    Args:
        logprobs, old_logprobs: [B, T]. advantages: [B] A_i. mask: [B, T] (every row has a token: EOS counts).
        eps_low: ε_low. eps_high: ε_high; None means ε_high = ε_low. tis_weights: [B] detached, or None.
    Returns:
        (loss [], clipfrac [] detached: share of sequences where the clipped term is strictly larger).
    """
    eps_high = eps_low if eps_high is None else eps_high
    ratio = torch.exp(masked_mean(logprobs - old_logprobs, mask, dim=1))  # [B] s_i
    unclipped = -advantages * ratio  # [B]
    clipped = -advantages * ratio.clamp(1 - eps_low, 1 + eps_high)  # [B]
    surrogate = torch.maximum(unclipped, clipped)  # [B]
    loss = (surrogate if tis_weights is None else tis_weights * surrogate).mean()  # []
    return loss, (clipped > unclipped).float().mean().detach()


def kl_penalized_scores(
    scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, beta: float
) -> Tensor:
    """Sequence score minus the k1 KL of the whole completion: KL in the reward (RLOO, REINFORCE++).

    r'_i = s_i − β Σ_t (logπ_t − logπ_ref_t)·m_t   (Ahmadian et al. 2024 §3; ALGORITHMS.md §3: k1 in the
    reward gives the full sequence-level KL gradient, Tang & Munos 2025).

    Args:
        scores: [B] sequence scores s. logprobs: [B, T] rollout log-probs. ref_logprobs: [B, T]. mask: [B, T].
        beta: β, the KL coefficient.
    Returns:
        [B] penalised scores r'. Call on rollout tensors (no grad).
    """
    sequence_kl = ((logprobs - ref_logprobs) * mask).sum(dim=1)  # [B]  Σ_t k1_t
    return scores - beta * sequence_kl  # [B]


def bon_kl(n: int) -> float:
    """Analytic KL(π_bon‖π) of best-of-n sampling: log n − (n − 1)/n (Stiennon et al. 2020; Gao et al. 2022).

    It is 0 at n = 1 and an upper bound on the exact KL (Beirami et al. 2024).

    Args:
        n: number of samples, n ≥ 1.
    Returns:
        KL in nats.
    """
    if n < 1:
        raise ValueError(f"best-of-n needs n ≥ 1, got n={n}")
    return math.log(n) - (n - 1) / n


# === KL coefficient controllers ===


class AdaptiveKLController:
    """Adaptive KL coefficient, Ziegler et al. 2019 §2.2 (the lm-human-preferences schedule).

    e = clip(KL / target − 1, −0.2, 0.2);  β ← β (1 + e · n_steps / horizon).
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float | Tensor, n_steps: int) -> None:
        """Move β towards the KL target; `n_steps` is the number of samples since the last update."""
        error = min(max(float(current_kl) / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        """β, the target and the horizon, for the checkpoint's trainer_state.json."""
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what `state_dict` saved (an exact resume continues the same β)."""
        self.value = state["value"]
        self.target = state["target"]
        self.horizon = state["horizon"]


class FixedKLController:
    """Constant KL coefficient with the same interface as `AdaptiveKLController`."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float | Tensor, n_steps: int) -> None:
        """No-op: β stays fixed."""

    def state_dict(self) -> dict[str, float]:
        """β, for the checkpoint's trainer_state.json."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore what `state_dict` saved."""
        self.value = state["value"]
