"""Policies side by side on held-out prompts: gold and learned-RM reward, KL to the reference, length, samples."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from rlhfkit.data.readers import Prompt, prompt_text
from rlhfkit.eval import stats
from rlhfkit.models.load import load_causal_lm, load_tokenizer
from rlhfkit.rollout import generate, policy_logprobs
from rlhfkit.tracking import progress

log = logging.getLogger(__name__)


def sample_policy(lm, ref_lm, tokenizer, prompts: list[Prompt], gen_cfg, *, batch_size: int = 32, seed: int = 0,
                  use_chat_template: bool = True, bf16: bool = False) -> list[dict]:
    """One sampled response per prompt with its KL to the reference, Σ_t log π(y_t) − log π_ref(y_t) (k1).

    `bf16`: sample and score under bf16 autocast (~2.4x faster matmuls on CPU).
    Returns one dict per prompt: {response, kl, len, ended}."""
    torch.manual_seed(seed)  # every policy sees the same sampling noise stream
    rows = []
    for i in progress(range(0, len(prompts), batch_size), desc="eval sampling"):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            roll = generate(lm, tokenizer, prompts[i : i + batch_size], gen_cfg, use_chat_template)
            if lm is ref_lm:  # the reference itself: KL is 0, no forward passes needed
                kl = torch.zeros(len(roll.responses))  # [B]
            else:
                kl = ((policy_logprobs(lm, roll, gen_cfg.temperature)
                       - policy_logprobs(ref_lm, roll, gen_cfg.temperature)) * roll.mask).sum(1)  # [B]
        rows += [{"response": r, "kl": k, "len": int(n), "ended": bool(e)}
                 for r, k, n, e in zip(roll.responses, kl.tolist(), roll.response_len.tolist(), roll.ended.tolist())]
    return rows


def evaluate_policies(policies: dict[str, str], prompts: list[Prompt], *, reference: str, gen_cfg,
                      reward_model=None, gold: Callable | None = None, batch_size: int = 32, seed: int = 0,
                      samples_per_prompt: int = 1, use_chat_template: bool = True, bf16: bool = False) -> dict:
    """Sample every policy on the same prompts; score with the learned RM and/or a gold function.

    With `samples_per_prompt` > 1 each number is the mean over that prompt's samples (less sampling noise
    per prompt; the bootstrap still resamples prompts) and `response` is the first sample.
    Returns {"policies": [names], "rows": [{"prompt", name: {response, gold, rm, kl, len, ended}}]}."""
    tokenizer = load_tokenizer(reference, padding_side="left")
    ref_lm = load_causal_lm(reference).eval()
    k = samples_per_prompt
    texts = [prompt_text(p) for p in prompts for _ in range(k)]  # [N·k], each prompt's samples together
    rows: list[dict] = [{"prompt": prompt_text(p)} for p in prompts]
    for name, path in policies.items():
        log.info("evaluating %s (%s) on %d prompts", name, path, len(prompts))
        lm = ref_lm if path == reference else load_causal_lm(path).eval()
        repeated = [p for p in prompts for _ in range(k)]
        samples = sample_policy(lm, ref_lm, tokenizer, repeated, gen_cfg, batch_size=batch_size, seed=seed,
                                use_chat_template=use_chat_template, bf16=bf16)
        responses = [s["response"] for s in samples]
        rm_scores = reward_model.score(texts, responses) if reward_model is not None else [None] * len(texts)
        gold_scores = gold(texts, responses) if gold is not None else [None] * len(texts)
        for i, row in enumerate(rows):
            group = [{**s, "rm": r, "gold": g} for s, r, g in zip(samples[i * k : (i + 1) * k],
                                                                  rm_scores[i * k : (i + 1) * k],
                                                                  gold_scores[i * k : (i + 1) * k])]
            row[name] = {key: _mean([s[key] for s in group]) for key in ("kl", "len", "ended", "rm", "gold")}
            row[name]["response"] = group[0]["response"]
        del lm
    return {"policies": list(policies), "rows": rows}


def _mean(values: list):
    """Mean of numbers (None when any is None, e.g. no reward model given)."""
    return None if any(v is None for v in values) else float(sum(values) / len(values))


def summarize(result: dict, baseline: str, seed: int = 0) -> dict[str, dict]:
    """Per policy: mean gold / RM reward, KL and length with bootstrap 95% CIs; win rate vs `baseline` by gold."""
    rows, out = result["rows"], {}
    for name in result["policies"]:
        col = lambda key, name=name: np.array([r[name][key] for r in rows if r[name][key] is not None], dtype=float)  # noqa: E731
        entry = {"n": len(rows), "response_len": float(col("len").mean()), "eos_rate": float(col("ended").mean())}
        for key in ("gold", "rm", "kl"):
            values = col(key)
            if len(values):
                mean, low, high = stats.bootstrap_ci(values, seed=seed)
                entry[key] = mean
                entry[f"{key}_ci95"] = [low, high]
        if name != baseline and len(col("gold")):
            base = np.array([r[baseline]["gold"] for r in rows], dtype=float)
            rate, low, high = stats.win_rate_ci(base, col("gold"), seed=seed)
            diff, dlow, dhigh = stats.paired_bootstrap_diff(base, col("gold"), seed=seed)
            entry.update(win_rate_gold=rate, win_rate_gold_ci95=[low, high], gold_delta=diff,
                         gold_delta_ci95=[dlow, dhigh])
        out[name] = entry
    return out
