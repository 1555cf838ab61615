"""Supervised fine-tuning of a causal LM on demonstrations (InstructGPT's step 1; Ouyang et al. 2022).

    tokenise each (x, y) as chat-templated x ‖ y ‖ EOS; with --packing, concatenate into max_length blocks
    for each epoch, for each minibatch:
        log π(y_t | x, y_<t) on the response block              models.policy.completion_logprobs
        L = −(1/N) Σ_t mask_t log π(y_t | x, y_<t)              N = Σ mask: a mean over the tokens that count,
                                                                the response and EOS (--completion-only) or
                                                                every token but the first (accumulating:
                                                                over every micro-batch of the step)
        AdamW step with warm-up/decay, clipping, accumulation   trainers.loop.train_epochs
    after each epoch: held-out NLL per token and perplexity exp(NLL); atomic checkpoint (--resume per epoch)
Details: dropout off; temperature 1; the prompt goes through the chat template exactly as at generation time
(rollout.encode_prompts), so the model learns to answer after `<|im_start|>assistant`; held-out examples are
never packed, so perplexities of packed and unpacked runs compare.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from pathlib import Path

import torch

from rlhfkit import losses
from rlhfkit.config import SFTConfig, save_config
from rlhfkit.data.collate import pack_completions, pad_completions, tokenize_completions
from rlhfkit.data.readers import load_demonstrations, load_with_held_out
from rlhfkit.device import resolve_dtypes
from rlhfkit.models.load import load_tokenizer
from rlhfkit.models.policy import completion_logprobs
from rlhfkit.trainers import loop

log = logging.getLogger(__name__)


def load_examples(cfg: SFTConfig, tokenizer) -> tuple[list, list]:
    """Tokenised training examples (packed with --packing) and held-out examples (never packed)."""
    load = partial(load_demonstrations, prompt_field=cfg.prompt_field, response_field=cfg.response_field)
    train, held_out, reports = load_with_held_out(load, cfg.data, cfg.eval_data, cfg.eval_fraction, cfg.seed)
    for r in reports:
        log.info(r.summary())
    tokenize = partial(tokenize_completions, tokenizer, use_chat_template=cfg.use_chat_template,
                       max_length=cfg.max_length, completion_only=cfg.completion_only)
    train = tokenize([d.prompt for d in train], [d.response for d in train])
    held_out = tokenize([d.prompt for d in held_out], [d.response for d in held_out]) if held_out else []
    if cfg.packing:
        n = len(train)
        train = pack_completions(train, cfg.max_length)
        log.info("packing: %d examples -> %d blocks of up to %d tokens", n, len(train), cfg.max_length)
    return train, held_out


def sft_step(policy, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-level NLL of the tokens that count. Returns (loss [], metrics)."""
    logprobs = completion_logprobs(policy, batch)  # [B, T]
    loss = -losses.masked_mean(logprobs, batch["mask"])  # []
    return loss, {"sft/loss": loss.item(), "sft/tokens": batch["mask"].sum().item()}


@torch.no_grad()
def evaluate(policy, loader, accelerator, pad_token_id: int) -> dict[str, float]:
    """Held-out NLL per counted token (summed over all examples, then divided) and perplexity exp(NLL)."""
    policy.eval()
    nll, tokens = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    for examples in loader:
        batch = _to(pad_completions(examples, pad_token_id), accelerator.device)
        with accelerator.autocast():
            logprobs = completion_logprobs(policy, batch)  # [B, T]
        row_nll, row_tokens = accelerator.gather_for_metrics((-(logprobs * batch["mask"]).sum(1),
                                                              batch["mask"].sum(1)))  # [B], [B]
        nll, tokens = nll + row_nll.double().sum().cpu(), tokens + row_tokens.double().sum().cpu()
    policy.train()
    if not tokens:
        return {}
    mean_nll = (nll / tokens).item()
    return {"eval_loss": mean_nll, "eval_perplexity": math.exp(mean_nll), "eval_tokens": tokens.item()}


def _to(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def counted_tokens(examples: list) -> int:
    """The tokens that count in a batch: the unit of SFT's token mean (and of accumulation's weights)."""
    return sum(sum(ex.mask) for ex in examples)


def train_sft(cfg: SFTConfig) -> dict[str, float]:
    """Train, evaluate each epoch, save `output/policy` (+ metrics.jsonl, checkpoint/, summary.json)."""
    cfg = resolve_dtypes(cfg)  # `auto` -> bf16 or fp32 for this machine, before config.yaml is written
    loop.seed_everything(cfg.seed)
    out = Path(cfg.output)
    accelerator = loop.make_accelerator(cfg.dtype)
    tokenizer = load_tokenizer(cfg.model, padding_side="left")
    train, held_out = load_examples(cfg, tokenizer)
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")
    build = partial(loop.trainable_policy, cfg.model, cfg)
    with loop.whole_weights(accelerator):
        policy = build()
    run = loop.prepare_epoch_run(cfg, accelerator, policy, train, held_out)
    pad = tokenizer.pad_token_id

    def step(examples: list) -> tuple[torch.Tensor, dict[str, float]]:
        return sft_step(run.model, _to(pad_completions(examples, pad), accelerator.device))

    evaluate_fn = partial(evaluate, run.model, run.eval_loader, accelerator, pad)
    final = loop.train_epochs(run, cfg, step, counted_tokens, evaluate_fn, "sft")
    save = lambda policy: loop.save_policy(policy.lm, tokenizer, out / "policy", cfg.merge_lora)  # noqa: E731
    return loop.finish_epoch_run(run, out, final, save, build)
