"""What every trainer shares: seeding, accelerate, optimiser and schedule, NaN guard, checkpoints, resume."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import numpy as np
import torch

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
