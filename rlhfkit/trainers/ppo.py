"""PPO for language models (ALGORITHMS.md "PPO"; Ziegler et al. 2019, Huang et al. 2024). Per step:

    1. sample y ~ softmax(logits / τ) (no top-p/top-k); log π_old, log π_ref (same τ), V_old; s = r_φ(x, y)
    2. per-token reward r_t = −β·kl_t, plus the (normalised) score at the last response token
    3. GAE (γ, λ) -> advantages (whitened) and returns
    4. ppo_epochs × num_minibatches: clipped policy loss + c_v · clipped value loss (− c_e · entropy), AdamW
       (each minibatch in grad_accum_steps micro-batches weighted by their tokens: the same update)
    5. adaptive β (optional), metrics, samples, atomic checkpoint
Details followed: dropout off; τ applied identically when sampling and scoring tokens (ratio = 1 at step 0);
reward only at EOS/last token, nothing after EOS counts; reference = LoRA adapters disabled (no 2nd copy);
with several processes, score statistics, whitening and β use the batches of all (they stay identical).
Steps 1 and 5 (and checkpoints, resume) are the loop every online trainer shares: `trainers/online.py`.
"""

from __future__ import annotations

import torch

from rlhfkit import losses
from rlhfkit.config import PPOConfig
from rlhfkit.rollout import Rollout
from rlhfkit.trainers import loop, online
from rlhfkit.trainers.online import OnlineState, build_models, whiten_over_processes  # noqa: F401


def ppo_step(cfg: PPOConfig, state: OnlineState, roll: Rollout, train, accelerator=None) -> dict[str, float]:
    """Steps 2–5 on one rollout; `train(minibatch, advantages, returns)` does one optimiser step.

    With `accelerator` the batch statistics (score normalisation, whitening, the KL that moves β) are over
    the batches of every process, so all processes keep the same β and statistics."""
    mask = roll.mask  # [B, T]
    scores = roll.scores - cfg.missing_eos_penalty * (~roll.ended).float()  # [B]
    if cfg.normalize_scores:
        state.score_moments.update(scores, accelerator)
        scores = state.score_moments.normalize(scores)
    if cfg.score_clip is not None:
        scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
    # 2. r_t = −β·kl_t, + score at the last response token
    kl_coef = state.kl_ctl.value
    rewards, kl = losses.kl_shaped_rewards(scores, roll.logprobs, roll.ref_logprobs, mask, kl_coef, cfg.kl_estimator)
    if cfg.whiten_rewards:
        rewards = whiten_over_processes(rewards, mask, accelerator, shift_mean=False)  # [B, T]
    # 3. GAE, then whiten advantages over the batch (of every process)
    advantages, returns = losses.gae(rewards, roll.values, mask, cfg.gamma, cfg.lam)  # [B, T] each
    advantages = whiten_over_processes(advantages, mask, accelerator)  # [B, T]
    # 4. ppo_epochs passes over shuffled minibatches
    stats = [train(roll.select(idx), advantages[idx], returns[idx])
             for idx in online.minibatches(len(roll.prompts), cfg.minibatch_size, cfg.ppo_epochs)]
    # 5. adaptive β from the per-sequence KL (k1) of this batch (of every process)
    kl_k1 = online.update_kl_controller(state, roll, accelerator)  # [B]
    return {
        **online.rollout_metrics(roll, kl_k1),
        "rollout/non_score_reward": -(kl_coef * kl * mask).sum(1).mean().item(),
        "rollout/reward_total": (rewards * mask).sum(1).mean().item(),
        "ppo/kl_coef": kl_coef,
        **online.mean_over_updates(stats),
    }


def make_train_fn(cfg: PPOConfig, learner: loop.Learner, state: OnlineState):
    """One optimiser step on a minibatch: clipped policy + value losses (losses.py) over its tokens, in
    cfg.optim.grad_accum_steps micro-batches weighted by their tokens (loop.accumulate_step: the same step as
    the whole minibatch at once; NaN guard, clipping, schedule)."""
    model = learner.model

    def micro_loss(micro) -> tuple[torch.Tensor, dict[str, float]]:
        mb, advantages, returns = micro
        logprobs, values, entropy = model(mb.input_ids, mb.attention_mask, mb.query_ids.shape[1],
                                          mb.response_ids, cfg.generation.temperature, with_entropy=True,
                                          entropy_grad=cfg.entropy_coef > 0)
        weights = online.tis_weights(cfg, mb)  # [B, T] or None (TIS off)
        pg_loss, clipfrac = losses.ppo_policy_loss(logprobs, mb.logprobs, advantages, mb.mask, cfg.clip_range,
                                                   weights)
        vf_loss, vf_clipfrac = losses.ppo_value_loss(values, mb.values, returns, mb.mask, cfg.clip_range_value)
        mean_entropy = losses.masked_mean(entropy, mb.mask)
        loss = pg_loss + cfg.vf_coef * vf_loss - cfg.entropy_coef * mean_entropy
        with torch.no_grad():
            ratio = losses.masked_mean(torch.exp(logprobs - mb.logprobs), mb.mask).item()
        return loss, {
            "ppo/policy_loss": pg_loss.item(), "ppo/value_loss": vf_loss.item(), "ppo/clipfrac": clipfrac.item(),
            "ppo/vf_clipfrac": vf_clipfrac.item(), "ppo/entropy": mean_entropy.item(),
            "ppo/approx_kl": losses.approx_kl(logprobs.detach(), mb.logprobs, mb.mask).item(),
            "ppo/explained_variance": losses.explained_variance(mb.values, returns, mb.mask).item(),
            "ppo/ratio": ratio, **online.tis_metrics(cfg, weights, mb.mask, "ppo"),
        }

    def tokens(micro) -> float:
        return micro[0].mask.sum().item()

    def train(mb: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, float]:
        parts = torch.arange(len(mb.prompts)).tensor_split(cfg.optim.grad_accum_steps)
        micro = [(mb.select(idx), advantages[idx], returns[idx]) for idx in parts]
        metrics = online.accumulate(learner, state, micro, micro_loss, tokens)
        grad_norm, lr = metrics.pop("grad_norm"), metrics.pop("lr")
        return {**metrics, "ppo/grad_norm": grad_norm, "ppo/lr": lr}

    return train


def train_ppo(cfg: PPOConfig, reward_model=None, monitors: dict | None = None,
              prompts: list | None = None, reward_callables: dict | None = None) -> dict[str, float]:
    """PPO for cfg.steps (`online.train_online`: arguments, outputs and resume are documented there)."""
    algo = online.Algorithm("ppo", step=ppo_step, make_train_fn=make_train_fn, build_models=build_models,
                            updates=lambda c: c.ppo_epochs * c.num_minibatches, with_value=True)
    return online.train_online(cfg, algo, reward_model, monitors, prompts, reward_callables)
