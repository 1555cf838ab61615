"""The loop every online trainer shares (PPO, GRPO, RLOO, REINFORCE++). Per step:

    1. the step's prompts (a seeded shuffle per epoch), each repeated group_size times, with their rows' other
       fields (columns, which reward functions get: `rlhfkit.rewards`)
    2. rollout: sample y ~ softmax(logits / τ); s = r(x, y) (with DAPO's dynamic sampling, `keep_groups`: more
       prompt batches until batch_size groups have a reward spread; with --env, multi-turn episodes whose
       environment turns are masked out, `rollout.run_episodes`); log π_old, log π_ref (same τ), V_old if a
       critic
    3. the algorithm's step on that batch (its optimiser steps), returning metrics
    4. monitors, metrics.jsonl / TensorBoard, samples, atomic checkpoint; at the end the policy folder

An algorithm is three functions: `step(cfg, state, roll, train, accelerator) -> metrics`,
`make_train_fn(cfg, learner, state) -> train` and `updates(cfg) -> optimiser steps per rollout batch`; whether
it has a critic is `with_value`, whether the rollout needs a no-grad pass for log π_old `old_logprobs(cfg)`.
Checkpoint, resume, reward, reference and sampling are the same for all.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState

from rlhfkit import losses
from rlhfkit.atomic import write_text
from rlhfkit.config import OnlineConfig, save_config
from rlhfkit.data.readers import load_prompt_rows, load_prompts, prompt_text
from rlhfkit.device import resolve_dtypes
from rlhfkit.envs import load_environment
from rlhfkit.errors import ConfigError, DataError
from rlhfkit.models.load import (
    apply_lora,
    enable_gradient_checkpointing,
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
    store_frozen_matmuls,
)
from rlhfkit.models.policy import ActorCritic
from rlhfkit.models.reward import RewardModel
from rlhfkit.rewards import RewardFunctions, make_reward
from rlhfkit.rollout import Rollout, collect_rollout, dynamic_sampling, sample_and_score
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
class OnlineState:
    """Everything a checkpoint holds besides weights, optimiser and schedule."""

    step: int = 0
    kl_ctl: object = None
    score_moments: RunningMoments = field(default_factory=RunningMoments)
    skipped_steps: int = 0  # optimiser steps skipped for a non-finite loss or gradient
    prompt_batches: int = 0  # prompt batches drawn so far: one per step, more with dynamic sampling

    def trainer_state(self) -> dict:
        """What trainer_state.json holds (plain numbers)."""
        return {"step": self.step, "kl_ctl": self.kl_ctl.state_dict(), "score_moments": vars(self.score_moments),
                "skipped_steps": self.skipped_steps, "prompt_batches": self.prompt_batches}

    def load_trainer_state(self, state: dict) -> None:
        self.step, self.skipped_steps = state["step"], state["skipped_steps"]
        self.prompt_batches = state.get("prompt_batches", self.step)  # a checkpoint from before it: one a step
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.score_moments = RunningMoments(**state["score_moments"])


@dataclass
class Algorithm:
    """What differs between the online trainers (see the module docstring)."""

    name: str  # metrics prefix and progress-bar label
    step: Callable
    make_train_fn: Callable
    updates: Callable  # cfg -> optimiser steps per rollout batch
    with_value: bool = False
    build_models: Callable | None = None  # default: `build_models` below
    # cfg -> whether the rollout computes log π_old in a no-grad pass (False: the step takes it from its update)
    old_logprobs: Callable = lambda cfg: True
    # cfg -> None, or DAPO's dynamic sampling: fn(scored rollout) -> [P] bool, the groups to train on
    # (`rollout.dynamic_sampling`, at most cfg.dynamic_sampling_rounds extra rounds)
    keep_groups: Callable = lambda cfg: None


def build_actor_critic(cfg: OnlineConfig, tokenizer, with_value: bool = True) -> ActorCritic:
    """The trained model: the policy (LoRA-wrapped by default) and, for PPO, its value head or critic."""
    lm = load_causal_lm(cfg.policy)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(lm)
    if cfg.lora.use_lora:
        lm = apply_lora(lm, cfg.lora, "CAUSAL_LM")
    critic = None
    if with_value and getattr(cfg, "value_model", None):
        critic_tok = load_tokenizer(cfg.value_model)
        if critic_tok.get_vocab() != tokenizer.get_vocab():
            raise ConfigError(f"config key 'value_model': {cfg.value_model} must share the policy's tokenizer")
        critic = load_sequence_classifier(cfg.value_model, tokenizer=tokenizer)
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(critic)
    actor_critic = ActorCritic(lm, critic, with_value, checkpoint_head=cfg.gradient_checkpointing)
    # FSDP's transformer-based wrapping reads the prepared module's `_no_split_modules`: one unit per layer
    actor_critic._no_split_modules = getattr(lm, "_no_split_modules", None)
    return actor_critic


def build_models(cfg: OnlineConfig, reward_model=None, with_value: bool = True,
                 reward_callables: dict | None = None):
    """(actor_critic, ref_lm or None, tokenizer, reward_model). With LoRA the reference is the same weights
    with the adapters disabled; without, a frozen copy of the initial weights."""
    tokenizer = load_tokenizer(cfg.policy, padding_side="left")
    actor_critic = build_actor_critic(cfg, tokenizer, with_value)
    # the reference is the policy's fp32 weights: under the same autocast it then computes exactly what the
    # policy computes at step 0 (KL = 0). A whole-model bf16 copy rounded the embeddings and the residual stream
    # (issue 10 measured a step-1 KL of 0.04 nats at 128 tokens on a 135M-shaped model); only the frozen matmul
    # weights go to bf16 below, which autocast casts anyway (bit-identical)
    ref_lm = None if cfg.lora.use_lora else copy.deepcopy(actor_critic.lm).eval().requires_grad_(False)
    if (frozen := loop.frozen_matmul_dtype(cfg.dtype)) is not None:
        for lm in (actor_critic.lm, ref_lm):  # LoRA: its base weights; full fine-tuning: the reference copy
            if lm is not None:
                store_frozen_matmuls(lm, frozen)
    # the frozen models are never prepared by accelerate (no gradients, nothing to shard): they go to the
    # device of this process (accelerate's, once an Accelerator exists; else the CPU)
    device = PartialState().device
    if ref_lm is not None:
        ref_lm.to(device)
    if reward_model is None and cfg.reward_model is not None:
        reward_model = RewardModel.from_pretrained(cfg.reward_model, device=device)
        # the RM runs under bf16 autocast anyway: store it in bf16 (half its memory; no ratio or KL reads it)
        reward_model.model.requires_grad_(False).to(torch.bfloat16 if cfg.dtype == "bf16" else torch.float32)
    # + the --reward-fn terms, summed (functions given as Python objects are used as they are); None: an
    # environment's step rewards are the whole score
    if reward_model is not None or cfg.reward_fn:
        reward_model = make_reward(reward_model, cfg.reward_fn, callables=reward_callables)
    # train mode for every training forward, so --gradient-checkpointing recomputes (HF checkpoints only in
    # train mode); dropout is p = 0 (`load_causal_lm`), so train mode computes what eval mode does
    return actor_critic.to(device).train(), ref_lm, tokenizer, reward_model


def prompt_batch(prompts: list, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> list:
    """The prompts of `step` on process `rank`: a seeded shuffle per epoch, so the position is just `step`."""
    per_epoch = max(len(prompts) // (batch_size * world), 1)
    order = list(range(len(prompts)))
    random.Random(seed + step // per_epoch).shuffle(order)
    start = ((step % per_epoch) * world + rank) * batch_size
    return [prompts[order[(start + i) % len(prompts)]] for i in range(batch_size)]


def any_process(accelerator, flag: bool) -> bool:
    """Whether `flag` holds on any process (gathered when there are several)."""
    if accelerator is None or accelerator.num_processes == 1:
        return flag
    return bool(accelerator.gather(torch.tensor([float(flag)], device=accelerator.device)).max() > 0)


def whiten_over_processes(x: torch.Tensor, mask: torch.Tensor, accelerator=None,
                          shift_mean: bool = True) -> torch.Tensor:
    """losses.masked_whiten with its moments over the masked tokens of every process's batch (per-process
    moments would scale each process's advantages differently). Args: x [B, T], mask [B, T]. Returns: [B, T]."""
    several = accelerator is not None and accelerator.num_processes > 1
    sum_over = (lambda t: accelerator.reduce(t, "sum")) if several else None
    return losses.masked_whiten(x, mask, shift_mean, sum_over=sum_over)


def minibatches(n: int, minibatch_size: int, epochs: int):
    """`epochs` passes over rows 0..n-1, each shuffled (torch's seeded RNG) and cut into minibatches."""
    for _ in range(epochs):
        yield from torch.randperm(n).split(minibatch_size)


def update_kl_controller(state: OnlineState, roll: Rollout, accelerator=None) -> torch.Tensor:
    """Move β (adaptive controller) by the mean sequence KL Σ_t k1 of every process's batch. Returns the k1
    sequence KL of this batch [B] (the reported `rollout/kl`)."""
    kl_k1 = ((roll.logprobs - roll.ref_logprobs) * roll.mask).sum(1)  # [B]
    kl_all = accelerator.gather(kl_k1) if accelerator is not None else kl_k1  # [W·B]
    state.kl_ctl.update(kl_all.mean().item(), len(kl_all))
    return kl_k1


def rollout_metrics(roll: Rollout, kl_k1: torch.Tensor) -> dict[str, float]:
    """What every online trainer reports about its batch (sequence KL as Σ_t k1, plus k3 as a check ≥ 0)."""
    kl_k3 = (losses.kl_penalty(roll.logprobs, roll.ref_logprobs, "k3") * roll.mask).sum(1)  # [B]
    # the sampler μ (engine or generate) vs the trainer's log π_old on the same tokens: 0 when they compute the
    # same; bf16 incremental decoding against a full pass: k3 ≈ 1.8e-3 nats per token on the demo (SmolLM2,
    # Xeon with AMX, native bf16), ~1e-11 in fp32
    gap_k1, gap_k3, gap_max = losses.sampler_gap(roll.sample_logprobs, roll.logprobs, roll.mask)
    return {
        "rollout/sampler_kl": gap_k1.item(),
        "rollout/sampler_kl_k3": gap_k3.item(),
        "rollout/sampler_logprob_gap_max": gap_max.item(),
        "rollout/score_mean": roll.scores.mean().item(),
        "rollout/score_std": roll.scores.std().item() if len(roll.scores) > 1 else 0.0,
        "rollout/kl": kl_k1.mean().item(),
        "rollout/kl_k3": kl_k3.mean().item(),
        "rollout/response_len": roll.response_len.mean().item(),
        "rollout/eos_rate": roll.ended.float().mean().item(),
    }


def episode_metrics(roll: Rollout) -> dict[str, float]:
    """What a run with an environment reports about its episodes: rollout/turns_mean (policy turns per
    episode), rollout/multi_turn_rate (the share with more than one, e.g. a tool called), rollout/turn_len
    (policy tokens per turn), rollout/episode_reward (the mean episode score: Σ step rewards + the reward
    functions on the last message; rollout/reward/env is the step rewards' part)."""
    return {
        "rollout/turns_mean": roll.turns.mean().item(),
        "rollout/multi_turn_rate": (roll.turns > 1).float().mean().item(),
        "rollout/turn_len": (roll.mask.sum() / roll.turns.sum()).item(),
        "rollout/episode_reward": roll.scores.mean().item(),
    }


def tis_weights(cfg: OnlineConfig, mb: Rollout) -> torch.Tensor | None:
    """The truncated importance weights of a minibatch's policy-gradient terms (losses.tis_weights: per token,
    or per sequence under --ratio sequence, its geometric mean under gspo), or None when --tis-cap is unset.
    Needs log π_old (mb.logprobs)."""
    if cfg.tis_cap is None:
        return None
    level = {"sequence": "sequence", "gspo": "sequence_mean"}.get(getattr(cfg, "ratio", "token"), "token")
    return losses.tis_weights(mb.logprobs, mb.sample_logprobs, mb.mask, cfg.tis_cap, level)


def tis_metrics(cfg: OnlineConfig, weights: torch.Tensor | None, mask: torch.Tensor, group: str) -> dict:
    """`<group>/tis_weight` (the mean weight) and `<group>/tis_truncated` (the share of tokens, or sequences,
    whose π_old/μ reached the cap); {} when TIS is off."""
    if weights is None:
        return {}
    at_cap = (weights >= cfg.tis_cap).float()  # [B, T] or [B]
    if weights.dim() == 1:  # one weight per sequence
        return {f"{group}/tis_weight": weights.mean().item(), f"{group}/tis_truncated": at_cap.mean().item()}
    return {f"{group}/tis_weight": losses.masked_mean(weights, mask).item(),
            f"{group}/tis_truncated": losses.masked_mean(at_cap, mask).item()}


def mean_over_updates(stats: list[dict[str, float]], first_ratio: bool = True) -> dict[str, float]:
    """The mean of each metric over a step's optimiser updates, plus `<group>/first_ratio`, the first update's
    ratio: its training forward against the rollout's no-grad log π_old pass, two passes that must agree
    (1 at every step's first minibatch: the check that sampling and training compute the same log-probs).
    `first_ratio=False` leaves it out where there is no such pass (critic_free.needs_old_pass False: log π_old
    is the update's own forward, detached, so the ratio is 1 by construction and checks nothing)."""
    out = {key: sum(s[key] for s in stats) / len(stats) for key in stats[0]}
    ratio_key = next((k for k in stats[0] if k.endswith("/ratio")), None)
    if ratio_key and first_ratio:
        out[ratio_key.replace("/ratio", "/first_ratio")] = stats[0][ratio_key]
    return out


def accumulate(learner: loop.Learner, state: OnlineState, micro: list, micro_loss, count) -> dict[str, float]:
    """One optimiser step over `micro` batches (loop.accumulate_step: weighted by `count`), with the skipped
    step counted; returns the count-weighted metrics (the whole minibatch's values for the linear ones)."""
    result = loop.accumulate_step(learner, micro, micro_loss, count)
    if result.skipped:
        if not state.skipped_steps:
            log.warning("non-finite loss or gradient: optimiser step skipped (in skipped_steps)")
        state.skipped_steps += 1
    metrics = result.rows[0]
    if len(micro) > 1:
        weights = [count(m) for m in micro]
        metrics = {k: sum(w * row[k] for w, row in zip(weights, result.rows)) / sum(weights) for k in metrics}
    return {**metrics, "grad_norm": result.grad_norm, "lr": result.lr}


def train_online(cfg: OnlineConfig, algo: Algorithm, reward_model=None, monitors: dict | None = None,
                 prompts: list | None = None, reward_callables: dict | None = None) -> dict[str, float]:
    """Run `algo` for cfg.steps; writes metrics.jsonl, samples.jsonl, checkpoint/, policy/ under cfg.output.

    `reward_model`: optional object with .score(prompts, responses) -> list[float] used instead of
    cfg.reward_model (e.g. a programmatic reward). `monitors`: {name: fn(prompts, responses) -> list[float]}
    logged as `rollout/<name>_mean` each step but never optimised (e.g. the demo's gold reward). With
    cfg.reward_fn, each term of the summed reward (the RM as `reward_model`) is logged unweighted as
    `rollout/reward/<name>`, its batch mean.
    `prompts`: the prompts (str or chat messages) to train on, used instead of loading cfg.prompts (the demo
    passes its train split in memory). `reward_callables`: {name: callable} for the cfg.reward_fn specs given
    as Python objects (`rlhfkit.api`), called as they are instead of imported by name."""
    cfg = resolve_dtypes(cfg)  # `auto` -> bf16 or fp32 for this machine, before config.yaml is written
    loop.seed_everything(cfg.seed)
    out = Path(cfg.output)
    accelerator = loop.make_accelerator(cfg.dtype)
    loop.check_accumulation(accelerator, cfg.optim.grad_accum_steps)
    loop.check_clipping(accelerator, cfg.optim.max_grad_norm)
    loop.declare_deepspeed_batch(accelerator, cfg.minibatch_size // cfg.optim.grad_accum_steps)
    columns = None  # the prompt rows' other fields: read when reward functions score (they get them)
    if prompts is None:
        if cfg.prompts is None:
            raise ConfigError("missing required config key 'prompts' (--prompts)")
        if cfg.reward_fn or cfg.env or isinstance(reward_model, RewardFunctions):  # they read the columns
            prompts, columns, report = load_prompt_rows(cfg.prompts, cfg.prompt_field)
        else:
            prompts, report = load_prompts(cfg.prompts, cfg.prompt_field)
        log.info(report.summary())
    records = list(zip(prompts, columns or [{}] * len(prompts)))  # (prompt, its columns)
    if len(prompts) < cfg.batch_size:
        raise DataError(cfg.prompts or "prompts", None, None,
                        f"{len(prompts)} prompts, fewer than --batch-size {cfg.batch_size}")
    if reward_model is None and cfg.reward_model is None and not cfg.reward_fn and cfg.env is None:
        raise ConfigError("config key 'reward_model': give a reward model (--reward-model), one or more "
                          "--reward-fn, an environment (--env), or several")
    make_env = load_environment(cfg.env) if cfg.env else None  # one environment per episode
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")
    with loop.whole_weights(accelerator):  # whole on every process: `prepare` splits only the trained model
        actor_critic, ref_lm, tokenizer, reward_model = (algo.build_models or build_models)(
            cfg, reward_model, algo.with_value, reward_callables)
    optimizer, scheduler = loop.make_optimizer(actor_critic, cfg.optim, cfg.steps * algo.updates(cfg))
    loop.size_deepspeed_buffers(accelerator, actor_critic)
    model, optimizer, scheduler = accelerator.prepare(actor_critic, optimizer, scheduler)
    loop.log_sharding(accelerator, model)
    loop.seed_sampling(cfg.seed, accelerator)  # built alike on every process; now one stream each
    kl_ctl = (losses.AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.target_kl
              else losses.FixedKLController(cfg.kl_coef))
    state = OnlineState(kl_ctl=kl_ctl)
    ckpt = out / "checkpoint"
    if cfg.resume and ckpt.exists():
        state.load_trainer_state(checkpoint.load_checkpoint(ckpt, accelerator))
        log.info("resumed from %s at step %d", ckpt, state.step)
    if accelerator.is_main_process:
        drop_samples_after(out, state.step)
    tracker = Tracker(out, accelerator.is_main_process, resume_step=state.step if cfg.resume else None)
    learner = loop.Learner(accelerator, model, optimizer, scheduler, cfg.optim.max_grad_norm)
    train = algo.make_train_fn(cfg, learner, state)
    unwrapped = accelerator.unwrap_model(model)

    def draw() -> tuple[list, list[dict]]:
        """The next prompt batch of this process, each prompt's k copies together: (prompts, columns)."""
        batch = prompt_batch(records, state.prompt_batches, cfg.batch_size, cfg.seed, accelerator.process_index,
                             accelerator.num_processes)
        state.prompt_batches += 1
        batch = [record for record in batch for _ in range(cfg.group_size)]  # a prompt's k completions together
        return [p for p, _ in batch], [c for _, c in batch]

    refill = None  # DAPO's dynamic sampling: more prompt batches until batch_size groups have a reward spread
    if (keep := algo.keep_groups(cfg)) is not None:
        def sample(batch: list, batch_columns: list[dict]) -> Rollout:  # an extra round, sampled and scored
            return sample_and_score(unwrapped.lm, tokenizer, reward_model, batch, cfg.generation,
                                    columns=batch_columns, use_chat_template=cfg.use_chat_template,
                                    autocast=accelerator.autocast, make_env=make_env, max_turns=cfg.max_turns)

        refill = dynamic_sampling(keep, draw, sample, n_groups=cfg.batch_size, group_size=cfg.group_size,
                                  max_rounds=cfg.dynamic_sampling_rounds, pad_token_id=tokenizer.pad_token_id,
                                  any_short=lambda short: any_process(accelerator, short))
    bar = progress(total=cfg.steps, desc=algo.name, disable=not accelerator.is_main_process)
    bar.update(state.step)
    metrics: dict[str, float] = {}
    while state.step < cfg.steps:
        t0 = time.perf_counter()
        batch, batch_columns = draw()
        roll = collect_rollout(unwrapped, ref_lm, tokenizer, reward_model, batch, cfg.generation,
                               columns=batch_columns, use_chat_template=cfg.use_chat_template,
                               autocast=accelerator.autocast, old_logprobs=algo.old_logprobs(cfg), refill=refill,
                               make_env=make_env, max_turns=cfg.max_turns)
        t1 = time.perf_counter()
        metrics = algo.step(cfg, state, roll, train, accelerator)
        for name, fn in (monitors or {}).items():
            values = fn([prompt_text(p) for p in roll.prompts], roll.responses)
            metrics[f"rollout/{name}_mean"] = sum(values) / len(values)
        for name, values in (roll.reward_terms or {}).items():  # each summed term, unweighted (weight 0 included)
            metrics[f"rollout/reward/{name}"] = values.mean().item()
        if make_env is not None:
            metrics.update(episode_metrics(roll))
        metrics.update(roll.sampling)
        metrics = loop.mean_metrics(accelerator, [metrics])  # means over processes
        metrics["skipped_steps"] = state.skipped_steps
        n_tokens = roll.mask.sum().item()
        metrics.update(roll.timings)
        metrics.update({"time/training_s": time.perf_counter() - t1, "step_time_s": time.perf_counter() - t0,
                        "tokens_per_s": n_tokens / max(roll.timings["time/generation_s"], 1e-9)})
        state.step += 1
        tracker.log(state.step, metrics)
        if accelerator.is_main_process and cfg.sample_every and (state.step - 1) % cfg.sample_every == 0:
            write_samples(out, state.step, roll, with_conversation=make_env is not None)
        if cfg.save_every and state.step % cfg.save_every == 0 and state.step < cfg.steps:
            checkpoint.save_checkpoint(ckpt, accelerator, state.trainer_state())
        bar.update(1)
        bar.set_postfix(score=f"{metrics['rollout/score_mean']:.3f}", kl=f"{metrics['rollout/kl']:.3f}",
                        len=f"{metrics['rollout/response_len']:.0f}")
    bar.close()
    checkpoint.save_checkpoint(ckpt, accelerator, state.trainer_state())
    # under FSDP/DeepSpeed every process takes part in gathering the weights; the main process saves them
    loop.release_optimizer_state(optimizer)  # the final checkpoint above holds it
    whole = loop.whole_model(accelerator, model, lambda: build_actor_critic(cfg, tokenizer, algo.with_value))
    if accelerator.is_main_process:
        loop.save_policy(whole.lm, tokenizer, out / "policy", cfg.merge_lora)
        write_text(out / "summary.json", json.dumps(metrics, indent=2))
    tracker.close()
    return metrics


def write_samples(out: Path, step: int, roll: Rollout, n: int = 4, with_conversation: bool = False) -> None:
    """A few rows of the batch: prompt, response, score, and the prompt row's columns when it has any; with
    `with_conversation` (multi-turn episodes) the whole conversation and its number of policy turns too."""
    with open(out / "samples.jsonl", "a") as f:
        for i in range(min(n, len(roll.prompts))):
            row = {"step": step, "prompt": prompt_text(roll.prompts[i]), "response": roll.responses[i],
                   "score": roll.scores[i].item()}
            if roll.columns and roll.columns[i]:
                row["columns"] = roll.columns[i]
            if with_conversation:
                row.update(turns=int(roll.turns[i].item()), conversation=roll.conversations[i])
            f.write(json.dumps(row) + "\n")


def drop_samples_after(out: Path, step: int) -> None:
    """samples.jsonl keeps the rows of steps <= `step`: a fresh run starts empty, a resumed one forgets what
    an interrupted run logged after its checkpoint (those steps run again)."""
    path = out / "samples.jsonl"
    if path.is_file():
        rows = [x for x in path.read_text().splitlines() if x.strip() and json.loads(x)["step"] <= step]
        write_text(path, "".join(x + "\n" for x in rows))
