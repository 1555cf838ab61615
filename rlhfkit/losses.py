"""Pure tensor math for RLHF: masked statistics, KL estimators, GAE, PPO, reward-model and DPO losses."""

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


def kl_shaped_rewards(
    scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float, kind: str = "k1"
) -> tuple[Tensor, Tensor]:
    """Per-token PPO reward: the KL penalty on every token plus the sequence score at the last one.

    r_t = −β · kl_t · mask_t, and r_{EOS} += s, where EOS is the last position with mask = 1
    (Ziegler et al. 2019 §2.2; ALGORITHMS.md "PPO" step 4). β is `kl_coef`.

    Args:
        scores: [B] reward-model scores s. logprobs, ref_logprobs: [B, T]. mask: [B, T], right-padded,
            at least one response token per row. kl_coef: β. kind: KL estimator, see `kl_penalty`.
    Returns:
        (rewards [B, T], kl [B, T]); both 0.0 where mask is 0.
    """
    kl = kl_penalty(logprobs, ref_logprobs, kind) * mask  # [B, T]
    rewards = -kl_coef * kl  # [B, T]
    last_index = mask.sum(dim=1).long() - 1  # [B]  right padding: the last mask=1 position
    rewards = rewards.scatter_add(1, last_index[:, None], scores[:, None].to(rewards.dtype))  # [B, T]
    return rewards, kl


# === PPO ===


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016; PPO paper, Schulman et al. 2017, eq. 11-12).

    δ_t = r_t + γ V_{t+1} − V_t, with V = 0 after the last response token;
    A_t = δ_t + γλ A_{t+1};  R_t = A_t + V_t.

    Args:
        rewards: [B, T] per-token rewards r_t. values: [B, T] V(s_t) from the rollout critic.
        mask: [B, T], right-padded; rows may have different lengths. gamma: γ. lam: λ.
    Returns:
        (advantages [B, T], returns [B, T]), both 0.0 where mask is 0. Call on rollout tensors
        (no grad): nothing here is detached.
    """
    values = values * mask  # [B, T]  padding values must not leak into V_{t+1}
    next_value = torch.zeros_like(values[:, 0])  # [B]  V_T = 0
    next_advantage = torch.zeros_like(values[:, 0])  # [B]  A_T = 0
    advantages_reversed = []
    # Reverse loop over time, t = T-1 .. 0. Multiplying by mask_t zeroes A_t on padding, so every row
    # enters its last real token with A_{t+1} = 0 and V_{t+1} = 0, whatever its length.
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # [B]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]  # [B]
        next_value = values[:, t]  # [B]
        advantages_reversed.append(next_advantage)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)  # [B, T]
    returns = advantages + values  # [B, T]  both terms already 0 on padding
    return advantages, returns


def ppo_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float = 0.2
) -> tuple[Tensor, Tensor]:
    """Clipped surrogate objective, Schulman et al. 2017 eq. 7, averaged over masked tokens.

    L = masked_mean(max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε))),  ρ_t = exp(logπ_t − logπ_old_t).

    Args:
        logprobs: [B, T] under the current policy. old_logprobs: [B, T] from the rollout.
        advantages: [B, T]. mask: [B, T]. clip_range: ε.
    Returns:
        (loss [], clipfrac [] detached: share of masked tokens where the clipped term is strictly larger).
    """
    ratio = torch.exp(logprobs - old_logprobs)  # [B, T]
    unclipped = -advantages * ratio  # [B, T]
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)  # [B, T]
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)  # []
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


# === Critic-free baselines (GRPO, RLOO) ===


def _grpo_advantages(grouped: Tensor, eps: float) -> Tensor:
    # torch.std's default is unbiased (divides by G − 1).
    mean = grouped.mean(dim=1, keepdim=True)  # [B/G, 1]
    std = grouped.std(dim=1, keepdim=True)  # [B/G, 1]
    return (grouped - mean) / (std + eps)  # [B/G, G]


def _rloo_advantages(grouped: Tensor, eps: float) -> Tensor:
    # Mean of the other G − 1 samples: (Σ_j r_j − r_i) / (G − 1). eps is unused.
    others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (grouped.shape[1] - 1)  # [B/G, G]
    return grouped - others_mean  # [B/G, G]


_GROUP_BASELINES = {"grpo": _grpo_advantages, "rloo": _rloo_advantages}


def group_advantages(scores: Tensor, group_size: int, kind: str = "grpo", eps: float = 1e-4) -> Tensor:
    """Sequence-level advantages from the other samples of the same prompt (no critic).

    grpo: A_i = (r_i − mean_g r) / (std_g r + eps), std unbiased    (Shao et al. 2024, DeepSeekMath §4.1.2)
    rloo: A_i = r_i − 1/(G−1) Σ_{j≠i} r_j                          (Ahmadian et al. 2024; Kool et al. 2019)

    Args:
        scores: [B] sequence rewards, ordered as B/G consecutive groups of G samples per prompt.
        group_size: G ≥ 2. kind: "grpo" or "rloo". eps: added to the std (grpo only) so a group of equal
            scores gives A = 0 instead of nan.
    Returns:
        [B] advantages, in the order of `scores`.
    """
    if kind not in _GROUP_BASELINES:
        raise ValueError(f"unknown group advantage kind={kind!r}; choose one of {sorted(_GROUP_BASELINES)}")
    assert scores.numel() % group_size == 0, f"B={scores.numel()} is not a multiple of G={group_size}"
    grouped = scores.view(-1, group_size)  # [B/G, G]
    return _GROUP_BASELINES[kind](grouped, eps).reshape(-1)  # [B]


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
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
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
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]
