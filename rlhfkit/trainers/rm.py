"""Reward-model training with the Bradley–Terry loss (seed section 5; ALGORITHMS.md "Reward model").

    for each epoch, for each minibatch of pairs (x, y_c, y_r):
        r = r_φ([x‖y_c ; x‖y_r])              one forward pass over chosen and rejected stacked
        L = −log σ(r_c − r_r − m)             losses.bradley_terry_loss (+ optional centring term)
        AdamW step with warm-up/decay, gradient clipping and accumulation
    after each epoch: held-out loss and accuracy P(r_c > r_r); save the model atomically.
Details: dropout off; decoders get a pad token distinct from EOS so the score is read at the last real token.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from rlhfkit import losses
from rlhfkit.atomic import versioned_dir, write_text
from rlhfkit.config import RMConfig, save_config
from rlhfkit.data.collate import collate_preferences
from rlhfkit.data.readers import PreferenceFields, load_preferences, load_with_held_out
from rlhfkit.models.load import apply_lora, load_sequence_classifier, load_tokenizer
from rlhfkit.models.reward import RewardModel
from rlhfkit.report.plots import plot_series
from rlhfkit.tracking import Tracker, progress, read_metrics
from rlhfkit.trainers.loop import clip_and_step, make_accelerator, make_optimizer, seed_everything

log = logging.getLogger(__name__)


def load_pairs(cfg: RMConfig) -> tuple[list, list, list[str]]:
    """Training and held-out pairs (from --eval-data or a seeded split) and the loaders' summaries."""
    f = cfg.fields
    fields = PreferenceFields(f.prompt_field, f.chosen_field, f.rejected_field, f.margin_field)
    train, held_out, reports = load_with_held_out(lambda path: load_preferences(path, fields), cfg.data,
                                                  cfg.eval_data, cfg.eval_fraction, cfg.seed)
    return train, held_out, [r.summary() for r in reports]


@torch.no_grad()
def evaluate(rm: RewardModel, loader, accelerator) -> dict[str, float]:
    """Held-out BT loss, accuracy (share of r_c > r_r), reward mean/std over chosen and rejected."""
    rm.model.eval()
    chosen, rejected, margins = [], [], []
    for pairs in loader:
        batch = {k: v.to(accelerator.device) for k, v in collate_preferences(rm.encode, pairs).items()}
        r_c, r_r = rm.forward(batch).float().chunk(2)  # [B], [B]
        r_c, r_r, m = accelerator.gather_for_metrics((r_c, r_r, batch["margin"]))
        chosen.append(r_c), rejected.append(r_r), margins.append(m)
    if not chosen:
        return {}
    r_c, r_r, m = torch.cat(chosen), torch.cat(rejected), torch.cat(margins)
    both = torch.cat([r_c, r_r])
    return {
        "eval/loss": losses.bradley_terry_loss(r_c, r_r, m).item(),
        "eval/accuracy": (r_c > r_r).float().mean().item(),
        "eval/reward_mean": both.mean().item(),
        "eval/reward_std": both.std().item() if both.numel() > 1 else 0.0,
        "eval/n": r_c.numel(),
    }


def train_reward_model(cfg: RMConfig) -> dict[str, float]:
    """Train, evaluate each epoch, save `output/model` (+ metrics.jsonl, loss.png, accuracy.png)."""
    seed_everything(cfg.seed)
    out = Path(cfg.output)
    accelerator = make_accelerator(cfg.dtype, cfg.optim.grad_accum_steps)
    train, held_out, summaries = load_pairs(cfg)
    for s in summaries:
        log.info(s)
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")

    tokenizer = load_tokenizer(cfg.base, padding_side="right")
    model = load_sequence_classifier(cfg.base, tokenizer=tokenizer)
    if cfg.lora.use_lora:
        model = apply_lora(model, cfg.lora, "SEQ_CLS")
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(train, cfg.batch_size, shuffle=True, generator=generator, collate_fn=list)
    eval_loader = DataLoader(held_out, cfg.batch_size * 2, collate_fn=list)
    steps = math.ceil(len(train_loader) / accelerator.num_processes / cfg.optim.grad_accum_steps) * cfg.epochs
    optimizer, scheduler = make_optimizer(model, cfg.optim, steps)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    rm = RewardModel(model, tokenizer, cfg.template, cfg.max_length)
    tracker = Tracker(out, accelerator.is_main_process)
    start, step, final = time.time(), 0, {}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        bar = progress(train_loader, desc=f"rm epoch {epoch}/{cfg.epochs}", disable=not accelerator.is_main_process)
        epoch_loss, n = 0.0, 0
        for pairs in bar:
            with accelerator.accumulate(model):
                batch = {k: v.to(accelerator.device) for k, v in collate_preferences(rm.encode, pairs).items()}
                r_c, r_r = rm.forward(batch).float().chunk(2)  # [B], [B]
                loss = losses.bradley_terry_loss(r_c, r_r, batch["margin"])
                if cfg.center_rewards_coef:
                    loss = loss + cfg.center_rewards_coef * ((r_c + r_r) ** 2).mean()
                accelerator.backward(loss)
                clip_and_step(accelerator, model, optimizer, scheduler, cfg.optim.max_grad_norm)
            step += 1
            epoch_loss, n = epoch_loss + loss.item(), n + 1
            bar.set_postfix(loss=f"{epoch_loss / n:.4f}")
        final = {"epoch": epoch, "train/loss": epoch_loss / max(n, 1), "lr": scheduler.get_last_lr()[0]}
        final.update(evaluate(rm, eval_loader, accelerator))
        final["elapsed_s"] = time.time() - start
        tracker.log(step, final)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in final.items() if isinstance(v, float)})
        if accelerator.is_main_process:
            save_reward_model(accelerator, rm, out)
    accelerator.wait_for_everyone()
    tracker.close()
    if accelerator.is_main_process:
        plot_rm_curves(out)
        write_text(out / "summary.json", json.dumps(final, indent=2))
    return final


def save_reward_model(accelerator, rm: RewardModel, out: Path) -> None:
    """Write `out/model` atomically (LoRA merged, so it loads as a plain HF sequence classifier)."""
    model = accelerator.unwrap_model(rm.model)
    if hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    with versioned_dir(out / "model") as folder:
        RewardModel(model, rm.tokenizer, rm.template, rm.max_length).save(folder)


def plot_rm_curves(out: Path) -> None:
    """The seed's two plots: loss.png (train and held-out) and accuracy.png (held-out), per epoch."""
    rows = read_metrics(out / "metrics.jsonl")
    plot_series(rows, "epoch", {"train/loss": "train", "eval/loss": "held-out"}, out / "loss.png",
                "Bradley–Terry loss", "loss")
    plot_series(rows, "epoch", {"eval/accuracy": "held-out"}, out / "accuracy.png",
                "Held-out accuracy P(r_c > r_r)", "accuracy")
