"""What every trainer shares: seeding, accelerate, optimiser and schedule, gradient accumulation, NaN guard,
clipping, saving the policy, and the epoch loop of the offline trainers (SFT, RM, DPO) with its checkpoints
and resume (the checkpoint format itself: trainers/checkpoint.py)."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from rlhfkit.atomic import versioned_dir, write_text
from rlhfkit.errors import ConfigError
from rlhfkit.tracking import Tracker, progress
from rlhfkit.trainers import checkpoint

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Fix python, numpy and torch RNGs (accelerate's set_seed also seeds every device)."""
    from accelerate.utils import set_seed

    set_seed(seed)


RANK_SEED_STRIDE = 100003  # ALGORITHMS.md §5: process r samples with seed + r·100003 (a prime)


def seed_sampling(seed: int, accelerator) -> None:
    """Give each process its own sampling stream: process r > 0 re-seeds every RNG with seed + r·100003
    (ALGORITHMS.md §5); identical seeds drew the same responses to the same prompt on every process. Call
    it once the models exist: they were built under the shared `seed_everything(seed)`, so anything random
    in them (LoRA's A, a critic's new head) is the same on every process under any engine, not only where
    DDP broadcasts rank 0's weights. Process 0 keeps its stream (offset 0): one process samples as before.
    The rank is torch.distributed's when it is initialised, else accelerate's process index."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else accelerator.process_index
    if rank > 0:
        seed_everything(seed + rank * RANK_SEED_STRIDE)


def make_accelerator(dtype: str = "fp32"):
    """accelerate's Accelerator: DDP/FSDP/DeepSpeed under `accelerate launch` (examples/accelerate/), this
    process's GPU when there is one, the CPU otherwise.

    bf16 = autocast with fp32 master weights (`auto` is resolved before: rlhfkit.device.resolve_dtypes).
    Gradient accumulation is ours (`accumulate_step`), not accelerate's: it weighs micro-batches by their
    tokens or pairs.
    Raises ConfigError when the launch asked for FSDP or DeepSpeed and accelerate did not turn it on."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    assert dtype in ("fp32", "bf16"), dtype  # `auto` must be resolved by now
    # one process may run several stages with different precisions (the demo): forget the previous
    # stage's settings but keep the process group (PartialState)
    AcceleratorState._reset_state(reset_partial_state=False)
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if fsdp_asked() and not torch.cuda.is_available() and os.environ.get("FSDP_VERSION", "1") != "2":
        # accelerate's FSDP1 plugin raises "no available devices" on CPU processes
        raise ConfigError("accelerate config 'fsdp_version: 1': FSDP1 needs GPUs; on CPU processes use "
                          "fsdp_version: 2 (examples/accelerate/fsdp2.yaml) or a deepspeed_*_cpu.yaml")
    accelerator = Accelerator(
        mixed_precision="bf16" if dtype == "bf16" else "no",
        # DeepSpeed turns on only when accelerate is not told `cpu`; on CPU processes it then runs over gloo
        # with DeepSpeed's CPU accelerator (`deepspeed_*_cpu.yaml`)
        cpu=not torch.cuda.is_available() and not deepspeed,
        step_scheduler_with_optimizer=False,  # the schedule steps once per optimiser step: accumulate_step
    )
    if deepspeed:
        use_real_ranks(accelerator)
    if (deepspeed or fsdp_asked()) and not torch.cuda.is_available():
        if fsdp_asked():
            use_fsdp2_on_cpu(accelerator)
        return_freed_memory()
    check_engine(accelerator)
    checkpoint.register_trainable_weights(accelerator)
    return accelerator


MMAP_THRESHOLD = 1 << 20  # bytes: blocks this large come from (and go back to) the OS


def return_freed_memory() -> None:
    """Make glibc hand large freed blocks back to the OS. ZeRO-3 gathers each layer's weights for every
    forward and backward and frees them after; glibc serves a block over its mmap threshold with mmap, but
    raises that threshold (up to 32 MB) each time such a block is freed, so the next gathers come from the
    heap, which keeps what it once held: the process's memory grows by the gathers' high-water mark (measured
    in bench/zero_memory.py: ZeRO-3 SFT on SmolLM2-135M, 2 processes, peak 3626 MB with glibc's default,
    3215 MB with the threshold fixed at 1 MB; DDP 3640 / 3614). Fixing the threshold (mallopt) stops the
    growth. A no-op where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_MMAP_THRESHOLD = -3  # malloc.h
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release_optimizer_state(optimizer) -> None:
    """Free the optimiser's moments once training is over and the last checkpoint is written: gathering the
    whole model to save it then fits beside what remains (AdamW's moments are 8 B per trained parameter,
    the largest share of the training state; under ZeRO they are this process's share)."""
    inner = optimizer
    while hasattr(inner, "optimizer"):  # accelerate's wrapper -> DeepSpeed's ZeRO optimiser -> torch's AdamW
        inner = inner.optimizer
    if isinstance(inner, torch.optim.Optimizer):
        inner.state.clear()


def use_real_ranks(accelerator) -> None:
    """accelerate 1.15 under DeepSpeed on CPU processes reports process_index 0 and num_processes 1 on every
    rank while torch.distributed (and DeepSpeed) run a world of N: every rank would take the same prompts, act
    as the main process, and gather or reduce over one process (measured with 2 ranks; its gather then fails).
    Set accelerate's process numbers from torch.distributed, so that every cross-process reduction, the
    data sharding and `is_main_process` follow what is really distributed."""
    import torch.distributed as dist
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    if not (dist.is_available() and dist.is_initialized()) or accelerator.num_processes == dist.get_world_size():
        return
    numbers = {"num_processes": dist.get_world_size(), "process_index": dist.get_rank(),
               "local_process_index": int(os.environ.get("LOCAL_RANK", dist.get_rank()))}
    for state in (PartialState, AcceleratorState):  # AcceleratorState copied PartialState's numbers
        state._shared_state.update(numbers)
    assert accelerator.num_processes == dist.get_world_size() and accelerator.process_index == dist.get_rank()


def fsdp_asked() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def use_fsdp2_on_cpu(accelerator) -> None:
    """accelerate 1.15 turns FSDP on only for GPU-type processes: with `distributed_type: FSDP` on CPU
    processes it runs MULTI_CPU, plain data parallelism. Its FSDP2 path itself (torch's `fully_shard` on a
    device mesh, DTensor parameters, sharded checkpoints through torch.distributed.checkpoint) runs on a gloo
    CPU mesh once the state says FSDP: set it, with the plugin accelerate built from the launch config.
    FSDP1 stays refused on CPU processes (`check_engine`): its FlatParameter path wants a device id."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU:
        return  # one process: nothing to shard over (check_engine refuses it)
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        return
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    # PartialState holds its own copy, which accelerate copies back over this one whenever some code builds an
    # AcceleratorState(); FSDP is in every list PartialState's collectives check, as MULTI_CPU is
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def check_engine(accelerator) -> None:
    """accelerate 1.15 turns FSDP on only for GPU-type processes; on CPU processes it silently runs such a
    config as plain data parallelism (measured: `distributed_type: FSDP` with 2 CPU processes gives
    MULTI_CPU): refuse whatever is still not the engine that was asked rather than train without the
    sharding. (On CPU processes FSDP2 shards once `use_fsdp2_on_cpu` sets the state, and DeepSpeed once
    accelerate is not told `cpu`: `make_accelerator`; FSDP1 there is refused before accelerate starts.)"""
    from accelerate.utils import DistributedType

    for engine, env, active in (("FSDP", "ACCELERATE_USE_FSDP", DistributedType.FSDP),
                                ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED)):
        if os.environ.get(env, "false").lower() == "true" and accelerator.distributed_type != active:
            raise ConfigError(
                f"accelerate config 'distributed_type: {engine.upper()}': needs GPUs, but this run is "
                f"{accelerator.distributed_type.value} on {accelerator.device}, where accelerate runs it without "
                "sharding; run it on GPUs, on 2+ CPU processes with fsdp_version: 2 or a deepspeed_*_cpu.yaml "
                "(examples/accelerate/), or launch plain data parallelism (accelerate launch --multi_gpu "
                "--num_processes N)")


def is_sharded(accelerator) -> bool:
    """(`accelerator`: an Accelerator or its AcceleratorState.) FSDP or DeepSpeed: the engine owns the prepared model's weights (split over processes under FSDP and
    ZeRO-3), so saving them whole needs every process (`whole_model`)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def frozen_matmul_dtype(dtype: str) -> torch.dtype | None:
    """The dtype to store frozen matmul weights in (`models.load.store_frozen_matmuls`): bf16 under bf16 autocast,
    unless FSDP or DeepSpeed own the weights (they flatten a model's parameters into buffers of one dtype);
    None (keep fp32) otherwise. Reads the accelerate state of this process (`make_accelerator` made it)
    without constructing an `AcceleratorState()`: in accelerate 1.15 that copies PartialState's numbers and
    distributed type over the accelerator's, and FSDP (which PartialState records as plain MULTI_GPU or
    MULTI_CPU) would read as data parallelism from then on, in rlhfkit and in accelerate's own `save_state`."""
    from accelerate.state import AcceleratorState

    sharded = is_sharded(SimpleNamespace(distributed_type=AcceleratorState._shared_state.get("distributed_type")))
    return torch.bfloat16 if dtype == "bf16" and not sharded else None


@contextlib.contextmanager
def whole_weights(accelerator):
    """Models loaded inside hold their whole weights on every process. Under DeepSpeed ZeRO-3 with
    `zero3_init_flag`, transformers would otherwise split them while loading (deepspeed.zero.Init), and a
    model used before `prepare` (DPO's reference pass) or never prepared (a frozen reward model) would hold
    empty tensors. `prepare` shards the trained model afterwards. (accelerate's own switch does nothing when
    its `zero3_init_flag` is already false, yet transformers still reads the ZeRO-3 config accelerate
    registers when its state starts (and again in `prepare`) and would split a model loaded under it: a
    frozen reward model held empty tensors that way ("'weight' must be 2-D"), as would the gathered copy
    `whole_model` saves. The registration is lifted here too, and restored after.)"""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        yield
        return
    from transformers.integrations import deepspeed as hf_deepspeed

    registered = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        with plugin.zero3_init_context_manager(enable=False):
            yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = registered


def whole_model(accelerator, model: torch.nn.Module, build) -> torch.nn.Module | None:
    """The trained weights of the prepared `model` in a module that holds them whole, for saving.

    Plain and DDP runs: the unwrapped model itself. FSDP/DeepSpeed: a collective that every process calls;
    the engine gathers the weights (`accelerator.get_state_dict`; ZeRO-3 gathers 16-bit weights and needs
    `zero3_save_16bit_model: true`) and the main process gets `build()`, a fresh model of the same
    architecture on the CPU, with them loaded; the other processes get None."""
    if not is_sharded(accelerator):
        return accelerator.unwrap_model(model)
    state = accelerator.get_state_dict(model)  # every process takes part; the main process gets the tensors
    if not accelerator.is_main_process:
        return None
    with whole_weights(accelerator):
        whole = build()
    missing, unexpected = whole.load_state_dict(state, strict=False)
    # a tied weight (LM head = embeddings) may be gathered under one of its names only
    names = {n for n, _ in whole.named_parameters()}
    tied = {n for n, _ in whole.named_parameters(remove_duplicate=False)} - names
    assert not unexpected and set(missing) <= tied, (missing[:3], unexpected[:3])
    return whole


def make_optimizer(model: torch.nn.Module, optim_cfg, total_steps: int):
    """AdamW over trainable parameters + warm-up/decay schedule (transformers.get_scheduler) over
    `total_steps` optimiser steps (not micro-batches)."""
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


def check_accumulation(accelerator, grad_accum_steps: int) -> None:
    """DeepSpeed steps its optimiser inside every backward, so `accumulate_step` cannot accumulate there."""
    from accelerate.utils import DistributedType

    if grad_accum_steps > 1 and accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ConfigError(f"config key 'optim.grad_accum_steps': {grad_accum_steps} is not supported under "
                          "DeepSpeed; set gradient_accumulation_steps in the DeepSpeed config instead")


def log_sharding(accelerator, model: torch.nn.Module) -> None:
    """One line saying what the engine really does with the prepared `model`: the engine, the processes and the
    share of the parameters this process holds (ZeRO-3 leaves placeholders of 0 elements and keeps a shard
    of each, `ds_numel` being the whole size; FSDP2's DTensors count the whole size, their local shard this
    process's), so a config that runs undistributed cannot pass unnoticed."""
    params = list(model.parameters())
    total = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    local = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor")  # ZeRO-3's shard
                else p.to_local().numel() if hasattr(p, "to_local")  # FSDP2's DTensor shard
                else p.numel() for p in params)
    plugin = accelerator.state.deepspeed_plugin
    engine = f"DeepSpeed ZeRO-{plugin.zero_stage}" if plugin is not None else accelerator.distributed_type.value
    log.info("%s over %d process(es): this process holds %d of %d parameter elements (%.0f%%)", engine,
             accelerator.num_processes, local, total, 100 * local / max(total, 1))


def declare_deepspeed_batch(accelerator, micro_batch_size: int) -> None:
    """Tell DeepSpeed the per-process micro-batch when no dataloader is prepared (the online trainers, whose
    batches are rollouts): accelerate's `prepare` refuses to start without it. DeepSpeed only books it
    (train_batch_size = micro-batch × accumulation × processes); rlhfkit's loop forms the batches. A value
    the DeepSpeed config sets itself is kept."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    config = plugin.deepspeed_config
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        config["train_micro_batch_size_per_gpu"] = micro_batch_size
    if config.get("train_batch_size", "auto") == "auto":
        config["train_batch_size"] = (config["train_micro_batch_size_per_gpu"] * accelerator.num_processes
                                      * config.get("gradient_accumulation_steps", 1))


# elements; buckets of H² = 4096 (a 64-wide test model) deadlocked a 2-process ZeRO-3 PPO run in DeepSpeed's
# reduce-scatter at its 4th step (not root-caused); with this floor such a model's gradients fit one bucket
MIN_BUCKET = 1 << 20


def size_deepspeed_buffers(accelerator, model: torch.nn.Module) -> None:
    """Size DeepSpeed's communication buffers to the model, as accelerate and HF's Trainer do for the keys a
    config file sets to "auto": reduce buckets of H² elements, ZeRO-3 prefetching 0.9·H², parameters under
    10·H elements kept whole (H = the model's hidden size). A config from accelerate's yaml (`deepspeed_*.yaml`)
    names none of these, and DeepSpeed's own defaults are sized for GPUs: ZeRO-3 allocates its 5e8-element
    reduce bucket up front, 1.9 GB in fp32 on every process, more than SmolLM2-135M's whole weights and
    AdamW state split over 2 processes (bench/zero_memory.py measured it). ZeRO-3 also keeps every gathered
    weight until 1e9 elements are live: here at most 10·H² (a few layers) stay gathered, and the rest is
    freed after use and gathered again (measured: 2739 -> 2581 MB per process, SFT with gradient
    checkpointing). A value the config sets is kept."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    hidden = next(m.config.hidden_size for m in model.modules() if hasattr(getattr(m, "config", None), "hidden_size"))
    zero = plugin.deepspeed_config.setdefault("zero_optimization", {})
    bucket = max(hidden * hidden, MIN_BUCKET)
    for key, value in {"reduce_bucket_size": bucket, "allgather_bucket_size": bucket,
                       "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
                       "stage3_param_persistence_threshold": 10 * hidden,
                       "stage3_max_live_parameters": 10 * hidden * hidden,
                       "stage3_max_reuse_distance": 10 * hidden * hidden}.items():
        if zero.get(key, "auto") == "auto":
            zero[key] = value


def check_clipping(accelerator, max_grad_norm: float) -> None:
    """DeepSpeed clips inside its engine at its config's `gradient_clipping` (accelerate fills "auto" with
    1.0) and never calls ours: refuse a run whose optim.max_grad_norm it would silently replace."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    clip = plugin.deepspeed_config.get("gradient_clipping", "auto")
    clip = 1.0 if clip == "auto" else float(clip)
    if clip != max_grad_norm:
        raise ConfigError(f"config key 'optim.max_grad_norm': {max_grad_norm}, but DeepSpeed clips at {clip} "
                          "(its config's gradient_clipping); set both to the same value")


def all_finite(*tensors: torch.Tensor) -> bool:
    """False when any value is NaN or inf."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@dataclass
class Learner:
    """What an optimiser step touches, after accelerate.prepare."""

    accelerator: Any
    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    max_grad_norm: float  # clip the global gradient norm to this; 0 = no clipping


@dataclass
class StepResult:
    rows: list[dict[str, float]]  # loss_fn's metrics, one per micro-batch
    grad_norm: float  # before clipping; nan when the step was skipped
    lr: float  # the learning rate this step used
    skipped: bool  # a non-finite loss (on any process) or gradient: no update anywhere


def accumulate_step(learner: Learner, micro_batches: list, loss_fn, count_fn) -> StepResult:
    """One optimiser step over `micro_batches` (gradient accumulation), on every process at once.

    Each L_i = loss_fn(mb_i) is a mean over n_i = count_fn(mb_i) units (tokens or pairs). The update follows
        ∇ (1/N) Σ_i n_i L_i,   N = Σ n_i over the micro-batches of every process,
    the mean over every unit of the step, so 2 micro-batches of 4 make the step that one batch of 8 makes,
    even when their token counts differ. Each backward gets L_i · n_i · W / N (DDP averages over the W
    processes); gradients are synchronised on the last backward only. Then clipping, AdamW, one schedule step.
    A non-finite loss on any process, or a non-finite gradient norm, skips the step on all (gradients
    dropped, schedule not stepped).

    Args: loss_fn(mb) -> (loss [], {name: float}); count_fn(mb) -> number of units in mb.
    """
    acc, model = learner.accelerator, learner.model
    counts = [float(count_fn(mb)) for mb in micro_batches]
    total = acc.reduce(torch.tensor(sum(counts), dtype=torch.float64, device=acc.device), "sum").item()  # N
    lr, rows, finite = learner.scheduler.get_last_lr()[0], [], True
    for i, mb in enumerate(micro_batches):
        is_last = i == len(micro_batches) - 1
        # a DDP forward must already know whether its backward synchronises: no_sync around both
        with contextlib.nullcontext() if is_last else acc.no_sync(model):
            with acc.autocast():
                loss, metrics = loss_fn(mb)
            rows.append(metrics)
            finite = finite and all_finite(loss)
            if is_last:  # the synchronising backward: every process takes it, or none does
                finite = acc.reduce(torch.tensor(float(finite), device=acc.device), "sum").item() == \
                    acc.num_processes
            if finite:
                acc.backward(loss * (counts[i] * acc.num_processes / total))
    grad_norm = float("nan")
    if finite:
        params = [p for p in model.parameters() if p.requires_grad]
        max_norm = learner.max_grad_norm if learner.max_grad_norm > 0 else float("inf")
        norm = acc.clip_grad_norm_(params, max_norm)
        if norm is not None:  # None: DeepSpeed clips inside its engine
            grad_norm = float(norm)  # the same on every process: gradients are synchronised
            finite = math.isfinite(grad_norm)
    if not finite:
        learner.optimizer.zero_grad(set_to_none=True)
        return StepResult(rows, grad_norm, lr, skipped=True)
    learner.optimizer.step()
    learner.scheduler.step()
    learner.optimizer.zero_grad(set_to_none=True)
    return StepResult(rows, grad_norm, lr, skipped=False)


def chunks(iterable, size: int):
    """Consecutive lists of `size` items (the last may be shorter)."""
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def save_policy(lm, tokenizer, folder: Path, merge_lora: bool) -> None:
    """The final policy as a normal HF folder (LoRA merged on request, else a peft adapter folder)."""
    from rlhfkit.models.load import restore_frozen_matmuls

    with versioned_dir(folder) as tmp:
        if merge_lora and hasattr(lm, "merge_and_unload"):
            lm = copy.deepcopy(lm)
            restore_frozen_matmuls(lm)  # merged in fp32, saved as a plain fp32 model
            lm = lm.merge_and_unload()
        lm.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


# ------------------------------------------------------------------------- epoch-based trainers (SFT, RM, DPO)
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
class EpochRun(Learner):
    """An epoch-based run after accelerate.prepare. `epoch` (finished epochs), `step` (training batches seen)
    and `skipped_steps` (optimiser steps skipped for a non-finite loss or gradient) are what a checkpoint
    restores, with the trainable weights, optimiser, schedule and RNG."""

    train_loader: Any = None
    eval_loader: Any = None
    tracker: Tracker | None = None
    checkpoint_dir: Path | None = None
    grad_accum_steps: int = 1
    epoch: int = 0
    step: int = 0
    skipped_steps: int = 0

    def trainer_state(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "skipped_steps": self.skipped_steps}


def trainable_policy(path: str, cfg) -> torch.nn.Module:
    """The causal LM at `path` as a `Policy` to train: gradient checkpointing if cfg.gradient_checkpointing
    (the trunk's activations and the LM-head logits recomputed in the backward pass), then LoRA adapters if
    cfg.lora.use_lora."""
    from rlhfkit.models.load import (
        apply_lora,
        enable_gradient_checkpointing,
        load_causal_lm,
        store_frozen_matmuls,
    )
    from rlhfkit.models.policy import Policy

    lm = load_causal_lm(path)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(lm)
    if cfg.lora.use_lora:
        lm = apply_lora(lm, cfg.lora, "CAUSAL_LM")
        if (frozen := frozen_matmul_dtype(cfg.dtype)) is not None:
            store_frozen_matmuls(lm, frozen)  # the base weights: bit-identical under autocast, no casts
    policy = Policy(lm, checkpoint_head=cfg.gradient_checkpointing)
    # FSDP's transformer-based wrapping (accelerate reads the prepared module's `_no_split_modules`) then shards
    # each decoder layer on its own, as it would the bare HF model, instead of the whole policy as one unit
    policy._no_split_modules = getattr(lm, "_no_split_modules", None)
    return policy


def prepare_epoch_run(cfg, accelerator, model, train_items: list, eval_items: list) -> EpochRun:
    """Loaders (a seeded shuffle per epoch; batches are lists of items), AdamW + schedule, accelerate.prepare,
    and --resume from `output/checkpoint`. Uses cfg.output, batch_size, epochs, seed, resume and optim."""
    accum = cfg.optim.grad_accum_steps
    check_accumulation(accelerator, accum)
    check_clipping(accelerator, cfg.optim.max_grad_norm)
    train_loader = DataLoader(train_items, cfg.batch_size, sampler=EpochSampler(len(train_items), cfg.seed),
                              collate_fn=list)
    eval_loader = DataLoader(eval_items, cfg.batch_size * 2, collate_fn=list)
    # optimiser steps: each process's share of the batches (accelerate gives every process as many), in
    # windows of `accum` (the last window of an epoch may be shorter)
    steps = math.ceil(math.ceil(len(train_loader) / accelerator.num_processes) / accum) * cfg.epochs
    optimizer, scheduler = make_optimizer(model, cfg.optim, steps)
    size_deepspeed_buffers(accelerator, model)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    log_sharding(accelerator, model)
    ckpt = Path(cfg.output) / "checkpoint"
    run = EpochRun(accelerator, model, optimizer, scheduler, cfg.optim.max_grad_norm, train_loader,
                   eval_loader, checkpoint_dir=ckpt, grad_accum_steps=accum)
    if cfg.resume and ckpt.exists():
        state = checkpoint.load_checkpoint(ckpt, accelerator)
        run.epoch, run.step, run.skipped_steps = state["epoch"], state["step"], state["skipped_steps"]
        log.info("resumed from %s after epoch %d (step %d)", ckpt, run.epoch, run.step)
    resume_step = run.step if cfg.resume else None
    run.tracker = Tracker(cfg.output, accelerator.is_main_process, resume_step=resume_step)
    return run


def train_epochs(run: EpochRun, cfg, train_step, count, evaluate, group: str) -> dict[str, float]:
    """The remaining epochs: optimiser steps over windows of cfg.optim.grad_accum_steps batches
    (`accumulate_step`: accumulation weighted by `count`, NaN guard, clipping, one schedule step); a row of
    step metrics (means over the last cfg.log_every batches) to metrics.jsonl; after each epoch `evaluate()`,
    an epoch row and an atomic checkpoint.

    Args: train_step(batch) -> (loss [] a mean over count(batch) units, {"<group>/<name>": float});
        evaluate() -> {"eval_<name>": float}.
    Returns: the last epoch row: `epoch`, `train/<name>` (epoch means of the step metrics), evaluate()'s keys
    and `skipped_steps`."""
    acc, final = run.accelerator, {}
    for epoch in range(run.epoch + 1, cfg.epochs + 1):
        run.model.train()
        run.train_loader.set_epoch(epoch)
        window, seen = [], []
        bar = progress(total=len(run.train_loader), desc=f"{group} epoch {epoch}/{cfg.epochs}",
                       disable=not acc.is_main_process)
        for batches in chunks(run.train_loader, run.grad_accum_steps):
            t0 = time.perf_counter()
            result = accumulate_step(run, batches, train_step, count)
            if result.skipped:
                if not run.skipped_steps:
                    log.warning("non-finite %s loss or gradient: optimiser step skipped (counted in "
                                "skipped_steps)", group)
                run.skipped_steps += 1
            step_time_s = (time.perf_counter() - t0) / len(batches)
            for i, metrics in enumerate(result.rows):
                run.step += 1
                is_last = i == len(result.rows) - 1  # the gradient norm exists once per optimiser step
                window.append({**metrics, f"{group}/grad_norm": result.grad_norm if is_last else float("nan"),
                               f"{group}/lr": result.lr, "step_time_s": step_time_s})
                seen.append(window[-1])
                if run.step % cfg.log_every == 0:
                    run.tracker.log(run.step, mean_metrics(acc, window))
                    window = []
            bar.update(len(batches))
            bar.set_postfix(loss=f"{result.rows[-1][f'{group}/loss']:.4f}")
        bar.close()
        if window:  # the end of the epoch closes the last window
            run.tracker.log(run.step, mean_metrics(acc, window))
        train_means = {f"train/{k.split('/')[-1]}": v for k, v in mean_metrics(acc, seen).items() if "/" in k}
        final = {"epoch": epoch, **train_means, **evaluate(), "skipped_steps": run.skipped_steps}
        run.tracker.log(run.step, final)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in final.items() if isinstance(v, float)})
        run.epoch = epoch
        checkpoint.save_checkpoint(run.checkpoint_dir, acc, run.trainer_state())
    return final


def finish_epoch_run(run: EpochRun, out: Path, final: dict, save_model, build) -> dict:
    """After training: close the tracker; gather the trained model (`whole_model`, on every process; `build()`
    makes an untrained one of the same architecture); on the main process `save_model(model)` and write
    summary.json."""
    run.accelerator.wait_for_everyone()
    run.tracker.close()
    release_optimizer_state(run.optimizer)  # the last epoch's checkpoint holds it
    model = whole_model(run.accelerator, run.model, build)
    if run.accelerator.is_main_process:
        save_model(model)
        write_text(out / "summary.json", json.dumps(final, indent=2))
    return final


def mean_metrics(accelerator, rows: list[dict[str, float]]) -> dict[str, float]:
    """Per key: the mean of the finite values over `rows`, then over processes (NaN if none is finite)."""
    keys = list(rows[0])
    means = []
    for k in keys:
        finite = [r[k] for r in rows if math.isfinite(r[k])]
        means.append(sum(finite) / len(finite) if finite else float("nan"))
    means = torch.tensor(means, dtype=torch.float64, device=accelerator.device)  # [K]; NCCL reduces GPU tensors
    reduced = accelerator.reduce(means, "mean")  # [K]
    return dict(zip(keys, reduced.tolist()))
