"""Policies side by side on held-out prompts: gold and learned-RM reward, KL to the reference, length, samples.

The one producer of held-out statistics: `save_evaluation` writes eval/eval.json with the per-prompt rows and
the per-method statistics (`methods`); summary.json and the report copy or read them, never recompute them.
One name per figure, the same in a row and in `methods` (whose `<name>_ci95` is the 95% interval):
`gold_reward`, `rm_reward`, `kl`, `response_len`, `eos_rate`; and, for each method against the baseline,
`gold_delta` and `win_rate_gold`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rlhfkit.atomic import write_text
from rlhfkit.data.readers import Prompt, prompt_text
from rlhfkit.device import autocast, default_device, model_device
from rlhfkit.eval import stats
from rlhfkit.models.load import load_causal_lm, load_tokenizer
from rlhfkit.rollout import generate, policy_logprobs
from rlhfkit.tracking import progress

log = logging.getLogger(__name__)

# the per-prompt figures of an eval row (each the mean over that prompt's samples); `methods` averages them
ROW_KEYS = ("gold_reward", "rm_reward", "kl", "response_len", "eos_rate")


def sample_policy(lm, ref_lm, tokenizer, prompts: list[Prompt], gen_cfg, *, batch_size: int = 32, seed: int = 0,
                  use_chat_template: bool = True, bf16: bool = False) -> list[dict]:
    """One sampled response per prompt with its KL to the reference, Σ_t log π(y_t) − log π_ref(y_t) (k1).

    log π and log π_ref come from one computation: a no-grad forward (`rollout.policy_logprobs`) of the
    policy and of the reference on the same batch under the same autocast, for every policy, so a policy that
    computes the reference's function (a copy of its folder, a fresh LoRA adapter) reads KL 0. (When `lm` is
    the reference object itself the two passes are one computation, run once.) Not the engine's sampling log-probs: its incremental bf16 decode rounds otherwise
    than a full forward, an error in every policy's KL (SmolLM2-135M, bf16 autocast, 24 tokens: a copy of the
    reference read -0.31 to +0.08 nats per response, mean -0.12; tests/slow/test_eval_kl.py).
    `ref_lm` None: no KL (`kl` None) and no forward pass, for a caller whose KL is not sampled (best-of-n).
    `bf16`: sample and score under bf16 autocast on the policy's device (faster matmuls only on a CPU with
    native bf16, `rlhfkit env`).
    Returns one dict per prompt: {response, kl, response_len, ended}."""
    torch.manual_seed(seed)  # every policy sees the same sampling noise stream
    rows = []
    for i in progress(range(0, len(prompts), batch_size), desc="eval sampling"):
        with torch.no_grad(), autocast(model_device(lm), enabled=bf16):
            roll = generate(lm, tokenizer, prompts[i : i + batch_size], gen_cfg, use_chat_template)
            kl = [None] * len(roll.responses)
            if ref_lm is not None:
                logprobs = policy_logprobs(lm, roll, gen_cfg.temperature)  # [B, T]
                ref_logprobs = logprobs if ref_lm is lm else policy_logprobs(ref_lm, roll, gen_cfg.temperature)
                kl = ((logprobs - ref_logprobs) * roll.mask).sum(1).tolist()  # [B]
        rows += [{"response": r, "kl": k, "response_len": int(n), "ended": bool(e)}
                 for r, k, n, e in zip(roll.responses, kl, roll.response_len.tolist(), roll.ended.tolist())]
    return rows


def evaluate_policies(policies: dict[str, str], prompts: list[Prompt], *, reference: str, gen_cfg,
                      reward_model=None, gold: Callable | None = None, batch_size: int = 32, seed: int = 0,
                      samples_per_prompt: int = 1, use_chat_template: bool = True, bf16: bool = False,
                      device: torch.device | str | None = None) -> dict:
    """Sample every policy on the same prompts; score with the learned RM and/or a gold function.

    The policies and the reference run on `device` (None: `rlhfkit.device.default_device()`); the reward
    model stays where it was loaded. Every policy's KL, the reference's own row included, is
    `sample_policy`'s: a forward of the policy and of the reference on the same batch.

    With `samples_per_prompt` > 1 each number is the mean over that prompt's samples (less sampling noise
    per prompt; the bootstrap still resamples prompts) and `response` is the first sample.
    Returns {"policies": [names], "rows": [{"prompt", name: {response, gold_reward, rm_reward, kl,
    response_len, eos_rate}}] (eos_rate: the share of the prompt's samples that ended with EOS),
    "sampler": {temperature, top_p, top_k, max_new_tokens}} (the report says when sampling was truncated)."""
    tokenizer = load_tokenizer(reference, padding_side="left")
    device = device or default_device()
    ref_lm = load_causal_lm(reference).eval().to(device)
    k = samples_per_prompt
    texts = [prompt_text(p) for p in prompts for _ in range(k)]  # [N·k], each prompt's samples together
    rows: list[dict] = [{"prompt": prompt_text(p)} for p in prompts]
    for name, path in policies.items():
        log.info("evaluating %s (%s) on %d prompts", name, path, len(prompts))
        # the reference's own row reuses the loaded model (no second copy): its one forward gives KL 0.0
        lm = ref_lm if path == reference else load_causal_lm(path).eval().to(device)
        repeated = [p for p in prompts for _ in range(k)]
        samples = sample_policy(lm, ref_lm, tokenizer, repeated, gen_cfg, batch_size=batch_size, seed=seed,
                                use_chat_template=use_chat_template, bf16=bf16)
        responses = [s["response"] for s in samples]
        rm_scores = reward_model.score(texts, responses) if reward_model is not None else [None] * len(texts)
        gold_scores = gold(texts, responses) if gold is not None else [None] * len(texts)
        for i, row in enumerate(rows):
            group = [{**s, "rm_reward": r, "gold_reward": g, "eos_rate": s["ended"]}
                     for s, r, g in zip(samples[i * k : (i + 1) * k], rm_scores[i * k : (i + 1) * k],
                                        gold_scores[i * k : (i + 1) * k])]
            row[name] = {key: _mean([s[key] for s in group]) for key in ROW_KEYS}
            row[name]["response"] = group[0]["response"]
        del lm
    sampler = {k: getattr(gen_cfg, k) for k in ("temperature", "top_p", "top_k", "max_new_tokens")}
    return {"policies": list(policies), "rows": rows, "sampler": sampler}


def _mean(values: list):
    """Mean of numbers (None when any is None, e.g. no reward model given)."""
    return None if any(v is None for v in values) else float(sum(values) / len(values))


def summarize(result: dict, baseline: str, seed: int = 0) -> dict[str, dict]:
    """Per policy: the mean of each ROW_KEYS figure, with a 95% percentile-bootstrap CI over prompts for
    gold_reward, rm_reward and kl; against `baseline`, the paired gold difference and the gold win rate.

    Returns {name: {"n", "gold_reward", "gold_reward_ci95", "rm_reward", "rm_reward_ci95", "kl", "kl_ci95",
    "response_len", "eos_rate"} + {"gold_delta", "gold_delta_ci95", "win_rate_gold", "win_rate_gold_ci95"}
    for the other policies}; a figure that was not scored (no RM, no gold) is left out."""
    rows, out = result["rows"], {}
    for name in result["policies"]:
        col = lambda key, name=name: np.array([r[name][key] for r in rows if r[name][key] is not None], dtype=float)  # noqa: E731
        entry = {"n": len(rows), "response_len": float(col("response_len").mean()),
                 "eos_rate": float(col("eos_rate").mean())}
        for key in ("gold_reward", "rm_reward", "kl"):
            values = col(key)
            if len(values):
                mean, low, high = stats.bootstrap_ci(values, seed=seed)
                entry[key] = mean
                entry[f"{key}_ci95"] = [low, high]
        if name != baseline and len(col("gold_reward")):
            base = np.array([r[baseline]["gold_reward"] for r in rows], dtype=float)
            rate, low, high = stats.win_rate_ci(base, col("gold_reward"), seed=seed)
            diff, dlow, dhigh = stats.paired_bootstrap_diff(base, col("gold_reward"), seed=seed)
            entry.update(win_rate_gold=rate, win_rate_gold_ci95=[low, high], gold_delta=diff,
                         gold_delta_ci95=[dlow, dhigh])
        out[name] = entry
    return out


def save_evaluation(path: str | Path, result: dict, baseline: str, seed: int = 0) -> dict[str, dict]:
    """Write eval.json: `result` (policies, rows, ...) plus `baseline` and `methods` (`summarize`).

    Returns: the methods, which the caller copies into summary.json rather than recomputing."""
    methods = summarize(result, baseline, seed)
    write_text(path, json.dumps({**result, "baseline": baseline, "methods": methods}, indent=1))
    return methods
