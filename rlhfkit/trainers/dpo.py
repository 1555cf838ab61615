"""Direct preference optimisation and its offline variants (ALGORITHMS.md "DPO family"; Rafailov et al. 2023).

    once, before any update: ref_c, ref_r = log π_ref(y|x) for every pair, cached on disk (keyed by model,
        data and tokenisation); π_ref = the initial policy (LoRA adapters disabled, or the weights before
        the first update)
    for each epoch, for each minibatch of pairs (x, y_c, y_r):
        1. π_c, π_r = Σ_t log π_θ(y_t | x, y_<t) of [x‖y_c ; x‖y_r]   one forward pass over both, stacked
        2. L = losses.dpo_loss(π_c, π_r, ref_c, ref_r, β)              sigmoid (DPO) | ipo | hinge (SLiC)
           or losses.simpo_loss(π_c, π_r, |y_c|, |y_r|, β, γ)          reference-free SimPO
        3. AdamW step with warm-up/decay, clipping, accumulation       trainers.loop.train_epochs
    each epoch: on held-out pairs the loss, implicit rewards r̂ = β (π − ref), accuracy P(r̂_c > r̂_r), margin
Details: dropout off; temperature 1; log-probs sum over the response tokens and EOS only (the chat-templated
prompt is masked); IPO uses length-averaged log-probs (Azar et al. 2023); no reference model is held during
training. Sanity check: before the first update π = π_ref, so r̂ = 0 and the sigmoid loss is log 2.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from functools import partial
from pathlib import Path

import torch

from rlhfkit import losses
from rlhfkit.atomic import write_bytes
from rlhfkit.config import DPOConfig, save_config, to_dict
from rlhfkit.data.collate import collate_preferences, encode_completions
from rlhfkit.data.readers import PreferenceFields, load_preferences, load_with_held_out
from rlhfkit.device import resolve_dtypes
from rlhfkit.models.load import load_tokenizer, reference_mode, resolve_model_path
from rlhfkit.models.policy import sequence_logprobs
from rlhfkit.tracking import progress
from rlhfkit.trainers import loop

log = logging.getLogger(__name__)

CACHE_VERSION = "rlhfkit-ref-logps-v1"


# --------------------------------------------------------------------------- the algorithm
def pair_logps(policy, pairs: list, encode, device) -> tuple[torch.Tensor, ...]:
    """(π_c, π_r, |y_c|, |y_r|), each [B]: summed response log-probs from one forward pass over 2B rows."""
    batch = {k: v.to(device) for k, v in collate_preferences(encode, pairs).items()}
    logps, n_tokens = sequence_logprobs(policy, batch)  # [2B], [2B]
    chosen, rejected = logps.float().chunk(2)  # [B], [B]
    len_c, len_r = n_tokens.chunk(2)  # [B], [B]
    return chosen, rejected, len_c, len_r


def preference_loss(cfg: DPOConfig, chosen, rejected, len_c, len_r, ref_c, ref_r):
    """Per-pair losses [B] and implicit rewards r̂_c, r̂_r [B] (detached) for cfg.loss; all inputs [B]."""
    if cfg.loss == "simpo":
        return losses.simpo_loss(chosen, rejected, len_c, len_r, cfg.simpo_beta, cfg.simpo_gamma)
    if cfg.loss == "ipo":  # Azar et al. 2023 average the log-probs over the response tokens
        chosen, rejected, ref_c, ref_r = chosen / len_c, rejected / len_r, ref_c / len_c, ref_r / len_r
    return losses.dpo_loss(chosen, rejected, ref_c, ref_r, cfg.beta, cfg.loss, cfg.label_smoothing)


def pair_metrics(per_pair, r_c, r_r, chosen, rejected) -> dict[str, float]:
    """Loss, implicit rewards, reward accuracy P(r̂_c > r̂_r) and margin, summed log-probs; means over pairs."""
    return {
        "loss": per_pair.mean().item(),
        "reward_accuracy": (r_c > r_r).float().mean().item(),
        "chosen_reward": r_c.mean().item(),
        "rejected_reward": r_r.mean().item(),
        "reward_margin": (r_c - r_r).mean().item(),
        "chosen_logps": chosen.detach().mean().item(),
        "rejected_logps": rejected.detach().mean().item(),
    }


def dpo_step(cfg: DPOConfig, policy, pairs: list, ref_c, ref_r, encode, device):
    """One minibatch: steps 1–2 of the module docstring. Returns (loss [], metrics `dpo/...`)."""
    chosen, rejected, len_c, len_r = pair_logps(policy, pairs, encode, device)  # 1. one forward pass
    per_pair, r_c, r_r = preference_loss(cfg, chosen, rejected, len_c, len_r, ref_c, ref_r)  # 2. [B] each
    metrics = pair_metrics(per_pair, r_c, r_r, chosen, rejected)
    return per_pair.mean(), {f"dpo/{k}": v for k, v in metrics.items()}


@torch.no_grad()
def evaluate(cfg: DPOConfig, policy, loader, pairs: list, ref: dict, encode, accelerator) -> dict[str, float]:
    """The same loss and metrics on the held-out pairs, gathered over processes; keys `eval_...`."""
    policy.eval()
    gathered = []
    for idx in loader:
        with accelerator.autocast():
            out = pair_logps(policy, [pairs[i] for i in idx], encode, accelerator.device)
        ref_c, ref_r = ref["eval_chosen"][idx], ref["eval_rejected"][idx]  # [B], [B]
        gathered.append(accelerator.gather_for_metrics((*out, ref_c, ref_r)))
    policy.train()
    if not gathered:
        return {}
    chosen, rejected, len_c, len_r, ref_c, ref_r = (torch.cat(t) for t in zip(*gathered))  # [N] each
    per_pair, r_c, r_r = preference_loss(cfg, chosen, rejected, len_c, len_r, ref_c, ref_r)
    return {f"eval_{k}": v for k, v in pair_metrics(per_pair, r_c, r_r, chosen, rejected).items()}


# --------------------------------------------------------------------------- reference log-probs, cached
def reference_key(cfg: DPOConfig) -> str:
    """sha256 of what the reference log-probs depend on: the model folder (path, file names, sizes, mtimes),
    the data files' bytes, the split and the tokenisation settings."""
    folder = resolve_model_path(cfg.policy).resolve()
    h = hashlib.sha256(CACHE_VERSION.encode())
    files = sorted(p for p in folder.iterdir() if p.is_file())
    stats = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    h.update(json.dumps([str(folder), stats]).encode())
    for data in (cfg.data, cfg.eval_data):
        _hash_path(h, data)
    settings = {"fields": to_dict(cfg.fields), "max_length": cfg.max_length, "dtype": cfg.dtype,
                "use_chat_template": cfg.use_chat_template,
                "split": None if cfg.eval_data else [cfg.eval_fraction, cfg.seed]}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def _hash_path(h, path: str | None) -> None:
    if path is None:
        h.update(b"<none>")
        return
    path = Path(path)
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            h.update(str(file.relative_to(path) if path.is_dir() else "").encode())
            with open(file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)


@torch.no_grad()
def compute_reference_logps(policy, pairs: list, encode, batch_size: int,
                            accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """(ref_c [N], ref_r [N]) under the current weights of `policy`, in the order of `pairs`."""
    chosen, rejected = [], []
    for start in progress(range(0, len(pairs), batch_size), desc="reference log-probs",
                          disable=not accelerator.is_main_process):
        with accelerator.autocast():
            c, r, _, _ = pair_logps(policy, pairs[start:start + batch_size], encode, accelerator.device)
        chosen.append(c.cpu()), rejected.append(r.cpu())
    cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0)  # noqa: E731
    return cat(chosen), cat(rejected)


def reference_logps(cfg: DPOConfig, policy, train: list, held_out: list, encode, accelerator) -> dict:
    """{train,eval}_{chosen,rejected} [N]: loaded from the cache when its key matches, else computed now
    (before any update; with LoRA under disabled adapters) and written atomically. Only the main process
    computes; the others wait and read the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    key = reference_key(cfg)
    path = Path(cfg.ref_cache or cfg.output) / f"ref_logps-{key[:16]}.safetensors"
    if accelerator.is_main_process:
        if path.is_file() and safe_open(str(path), "pt").metadata().get("key") == key:
            log.info("reference log-probs: reusing %s", path)
        else:
            log.info("reference log-probs: computing %d + %d pairs -> %s", len(train), len(held_out), path)
            mode = reference_mode(policy.lm) if cfg.lora.use_lora else contextlib.nullcontext()
            tensors = {}
            with mode:
                for split, pairs in (("train", train), ("eval", held_out)):
                    tensors[f"{split}_chosen"], tensors[f"{split}_rejected"] = compute_reference_logps(
                        policy, pairs, encode, cfg.batch_size * 2, accelerator)
            write_bytes(path, save(tensors, metadata={"key": key}))
    accelerator.wait_for_everyone()
    ref = load_file(str(path))
    assert (len(ref["train_chosen"]), len(ref["eval_chosen"])) == (len(train), len(held_out)), path
    return {k: v.to(accelerator.device) for k, v in ref.items()}


def no_reference(train: list, held_out: list, device) -> dict:
    """SimPO is reference-free: zeros keep the shapes (simpo_loss never reads them)."""
    sizes = {"train": len(train), "eval": len(held_out)}
    return {f"{split}_{side}": torch.zeros(n, device=device)
            for split, n in sizes.items() for side in ("chosen", "rejected")}


# --------------------------------------------------------------------------- the run
def train_dpo(cfg: DPOConfig) -> dict[str, float]:
    """Cache the reference, train, evaluate each epoch; writes `output/policy`, metrics.jsonl, checkpoint/."""
    cfg = resolve_dtypes(cfg)  # `auto` -> bf16 or fp32 for this machine, before config.yaml is written
    loop.seed_everything(cfg.seed)
    out = Path(cfg.output)
    accelerator = loop.make_accelerator(cfg.dtype)
    f = cfg.fields
    fields = PreferenceFields(f.prompt_field, f.chosen_field, f.rejected_field)
    train, held_out, reports = load_with_held_out(lambda path: load_preferences(path, fields), cfg.data,
                                                  cfg.eval_data, cfg.eval_fraction, cfg.seed)
    for r in reports:
        log.info(r.summary())
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")
    tokenizer = load_tokenizer(cfg.policy, padding_side="left")
    build = partial(loop.trainable_policy, cfg.policy, cfg)
    with loop.whole_weights(accelerator):  # whole: the reference pass runs before `prepare` shards it
        policy = build().to(accelerator.device)
    encode = partial(encode_completions, tokenizer, use_chat_template=cfg.use_chat_template,
                     max_length=cfg.max_length)
    t0 = time.perf_counter()
    ref = (no_reference(train, held_out, accelerator.device) if cfg.loss == "simpo"  # before any update:
           else reference_logps(cfg, policy, train, held_out, encode, accelerator))  # (and before --resume)
    reference_s = time.perf_counter() - t0  # 0-ish when the cache was reused
    # the loaders yield indices, so a batch finds its cached reference log-probs by position
    run = loop.prepare_epoch_run(cfg, accelerator, policy, list(range(len(train))),
                                 list(range(len(held_out))))

    def step(idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = dpo_step(cfg, run.model, [train[i] for i in idx], ref["train_chosen"][idx],
                                 ref["train_rejected"][idx], encode, accelerator.device)
        if run.step == 0 and cfg.loss != "simpo":
            check_step0(metrics, cfg.beta, cfg.dtype)
        return loss, metrics

    evaluate_fn = partial(evaluate, cfg, run.model, run.eval_loader, held_out, ref, encode, accelerator)
    final = loop.train_epochs(run, cfg, step, len, evaluate_fn, "dpo")  # the loss is a mean over pairs
    final["time/reference_s"] = reference_s
    save = lambda policy: loop.save_policy(policy.lm, tokenizer, out / "policy", cfg.merge_lora)  # noqa: E731
    return loop.finish_epoch_run(run, out, final, save, build)


STEP0_TOLERANCE = {"fp32": 0.01, "bf16": 0.5}  # nats, mean over the first batch (see check_step0)


def check_step0(metrics: dict[str, float], beta: float, dtype: str = "fp32") -> None:
    """Before the first update π = π_ref, so the implicit rewards are 0 up to rounding, unless the cached
    reference is stale. The rounding: the reference pass batches pairs differently (other padding, other
    matmul shapes); in fp32 that changes summed log-probs by ~1e-5 nats, under bf16 autocast by up to 0.8
    nats per sequence and 0.16 on the mean of 16 (measured on SmolLM2-135M, batches of 16 vs 8), hence the
    per-dtype tolerance. A stale cache (another model or data) is off by nats."""
    drift = max(abs(metrics["dpo/chosen_reward"]), abs(metrics["dpo/rejected_reward"])) / beta  # nats
    tolerance = STEP0_TOLERANCE[dtype]
    log.info("step-0 check: |mean log π − log π_ref| = %.2e nats (0 expected; %s rounding allows %g)",
             drift, dtype, tolerance)
    if drift > tolerance:
        log.warning("step 0: policy and cached reference differ by %.3f nats (more than %s rounding, %g): is "
                    "the cache stale?", drift, dtype, tolerance)

