"""Critic-free online RL: GRPO, Dr. GRPO, RLOO, REINFORCE++, with DAPO / GSPO / CISPO options (ALGORITHMS.md
§8, §12). Per step:

    1. B prompts × k completions in one batched generate (the loop in `trainers/online.py`): s = r(x, y),
       log π_old and log π_ref (same τ); no critic, no values. With one update per batch and the KL as a
       loss, log π_old is that update's own forward, detached (`needs_old_pass`). With --dynamic-sampling
       (DAPO) the groups whose k shaped scores are all equal are replaced by groups drawn after them
    2. shaped score: s − missing-EOS penalty + DAPO's overlong term; KL in the reward (RLOO, REINFORCE++):
       s' = s − β Σ_t k1_t; KL as a loss (GRPO): s' = s
    3. advantages: from the k completions of the same prompt (grpo, dr_grpo, rloo, reinforce_baseline), or
       REINFORCE++'s token-level returns of r_t = −β k1_t (+ s at the last token), whitened over the batch
    4. num_iterations × num_minibatches: per token the clipped ratio (ε_low / ε_high) or CISPO's clipped
       weight on log π, + β·KL per token when the KL is a loss (k3·ρ or k2, never k1), aggregated by loss_agg;
       or one ratio per sequence (the product, or GSPO's geometric mean), averaged over sequences; AdamW
    5. β (adaptive optional), metrics: the share of groups whose k rewards s' are all equal (no signal)
The groups never straddle processes (each process samples whole groups); statistics over the batch
(reinforce_pp whitening, the "batch" scale) use the batches of every process.
"""

from __future__ import annotations

import torch

from rlhfkit import losses
from rlhfkit.config import CriticFreeConfig
from rlhfkit.rollout import Rollout
from rlhfkit.trainers import loop, online
from rlhfkit.trainers.online import OnlineState


def advantages_for(cfg: CriticFreeConfig, state: OnlineState, roll: Rollout,
                   accelerator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2–3. Returns (advantages [B] (one per sequence) or [B, T] (reinforce_pp), the sequence rewards
    s' [B] they come from: s minus the missing-EOS penalty, minus β Σ_t k1_t when the KL is in the reward;
    for REINFORCE++ the return at the first token, Σ_t r_t, which is that same s')."""
    scores = shaped_scores(cfg, roll)  # [B]
    beta = state.kl_ctl.value
    if cfg.advantage == "reinforce_pp":
        rewards, _ = losses.kl_shaped_rewards(scores, roll.logprobs, roll.ref_logprobs, roll.mask, beta, "k1")
        returns, _ = losses.gae(rewards, torch.zeros_like(rewards), roll.mask, 1.0, 1.0)  # Σ_{u≥t} r_u [B, T]
        return online.whiten_over_processes(returns, roll.mask, accelerator), returns[:, 0]  # [B, T], [B]
    if cfg.kl_in == "reward":
        scores = losses.kl_penalized_scores(scores, roll.logprobs, roll.ref_logprobs, roll.mask, beta)  # [B]
    grouped = scores.view(-1, cfg.group_size)  # [P, k]
    several = accelerator is not None and accelerator.num_processes > 1
    if not several:
        return losses.group_advantages(grouped, cfg.advantage, cfg.scale).reshape(-1), scores  # [B], [B]
    # the batch scale needs every process's groups: compute on all of them, keep this process's rows
    everyone = accelerator.gather(grouped)  # [W·P, k]
    rows = slice(accelerator.process_index * len(grouped), (accelerator.process_index + 1) * len(grouped))
    return losses.group_advantages(everyone, cfg.advantage, cfg.scale)[rows].reshape(-1), scores  # [B], [B]


def shaped_scores(cfg: CriticFreeConfig, roll: Rollout) -> torch.Tensor:
    """Step 2's task reward, before any KL: s − missing_eos_penalty·[no EOS] + overlong_penalty·R_len(|y|)
    (DAPO's overlong shaping, `losses.overlong_penalty`, when --overlong-buffer is set). [B]"""
    scores = roll.scores - cfg.missing_eos_penalty * (~roll.ended).float()  # [B]
    if cfg.overlong_buffer:
        scores = scores + cfg.overlong_penalty * losses.overlong_penalty(
            roll.response_len, cfg.generation.max_new_tokens, cfg.overlong_buffer)  # [B]
    return scores


def keep_groups(cfg: CriticFreeConfig):
    """DAPO's dynamic sampling filter (Yu et al. 2025 §3.2, 0 < |{correct}| < k generalised to any reward):
    roll -> [P] bool, the groups whose k shaped scores are not all equal; None without --dynamic-sampling."""
    if not cfg.dynamic_sampling:
        return None
    return lambda roll: ~losses.zero_spread_groups(shaped_scores(cfg, roll).view(-1, cfg.group_size))


def needs_old_pass(cfg: CriticFreeConfig) -> bool:
    """Whether log π_old needs a no-grad pass of its own. Not when one update follows each batch and nothing
    reads log π_old before it (no KL in the reward, no REINFORCE++ returns): that update's forward runs on the
    weights that sampled, so its log-probs, detached, are log π_old (ratio = 1 with the gradient of log π,
    as TRL's GRPO does). Saves one no-grad forward of the batch per step."""
    one_update = cfg.num_iterations * cfg.num_minibatches == 1
    return not (one_update and cfg.kl_in == "loss" and cfg.advantage != "reinforce_pp")


def critic_free_step(cfg: CriticFreeConfig, state: OnlineState, roll: Rollout, train,
                     accelerator=None) -> dict[str, float]:
    """Steps 2–5 on one rollout of B = P·k sequences; `train(minibatch, advantages)` does one optimiser step."""
    beta = state.kl_ctl.value
    advantages, rewards = advantages_for(cfg, state, roll, accelerator)  # [B] or [B, T]; [B]
    # no log π_old yet (needs_old_pass): the update's forward fills each minibatch's, gathered here [B, T]
    filled = torch.zeros_like(roll.ref_logprobs) if roll.logprobs is None else None
    stats = []
    for idx in online.minibatches(len(roll.prompts), cfg.minibatch_size, cfg.num_iterations):
        minibatch = roll.select(idx)  # its logprobs stay None when the rollout has none
        stats.append(train(minibatch, advantages[idx], beta))
        if filled is not None:
            filled[idx] = minibatch.logprobs
    if filled is not None:
        roll.logprobs = filled
    kl_k1 = online.update_kl_controller(state, roll, accelerator)  # [B]
    shaping = {}
    if cfg.overlong_buffer:  # the term unweighted, as every reward term is logged
        shaping["rollout/reward/overlong"] = losses.overlong_penalty(
            roll.response_len, cfg.generation.max_new_tokens, cfg.overlong_buffer).mean().item()
    return {
        **online.rollout_metrics(roll, kl_k1),
        **shaping,
        # on the rewards the advantages see (missing-EOS penalty, RLOO's KL), not on the raw scores
        "rollout/zero_spread_groups": losses.zero_spread_fraction(rewards.view(-1, cfg.group_size)),
        "rl/kl_coef": beta,
        **online.mean_over_updates(stats, first_ratio=needs_old_pass(cfg)),
    }


def policy_loss(cfg: CriticFreeConfig, logprobs: torch.Tensor, mb: Rollout, advantages: torch.Tensor,
                beta: float, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Step 4's loss on one micro-batch: (loss [], clipfrac [], {rl/policy_loss, rl/kl_loss}).
    ratio token: ℓ_t (clipped surrogate or CISPO, --policy-loss) + β·KL_t, aggregated by loss_agg;
    gspo: GSPO's mean over sequences + β·(1/B) Σ_i mean_t KL_{i,t} (the same sequence weighting);
    sequence: the product ratio's mean over sequences (its KL is in the reward)."""
    mask, max_len = mb.mask, cfg.policy_token_budget  # Dr. GRPO's L_max: max_new_tokens · max_turns
    if cfg.ratio == "token":
        loss_tok, clipped = losses.token_policy_loss(logprobs, mb.logprobs, advantages,  # [B, T] each
                                                     cfg.clip_range, cfg.clip_range_high, weights,
                                                     kind=cfg.policy_loss)
        loss = losses.aggregate_loss(loss_tok, mask, cfg.loss_agg, max_len)  # []
        clipfrac, kl_agg = losses.masked_mean(clipped.float(), mask), cfg.loss_agg
    elif cfg.ratio == "gspo":
        loss, clipfrac = losses.gspo_policy_loss(logprobs, mb.logprobs, advantages, mask, cfg.clip_range,
                                                 cfg.clip_range_high, weights)
        kl_agg = "seq_mean_token_mean"
    else:
        loss, clipfrac = losses.sequence_policy_loss(logprobs, mb.logprobs, advantages, mask, cfg.clip_range,
                                                     weights)
        kl_agg = None  # the config puts its KL in the reward
    row = {"rl/policy_loss": loss.item()}
    if cfg.kl_in == "loss" and beta > 0:
        kl_tok = losses.kl_loss_per_token(logprobs, mb.ref_logprobs, mb.logprobs, cfg.kl_estimator)  # [B, T]
        row["rl/kl_loss"] = losses.masked_mean(kl_tok.detach(), mask).item()
        loss = loss + beta * losses.aggregate_loss(kl_tok, mask, kl_agg, max_len)
    return loss, clipfrac, row


def make_train_fn(cfg: CriticFreeConfig, learner: loop.Learner, state: OnlineState):
    """One optimiser step on a minibatch (in cfg.optim.grad_accum_steps micro-batches, weighted by what the
    loss averages over, loop.accumulate_step: tokens for a per-token ratio with token_mean; sequences for
    seq_mean_token_mean and seq_mean_token_sum_norm (both divide by B) and for the sequence ratios
    (sequence, gspo), whose loss is a mean over sequences whatever loss_agg says)."""
    model = learner.model
    per_token = cfg.ratio == "token" and cfg.loss_agg == "token_mean"

    def micro_loss(micro) -> tuple[torch.Tensor, dict[str, float]]:
        mb, advantages, beta = micro
        logprobs, _, entropy = model(mb.input_ids, mb.attention_mask, mb.query_ids.shape[1], mb.response_ids,
                                     cfg.generation.temperature, with_entropy=True)
        if mb.logprobs is None:  # the batch's only update: log π_old is this forward's, detached (ratio = 1)
            mb.logprobs = logprobs.detach()
        weights = online.tis_weights(cfg, mb)  # [B] (sequence ratios), [B, T] or None (TIS off)
        loss, clipfrac, row = policy_loss(cfg, logprobs, mb, advantages, beta, weights)
        row.update(online.tis_metrics(cfg, weights, mb.mask, "rl"))
        with torch.no_grad():
            ratio = losses.masked_mean(torch.exp(logprobs - mb.logprobs), mb.mask).item()
        return loss, {**row, "rl/clipfrac": clipfrac.item(), "rl/ratio": ratio,
                      "rl/entropy": losses.masked_mean(entropy, mb.mask).item(),
                      "rl/approx_kl": losses.approx_kl(logprobs.detach(), mb.logprobs, mb.mask).item()}

    def count(micro) -> float:
        return micro[0].mask.sum().item() if per_token else float(len(micro[0].prompts))

    def train(mb: Rollout, advantages: torch.Tensor, beta: float) -> dict[str, float]:
        parts = torch.arange(len(mb.prompts)).tensor_split(cfg.optim.grad_accum_steps)
        micro = [(mb.select(idx), advantages[idx], beta) for idx in parts]
        metrics = online.accumulate(learner, state, micro, micro_loss, count)
        if mb.logprobs is None:  # each micro-batch's forward filled its rows
            mb.logprobs = torch.cat([m[0].logprobs for m in micro])  # [mb, T]
        grad_norm, lr = metrics.pop("grad_norm"), metrics.pop("lr")
        return {**metrics, "rl/grad_norm": grad_norm, "rl/lr": lr}

    return train


def train_critic_free(cfg: CriticFreeConfig, reward_model=None, monitors: dict | None = None,
                      prompts: list | None = None, reward_callables: dict | None = None) -> dict[str, float]:
    """GRPO / RLOO / REINFORCE++ for cfg.steps (`online.train_online` documents arguments and outputs)."""
    name = {"rloo": "rloo", "reinforce_pp": "reinforce_pp"}.get(cfg.advantage, "grpo")
    algo = online.Algorithm(name, step=critic_free_step, make_train_fn=make_train_fn,
                            updates=lambda c: c.num_iterations * c.num_minibatches, with_value=False,
                            old_logprobs=needs_old_pass, keep_groups=keep_groups)
    return online.train_online(cfg, algo, reward_model, monitors, prompts, reward_callables)
