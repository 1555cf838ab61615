"""Reward-model training with the Bradley–Terry loss (seed section 5; ALGORITHMS.md "Reward model").

    for each epoch, for each minibatch of pairs (x, y_c, y_r):
        r = r_φ([x‖y_c ; x‖y_r])              one forward pass over chosen and rejected stacked
        L = −log σ(r_c − r_r − m)             losses.bradley_terry_loss (+ optional centring term)
        AdamW step with warm-up/decay, clipping, accumulation, NaN guard     trainers.loop.train_epochs
    after each epoch: held-out loss and accuracy P(r_c > r_r); atomic checkpoint (--resume per epoch)
    at the end: `output/model` (LoRA merged), a plain HF sequence classifier with its template
Details: dropout off; decoders get a pad token distinct from EOS so the score is read at the last real token.
"""

from __future__ import annotations

import copy
import logging
from functools import partial
from pathlib import Path

import torch

from rlhfkit import losses
from rlhfkit.atomic import versioned_dir
from rlhfkit.config import RMConfig, save_config
from rlhfkit.data.collate import collate_preferences
from rlhfkit.data.readers import PreferenceFields, load_preferences, load_with_held_out
from rlhfkit.device import resolve_dtypes
from rlhfkit.models.load import apply_lora, load_sequence_classifier, load_tokenizer
from rlhfkit.models.reward import RewardModel
from rlhfkit.trainers import loop

log = logging.getLogger(__name__)


def load_pairs(cfg: RMConfig) -> tuple[list, list, list[str]]:
    """Training and held-out pairs (from --eval-data or a seeded split) and the loaders' summaries."""
    f = cfg.fields
    fields = PreferenceFields(f.prompt_field, f.chosen_field, f.rejected_field, f.margin_field)
    train, held_out, reports = load_with_held_out(lambda path: load_preferences(path, fields), cfg.data,
                                                  cfg.eval_data, cfg.eval_fraction, cfg.seed)
    return train, held_out, [r.summary() for r in reports]


def rm_step(cfg: RMConfig, rm: RewardModel, pairs: list, device) -> tuple[torch.Tensor, dict[str, float]]:
    """One minibatch: the Bradley–Terry loss (mean over pairs, + centring). Returns (loss [], metrics)."""
    batch = {k: v.to(device) for k, v in collate_preferences(rm.encode, pairs).items()}
    r_c, r_r = rm.forward(batch).float().chunk(2)  # [B], [B]
    loss = losses.bradley_terry_loss(r_c, r_r, batch["margin"])  # []
    if cfg.center_rewards_coef:
        loss = loss + cfg.center_rewards_coef * ((r_c + r_r) ** 2).mean()
    return loss, {"rm/loss": loss.item(), "rm/accuracy": (r_c > r_r).float().mean().item(),
                  "rm/margin": (r_c - r_r).mean().item()}


@torch.no_grad()
def evaluate(rm: RewardModel, loader, accelerator) -> dict[str, float]:
    """Held-out BT loss, accuracy (share of r_c > r_r), reward mean/std over chosen and rejected: `eval_*`."""
    rm.model.eval()
    chosen, rejected, margins = [], [], []
    for pairs in loader:
        batch = {k: v.to(accelerator.device) for k, v in collate_preferences(rm.encode, pairs).items()}
        with accelerator.autocast():
            r_c, r_r = rm.forward(batch).float().chunk(2)  # [B], [B]
        r_c, r_r, m = accelerator.gather_for_metrics((r_c, r_r, batch["margin"]))
        chosen.append(r_c), rejected.append(r_r), margins.append(m)
    rm.model.train()
    if not chosen:
        return {}
    r_c, r_r, m = torch.cat(chosen), torch.cat(rejected), torch.cat(margins)
    both = torch.cat([r_c, r_r])
    return {
        "eval_loss": losses.bradley_terry_loss(r_c, r_r, m).item(),
        "eval_accuracy": (r_c > r_r).float().mean().item(),
        "eval_reward_mean": both.mean().item(),
        "eval_reward_std": both.std().item() if both.numel() > 1 else 0.0,
        "eval_n": r_c.numel(),
    }


def train_reward_model(cfg: RMConfig) -> dict[str, float]:
    """Train, evaluate each epoch, save `output/model` (+ metrics.jsonl, checkpoint/, summary.json)."""
    cfg = resolve_dtypes(cfg)  # `auto` -> bf16 or fp32 for this machine, before config.yaml is written
    loop.seed_everything(cfg.seed)
    out = Path(cfg.output)
    accelerator = loop.make_accelerator(cfg.dtype)
    train, held_out, summaries = load_pairs(cfg)
    for s in summaries:
        log.info(s)
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")

    tokenizer = load_tokenizer(cfg.base, padding_side="right")
    build = partial(reward_model, cfg, tokenizer)
    with loop.whole_weights(accelerator):
        model = build()
    # FSDP's transformer-based wrapping shards each class named here as a unit of its own: keep the layers,
    # leave embeddings to the root's unit (FSDP2 wrapping BERT's BertEmbeddings too failed in torch 2.13:
    # "Invariant encountered: value was None")
    model._no_split_modules = [n for n in (getattr(model, "_no_split_modules", None) or []) if "Embedding" not in n]
    run = loop.prepare_epoch_run(cfg, accelerator, model, train, held_out)
    rm = RewardModel(run.model, tokenizer, cfg.template, cfg.max_length)
    step = partial(rm_step, cfg, rm, device=accelerator.device)
    final = loop.train_epochs(run, cfg, step, len, partial(evaluate, rm, run.eval_loader, accelerator), "rm")
    return loop.finish_epoch_run(run, out, final, partial(save_reward_model, rm, out), build)


def reward_model(cfg: RMConfig, tokenizer) -> torch.nn.Module:
    """The untrained r_φ: cfg.base with a fresh scalar head (+ LoRA adapters with cfg.lora.use_lora)."""
    model = load_sequence_classifier(cfg.base, tokenizer=tokenizer)
    return apply_lora(model, cfg.lora, "SEQ_CLS") if cfg.lora.use_lora else model


def save_reward_model(rm: RewardModel, out: Path, model: torch.nn.Module) -> None:
    """Write the trained `model` (unwrapped, whole) as `out/model` atomically with `rm`'s tokenizer and
    template (LoRA merged, so it loads as a plain HF sequence classifier)."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    with versioned_dir(out / "model") as folder:
        RewardModel(model, rm.tokenizer, rm.template, rm.max_length).save(folder)
