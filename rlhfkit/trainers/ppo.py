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
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhfkit import losses
from rlhfkit.atomic import write_text
from rlhfkit.config import PPOConfig, save_config
from rlhfkit.data.readers import load_prompts, prompt_text
from rlhfkit.errors import ConfigError, DataError
from rlhfkit.models.load import (
    apply_lora,
    enable_gradient_checkpointing,
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
)
from rlhfkit.models.policy import ActorCritic
from rlhfkit.models.reward import RewardModel
from rlhfkit.rollout import Rollout, collect_rollout
from rlhfkit.tracking import Tracker, progress
from rlhfkit.trainers import checkpoint, loop

log = logging.getLogger(__name__)


@dataclass
class RunningMoments:
    """Running mean/std of RM scores (Chan et al. parallel update), for a stable reward scale."""

    mean: float = 0.0
    var: float = 1.0  # before the first update: normalize is the identity
    count: float = 0.0  # the first update then takes the batch's own moments (no prior weighs in)

    def update(self, x: torch.Tensor, accelerator=None) -> None:
        """Fold in a batch of scores x [B]; with `accelerator`, the batches of every process (gathered), so
        all processes keep the same statistics."""
        if accelerator is not None:
            x = accelerator.gather(x)  # [W·B]
        n, m, v = x.numel(), x.mean().item(), x.var(unbiased=False).item()
        delta, total = m - self.mean, self.count + n
        self.var = (self.var * self.count + v * n + delta**2 * self.count * n / total) / total
        self.mean, self.count = self.mean + delta * n / total, total

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / math.sqrt(self.var + 1e-8)


@dataclass
class PPOState:
    """Everything a checkpoint holds besides weights, optimiser and schedule."""

    step: int = 0
    kl_ctl: object = None
    score_moments: RunningMoments = field(default_factory=RunningMoments)
    skipped_steps: int = 0  # optimiser steps skipped for a non-finite loss or gradient

    def trainer_state(self) -> dict:
        """What trainer_state.json holds (plain numbers)."""
        return {"step": self.step, "kl_ctl": self.kl_ctl.state_dict(),
                "score_moments": vars(self.score_moments), "skipped_steps": self.skipped_steps}

    def load_trainer_state(self, state: dict) -> None:
        self.step, self.skipped_steps = state["step"], state["skipped_steps"]
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.score_moments = RunningMoments(**state["score_moments"])


def build_models(cfg: PPOConfig, reward_model=None):
    """(actor_critic, ref_lm or None, tokenizer, reward_model). With LoRA the reference is the same weights."""
    tokenizer = load_tokenizer(cfg.policy, padding_side="left")
    lm = load_causal_lm(cfg.policy)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(lm)
    ref_lm = None
    if cfg.lora.use_lora:
        lm = apply_lora(lm, cfg.lora, "CAUSAL_LM")
    else:
        # the reference keeps the policy's fp32 weights: under the same autocast it then computes exactly what
        # the policy computes at step 0 (KL = 0). A bf16 copy rounded weights and residual stream (issue 10
        # measured a step-1 KL of 0.04 nats at 128 tokens on a 135M-shaped model)
        ref_lm = copy.deepcopy(lm).eval().requires_grad_(False)
    critic = None
    if cfg.value_model:
        critic_tok = load_tokenizer(cfg.value_model)
        if critic_tok.get_vocab() != tokenizer.get_vocab():
            raise ConfigError(f"config key 'value_model': {cfg.value_model} must share the policy's tokenizer")
        critic = load_sequence_classifier(cfg.value_model, tokenizer=tokenizer)
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(critic)
    if reward_model is None:
        reward_model = RewardModel.from_pretrained(cfg.reward_model)
        # the RM runs under bf16 autocast anyway: store it in bf16 (half its memory; no ratio or KL reads it)
        reward_model.model.requires_grad_(False).to(torch.bfloat16 if cfg.dtype == "bf16" else torch.float32)
    # train mode for every training forward, so --gradient-checkpointing recomputes (HF checkpoints only in
    # train mode); dropout is p = 0 (`load_causal_lm`), so train mode computes what eval mode does
    return ActorCritic(lm, critic).train(), ref_lm, tokenizer, reward_model


def prompt_batch(prompts: list, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> list:
    """The prompts of `step` on process `rank`: a seeded shuffle per epoch, so the position is just `step`."""
    per_epoch = max(len(prompts) // (batch_size * world), 1)
    order = list(range(len(prompts)))
    random.Random(seed + step // per_epoch).shuffle(order)
    start = ((step % per_epoch) * world + rank) * batch_size
    return [prompts[order[(start + i) % len(prompts)]] for i in range(batch_size)]


def ppo_step(cfg: PPOConfig, state: PPOState, roll: Rollout, train, accelerator=None) -> dict[str, float]:
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
    stats: list[dict[str, float]] = []
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(len(roll.prompts))
        for idx in order.split(cfg.minibatch_size):
            stats.append(train(roll.select(idx), advantages[idx], returns[idx]))
    # 5. adaptive β from the per-sequence KL (k1) of this batch (of every process)
    log_ratio = (roll.logprobs - roll.ref_logprobs) * mask  # [B, T]
    kl_k1 = log_ratio.sum(1)  # [B]
    kl_k3 = (losses.kl_penalty(roll.logprobs, roll.ref_logprobs, "k3") * mask).sum(1)  # [B]
    kl_all = accelerator.gather(kl_k1) if accelerator is not None else kl_k1  # [W·B]
    state.kl_ctl.update(kl_all.mean().item(), len(kl_all))
    metrics = {
        "rollout/score_mean": roll.scores.mean().item(),
        "rollout/score_std": roll.scores.std().item() if len(roll.scores) > 1 else 0.0,
        "rollout/kl": kl_k1.mean().item(),
        "rollout/kl_k3": kl_k3.mean().item(),
        "rollout/non_score_reward": -(kl_coef * kl * mask).sum(1).mean().item(),
        "rollout/reward_total": (rewards * mask).sum(1).mean().item(),
        "rollout/response_len": roll.response_len.mean().item(),
        "rollout/eos_rate": roll.ended.float().mean().item(),
        "ppo/kl_coef": kl_coef,
    }
    for key in stats[0]:
        metrics[key] = sum(s[key] for s in stats) / len(stats)
    metrics["ppo/first_ratio"] = stats[0]["ppo/ratio"]  # sanity: 1 at every step's first minibatch
    return metrics


def whiten_over_processes(x: torch.Tensor, mask: torch.Tensor, accelerator=None,
                          shift_mean: bool = True) -> torch.Tensor:
    """losses.masked_whiten with its moments over the masked tokens of every process's batch (per-process
    moments would scale each process's advantages differently). Args: x [B, T], mask [B, T]. Returns: [B, T]."""
    several = accelerator is not None and accelerator.num_processes > 1
    sum_over = (lambda t: accelerator.reduce(t, "sum")) if several else None
    return losses.masked_whiten(x, mask, shift_mean, sum_over=sum_over)


def make_train_fn(cfg: PPOConfig, learner: loop.Learner, state: PPOState):
    """One optimiser step on a minibatch: clipped policy + value losses (losses.py) over its tokens, in
    cfg.optim.grad_accum_steps micro-batches weighted by their tokens (loop.accumulate_step: the same step as
    the whole minibatch at once; NaN guard, clipping, schedule)."""
    model = learner.model

    def micro_loss(micro) -> tuple[torch.Tensor, dict[str, float]]:
        mb, advantages, returns = micro
        logprobs, values, entropy = model(mb.input_ids, mb.attention_mask, mb.query_ids.shape[1],
                                          mb.response_ids, cfg.generation.temperature, with_entropy=True,
                                          entropy_grad=cfg.entropy_coef > 0)
        pg_loss, clipfrac = losses.ppo_policy_loss(logprobs, mb.logprobs, advantages, mb.mask, cfg.clip_range)
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
            "ppo/ratio": ratio,
        }

    def tokens(micro) -> float:
        return micro[0].mask.sum().item()

    def train(mb: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, float]:
        parts = torch.arange(len(mb.prompts)).tensor_split(cfg.optim.grad_accum_steps)
        micro = [(mb.select(idx), advantages[idx], returns[idx]) for idx in parts]
        result = loop.accumulate_step(learner, micro, micro_loss, tokens)
        if result.skipped:
            if not state.skipped_steps:
                log.warning("non-finite PPO loss or gradient: optimiser step skipped (in skipped_steps)")
            state.skipped_steps += 1
        metrics = result.rows[0]
        if len(micro) > 1:  # token-weighted means: the whole minibatch's values for the linear ones
            weights = [tokens(m) for m in micro]
            metrics = {k: sum(w * row[k] for w, row in zip(weights, result.rows)) / sum(weights)
                       for k in metrics}
        return {**metrics, "ppo/grad_norm": result.grad_norm, "ppo/lr": result.lr}

    return train


def train_ppo(cfg: PPOConfig, reward_model=None, monitors: dict | None = None,
              prompts: list | None = None) -> dict[str, float]:
    """Run PPO for cfg.steps; writes metrics.jsonl, samples.jsonl, checkpoint/, policy/ under cfg.output.

    `reward_model`: optional object with .score(prompts, responses) -> list[float] used instead of
    cfg.reward_model (e.g. a programmatic reward). `monitors`: {name: fn(prompts, responses) -> list[float]}
    logged as `rollout/<name>_mean` each step but never optimised (e.g. the demo's gold reward).
    `prompts`: the prompts (str or chat messages) to train on, used instead of loading cfg.prompts (the demo
    passes its train split in memory)."""
    loop.seed_everything(cfg.seed)
    out = Path(cfg.output)
    accelerator = loop.make_accelerator(cfg.dtype)
    loop.check_accumulation(accelerator, cfg.optim.grad_accum_steps)
    if prompts is None:
        if cfg.prompts is None:
            raise ConfigError("missing required config key 'prompts' (--prompts)")
        prompts, report = load_prompts(cfg.prompts, cfg.prompt_field)
        log.info(report.summary())
    if len(prompts) < cfg.batch_size:
        raise DataError(cfg.prompts or "prompts", None, None,
                        f"{len(prompts)} prompts, fewer than --batch-size {cfg.batch_size}")
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")
    actor_critic, ref_lm, tokenizer, reward_model = build_models(cfg, reward_model)
    updates = cfg.steps * cfg.ppo_epochs * cfg.num_minibatches
    optimizer, scheduler = loop.make_optimizer(actor_critic, cfg.optim, updates)
    model, optimizer, scheduler = accelerator.prepare(actor_critic, optimizer, scheduler)
    kl_ctl = (losses.AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.target_kl
              else losses.FixedKLController(cfg.kl_coef))
    state = PPOState(kl_ctl=kl_ctl)
    ckpt = out / "checkpoint"
    if cfg.resume and ckpt.exists():
        state.load_trainer_state(checkpoint.load_checkpoint(ckpt, accelerator))
        log.info("resumed from %s at step %d", ckpt, state.step)
    if accelerator.is_main_process:
        drop_samples_after(out, state.step)
    tracker = Tracker(out, accelerator.is_main_process, resume_step=state.step if cfg.resume else None)
    learner = loop.Learner(accelerator, model, optimizer, scheduler, cfg.optim.max_grad_norm)
    train = make_train_fn(cfg, learner, state)
    unwrapped = accelerator.unwrap_model(model)
    bar = progress(total=cfg.steps, desc="ppo", disable=not accelerator.is_main_process)
    bar.update(state.step)
    metrics: dict[str, float] = {}
    while state.step < cfg.steps:
        t0 = time.perf_counter()
        batch = prompt_batch(prompts, state.step, cfg.batch_size, cfg.seed, accelerator.process_index,
                             accelerator.num_processes)
        roll = collect_rollout(unwrapped, ref_lm, tokenizer, reward_model, batch, cfg.generation,
                               use_chat_template=cfg.use_chat_template, autocast=accelerator.autocast)
        t1 = time.perf_counter()
        metrics = ppo_step(cfg, state, roll, train, accelerator)
        for name, fn in (monitors or {}).items():
            values = fn([prompt_text(p) for p in roll.prompts], roll.responses)
            metrics[f"rollout/{name}_mean"] = sum(values) / len(values)
        metrics = loop.mean_metrics(accelerator, [metrics])  # means over processes
        metrics["skipped_steps"] = state.skipped_steps
        n_tokens = roll.mask.sum().item()
        metrics.update(roll.timings)
        metrics.update({"time/training_s": time.perf_counter() - t1, "step_time_s": time.perf_counter() - t0,
                        "tokens_per_s": n_tokens / max(roll.timings["time/generation_s"], 1e-9)})
        state.step += 1
        tracker.log(state.step, metrics)
        if accelerator.is_main_process and cfg.sample_every and (state.step - 1) % cfg.sample_every == 0:
            write_samples(out, state.step, roll)
        if cfg.save_every and state.step % cfg.save_every == 0 and state.step < cfg.steps:
            checkpoint.save_checkpoint(ckpt, accelerator, state.trainer_state())
        bar.update(1)
        bar.set_postfix(score=f"{metrics['rollout/score_mean']:.3f}", kl=f"{metrics['rollout/kl']:.3f}",
                        len=f"{metrics['rollout/response_len']:.0f}")
    bar.close()
    checkpoint.save_checkpoint(ckpt, accelerator, state.trainer_state())
    if accelerator.is_main_process:
        loop.save_policy(unwrapped.lm, tokenizer, out / "policy", cfg.merge_lora)
        write_text(out / "summary.json", json.dumps(metrics, indent=2))
    tracker.close()
    return metrics


def write_samples(out: Path, step: int, roll: Rollout, n: int = 4) -> None:
    with open(out / "samples.jsonl", "a") as f:
        for i in range(min(n, len(roll.prompts))):
            f.write(json.dumps({"step": step, "prompt": prompt_text(roll.prompts[i]),
                                "response": roll.responses[i], "score": roll.scores[i].item()}) + "\n")


def drop_samples_after(out: Path, step: int) -> None:
    """samples.jsonl keeps the rows of steps <= `step`: a fresh run starts empty, a resumed one forgets what
    an interrupted run logged after its checkpoint (those steps run again)."""
    path = out / "samples.jsonl"
    if path.is_file():
        rows = [x for x in path.read_text().splitlines() if x.strip() and json.loads(x)["step"] <= step]
        write_text(path, "".join(x + "\n" for x in rows))
