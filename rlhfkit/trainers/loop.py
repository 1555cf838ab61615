"""What every trainer shares: seeding, accelerate, optimiser and schedule, NaN guard, checkpoints, resume,
saving the policy, and the epoch loop of the offline trainers (SFT, DPO)."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from rlhfkit.atomic import versioned_dir
from rlhfkit.tracking import Tracker, progress

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Fix python, numpy and torch RNGs (accelerate's set_seed also seeds every device)."""
    from accelerate.utils import set_seed

    set_seed(seed)


def make_accelerator(dtype: str = "fp32", grad_accum_steps: int = 1):
    """accelerate's Accelerator: DDP/FSDP/DeepSpeed under `accelerate launch`, plain CPU otherwise.

    bf16 = autocast with fp32 master weights (this CPU runs bf16 matmuls ~2.4x faster)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # one process may run several stages with different precisions (the demo): forget the previous
    # stage's settings but keep the process group (PartialState)
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        mixed_precision="bf16" if dtype == "bf16" else "no",
        gradient_accumulation_steps=grad_accum_steps,
        cpu=not torch.cuda.is_available(),
        step_scheduler_with_optimizer=False,  # schedules count this process's optimiser steps, nothing else
    )


def make_optimizer(model: torch.nn.Module, optim_cfg, total_steps: int):
    """AdamW over trainable parameters + warm-up/decay schedule (transformers.get_scheduler)."""
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel per step, no foreach temporaries the size of the parameters (peak memory, speed)
    optimizer = torch.optim.AdamW(params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay, fused=True)
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[optim_cfg.scheduler]
    scheduler = get_scheduler(
        name,
        optimizer,
        num_warmup_steps=int(optim_cfg.warmup_ratio * total_steps),
        num_training_steps=max(total_steps, 1),
    )
    return optimizer, scheduler


def all_finite(*tensors: torch.Tensor) -> bool:
    """False when any value is NaN or inf: the caller skips the step (it never reaches a checkpoint)."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def clip_and_step(accelerator, model, optimizer, scheduler, max_grad_norm: float) -> float:
    """Clip gradients, step optimiser and schedule, zero grads. A non-finite gradient skips the step."""
    grad_norm = float("nan")
    if accelerator.sync_gradients:
        params = [p for p in model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
        grad_norm = float(norm)
        if not math.isfinite(grad_norm):
            log.warning("non-finite gradient norm: optimiser step skipped")
            optimizer.zero_grad(set_to_none=True)
            return grad_norm
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(folder: Path, *, accelerator, model, optimizer, scheduler, extra: dict) -> None:
    """Everything needed to resume exactly, into `folder` (the caller makes it atomic with versioned_dir)."""
    from safetensors.torch import save_file

    unwrapped = accelerator.unwrap_model(model)  # only what trains: LoRA adapters + heads, or all weights
    trainable = {k: p.detach().cpu().contiguous() for k, p in unwrapped.named_parameters() if p.requires_grad}
    save_file(trainable, str(folder / "weights.safetensors"))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(), **extra},
        folder / "state.pt",
    )


def load_checkpoint(folder: Path, *, accelerator, model, optimizer, scheduler) -> dict:
    """Restore weights, optimiser, schedule and RNG; returns the trainer's `extra` dict."""
    from safetensors.torch import load_file

    unwrapped = accelerator.unwrap_model(model)
    weights = load_file(str(folder / "weights.safetensors"))
    trainable = {k for k, p in unwrapped.named_parameters() if p.requires_grad}
    if set(weights) != trainable:
        raise RuntimeError(f"checkpoint {folder} does not match the model's trainable parameters")
    unwrapped.load_state_dict(weights, strict=False)
    state = torch.load(folder / "state.pt", weights_only=False)
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    set_rng_state(state.pop("rng"))
    return state


def save_checkpoint_atomic(ckpt: Path, *, accelerator, model, optimizer, scheduler, extra: dict) -> None:
    """`save_checkpoint` into a versioned folder that `ckpt` (a symlink) switches to in one step; a crash
    leaves the previous checkpoint. Every process waits here; only the main process writes."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    with versioned_dir(ckpt) as folder:
        save_checkpoint(folder, accelerator=accelerator, model=model, optimizer=optimizer,
                        scheduler=scheduler, extra=extra)


def save_policy(lm, tokenizer, folder: Path, merge_lora: bool) -> None:
    """The final policy as a normal HF folder (LoRA merged on request, else a peft adapter folder)."""
    with versioned_dir(folder) as tmp:
        if merge_lora and hasattr(lm, "merge_and_unload"):
            lm = copy.deepcopy(lm).merge_and_unload()
        lm.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


# --------------------------------------------------------------------------- epoch-based trainers (SFT, DPO)
class EpochSampler(Sampler[int]):
    """A seeded shuffle per epoch: the order of epoch e depends only on (seed, e), so a run resumed at an
    epoch boundary sees the same order as an uninterrupted one; all processes draw the same permutation."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # accelerate's prepared loaders forward set_epoch to their sampler

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


@dataclass
class EpochRun:
    """An epoch-based run after accelerate.prepare. `epoch` (finished epochs) and `step` (training batches
    seen) are what a checkpoint restores, with the trainable weights, optimiser, schedule and RNG."""

    accelerator: Any
    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    train_loader: Any
    eval_loader: Any
    tracker: Tracker
    checkpoint_dir: Path
    epoch: int = 0
    step: int = 0
    skipped_steps: int = 0


def trainable_policy(path: str, cfg) -> torch.nn.Module:
    """The causal LM at `path` as a `Policy` to train: gradient checkpointing if cfg.gradient_checkpointing
    (the trunk's activations and the LM-head logits recomputed in the backward pass), then LoRA adapters if
    cfg.lora.use_lora."""
    from rlhfkit.models.load import apply_lora, enable_gradient_checkpointing, load_causal_lm
    from rlhfkit.models.policy import Policy

    lm = load_causal_lm(path)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(lm)
    if cfg.lora.use_lora:
        lm = apply_lora(lm, cfg.lora, "CAUSAL_LM")
    return Policy(lm, checkpoint_head=cfg.gradient_checkpointing)


def prepare_epoch_run(cfg, accelerator, model, train_items: list, eval_items: list) -> EpochRun:
    """Loaders (a seeded shuffle per epoch; batches are lists of items), AdamW + schedule, accelerate.prepare,
    and --resume from `output/checkpoint`. Uses cfg.output, batch_size, epochs, seed, resume and optim."""
    train_loader = DataLoader(train_items, cfg.batch_size, sampler=EpochSampler(len(train_items), cfg.seed),
                              collate_fn=list)
    eval_loader = DataLoader(eval_items, cfg.batch_size * 2, collate_fn=list)
    steps = math.ceil(len(train_loader) / accelerator.num_processes / cfg.optim.grad_accum_steps) * cfg.epochs
    optimizer, scheduler = make_optimizer(model, cfg.optim, steps)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    ckpt = Path(cfg.output) / "checkpoint"
    extra = {"epoch": 0, "step": 0, "skipped_steps": 0}
    if cfg.resume and ckpt.exists():
        extra = load_checkpoint(ckpt, accelerator=accelerator, model=model, optimizer=optimizer,
                                scheduler=scheduler)
        log.info("resumed from %s after epoch %d (step %d)", ckpt, extra["epoch"], extra["step"])
    resume_step = extra["step"] if cfg.resume else None
    tracker = Tracker(cfg.output, accelerator.is_main_process, resume_step=resume_step)
    return EpochRun(accelerator, model, optimizer, scheduler, train_loader, eval_loader, tracker, ckpt,
                    **extra)


def train_epochs(run: EpochRun, cfg, train_step, evaluate, group: str) -> dict[str, float]:
    """The remaining epochs: `train_step` on every batch (accumulation, NaN guard, clipping, schedule); a
    row of step metrics (means over the last cfg.log_every batches) to metrics.jsonl; after each epoch
    `evaluate()`, an epoch row and an atomic checkpoint.

    Args: train_step(batch) -> (loss [], {"<group>/<name>": float}); evaluate() -> {key: float}.
    Returns: the last epoch row: `epoch`, `train/<name>` (epoch means of the step metrics) and
    evaluate()'s keys."""
    acc, final = run.accelerator, {}
    for epoch in range(run.epoch + 1, cfg.epochs + 1):
        run.model.train()
        run.train_loader.set_epoch(epoch)
        window, seen = [], []
        bar = progress(run.train_loader, desc=f"{group} epoch {epoch}/{cfg.epochs}",
                       disable=not acc.is_main_process)
        for batch in bar:
            t0 = time.perf_counter()
            metrics = _train_batch(run, train_step, batch, cfg.optim.max_grad_norm, group)
            run.step += 1
            metrics["step_time_s"] = time.perf_counter() - t0
            window.append(metrics), seen.append(metrics)
            if run.step % cfg.log_every == 0:
                run.tracker.log(run.step, mean_metrics(acc, window))
                window = []
            bar.set_postfix(loss=f"{metrics[f'{group}/loss']:.4f}")
        if window:  # the end of the epoch closes the last window
            run.tracker.log(run.step, mean_metrics(acc, window))
        train_means = {f"train/{k.split('/')[-1]}": v for k, v in mean_metrics(acc, seen).items() if "/" in k}
        final = {"epoch": epoch, **train_means, **evaluate(), "skipped_steps": run.skipped_steps}
        run.tracker.log(run.step, final)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in final.items() if isinstance(v, float)})
        run.epoch = epoch
        extra = {"epoch": run.epoch, "step": run.step, "skipped_steps": run.skipped_steps}
        save_checkpoint_atomic(run.checkpoint_dir, accelerator=acc, model=run.model, optimizer=run.optimizer,
                               scheduler=run.scheduler, extra=extra)
    return final


def finish_epoch_run(run: EpochRun, tokenizer, out: Path, merge_lora: bool, final: dict, plot) -> dict:
    """After training: close the tracker, save `out/policy`, draw the curves (`plot(out)`), write summary.json."""
    import json

    from rlhfkit.atomic import write_text

    run.accelerator.wait_for_everyone()
    run.tracker.close()
    if run.accelerator.is_main_process:
        save_policy(run.accelerator.unwrap_model(run.model).lm, tokenizer, out / "policy", merge_lora)
        plot(out)
        write_text(out / "summary.json", json.dumps(final, indent=2))
    return final


def _train_batch(run: EpochRun, train_step, batch, max_grad_norm: float, group: str) -> dict[str, float]:
    """One micro-batch: loss, backward and (on accumulation boundaries) a clipped optimiser step."""
    acc = run.accelerator
    with acc.accumulate(run.model):
        with acc.autocast():
            loss, metrics = train_step(batch)
        grad_norm = float("nan")
        if all_finite(loss):
            acc.backward(loss)
            grad_norm = clip_and_step(acc, run.model, run.optimizer, run.scheduler, max_grad_norm)
        else:
            if not run.skipped_steps:
                log.warning("non-finite %s loss: batch skipped (counted in skipped_steps)", group)
            run.skipped_steps += 1
            run.optimizer.zero_grad(set_to_none=True)
    return {**metrics, f"{group}/grad_norm": grad_norm, f"{group}/lr": run.scheduler.get_last_lr()[0]}


def mean_metrics(accelerator, rows: list[dict[str, float]]) -> dict[str, float]:
    """Per key: the mean of the finite values over `rows`, then over processes (NaN if none is finite)."""
    keys = list(rows[0])
    means = []
    for k in keys:
        finite = [r[k] for r in rows if math.isfinite(r[k])]
        means.append(sum(finite) / len(finite) if finite else float("nan"))
    reduced = accelerator.reduce(torch.tensor(means, dtype=torch.float64), "mean")  # [K]
    return dict(zip(keys, reduced.tolist()))
