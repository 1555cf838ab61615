"""Policies on held-out problems of a verifiable task: accuracy (pass@1, pass@k), format failures, KL, length.

The one producer of task statistics: `save_task_evaluation` writes eval.json with the per-problem rows and the
per-method statistics (`methods`); summary.json and the report copy them, never recompute them. Sampling and
KL are `compare.sample_policy`'s (one forward of the policy and the reference on the same batch, k1 summed
over the response); grading is `rlhfkit.tasks`'s. One name per figure, in a row and in `methods`:
`pass1` (mean correctness over a problem's n samples), `pass_k` (the unbiased pass@k at k = n),
`format_failure` (share of samples no answer could be read from), `kl`, `response_len`, `eos_rate`;
`<name>_ci95` is a 95% percentile-bootstrap interval over problems, `<name>_delta` the paired difference
from the baseline.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from rlhfkit import tasks
from rlhfkit.atomic import write_text
from rlhfkit.device import default_device
from rlhfkit.eval import stats
from rlhfkit.eval.compare import sample_policy
from rlhfkit.models.load import load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)

ROW_KEYS = ("pass1", "pass_k", "format_failure", "kl", "response_len", "eos_rate")  # per problem, per policy
CI_KEYS = ("pass1", "pass_k", "format_failure", "kl")  # with a bootstrap interval over problems
DELTA_KEYS = ("pass1", "pass_k", "format_failure")  # paired against the baseline
SAMPLES_KEPT = 4  # responses stored per problem and policy (the report shows a few)


def grade_problem(rows: list[dict], samples: list[dict]) -> dict:
    """One problem's figures from its n graded samples (`rows` its row repeated n times, `samples` the
    `sample_policy` dicts): {pass1, pass_k, n_correct, n, format_failure, kl, response_len, eos_rate,
    samples: [{response, parsed, correct}] (the first SAMPLES_KEPT)}."""
    graded = tasks.grades([s["response"] for s in samples], [r["answer"] for r in rows],
                          [r["task"] for r in rows])
    n, c = len(samples), sum(g.correct for g in graded)
    kls = [s["kl"] for s in samples]
    return {"pass1": c / n, "pass_k": stats.pass_at_k(n, c, n), "n_correct": c, "n": n,
            "format_failure": sum(g.format_failure for g in graded) / n,
            "kl": None if None in kls else float(np.mean(kls)),
            "response_len": float(np.mean([s["response_len"] for s in samples])),
            "eos_rate": float(np.mean([s["ended"] for s in samples])),
            "samples": [{"response": s["response"], "parsed": g.parsed, "correct": g.correct}
                        for s, g in zip(samples[:SAMPLES_KEPT], graded)]}


def evaluate_task_policies(policies: dict[str, str], rows: list[dict], *, reference: str, gen_cfg,
                           samples_per_problem: int = 8, batch_size: int = 128, seed: int = 0,
                           use_chat_template: bool = True, bf16: bool = False, device=None) -> dict:
    """Sample every policy `samples_per_problem` times on each problem row ({"prompt", "answer", "task"}) with
    the same sampling noise, grade each sample, and measure KL to `reference`.

    Args:
        policies: {name: model folder or alias}; the first is the baseline. rows: the problems (`task_rows`).
        reference: the KL reference (and the tokenizer). gen_cfg: a GenerationConfig (τ, max_new_tokens).
        samples_per_problem: n, the k of pass@k. batch_size: sequences per generate call. seed: sampling seed.
        bf16: sample and score under bf16 autocast. device: where the models run (None: `default_device()`).
    Returns:
        {"policies": [names], "rows": [{"prompt", "answer", "task", name: `grade_problem`'s dict}],
         "sampler": {temperature, top_p, top_k, max_new_tokens}, "samples_per_problem": n}.
    """
    tokenizer = load_tokenizer(reference, padding_side="left")
    device = device or default_device()
    ref_lm = load_causal_lm(reference).eval().to(device)
    n = samples_per_problem
    repeated = [row for row in rows for _ in range(n)]  # [N·n], each problem's samples together
    out_rows = [{key: row[key] for key in ("prompt", "answer", "task")} for row in rows]
    for name, path in policies.items():
        log.info("evaluating %s (%s) on %d problems x %d samples", name, path, len(rows), n)
        lm = ref_lm if path == reference else load_causal_lm(path).eval().to(device)
        samples = sample_policy(lm, ref_lm, tokenizer, [r["prompt"] for r in repeated], gen_cfg,
                                batch_size=batch_size, seed=seed, use_chat_template=use_chat_template,
                                bf16=bf16)
        for i, row in enumerate(out_rows):
            row[name] = grade_problem(repeated[i * n : (i + 1) * n], samples[i * n : (i + 1) * n])
        del lm
    sampler = {key: getattr(gen_cfg, key) for key in ("temperature", "top_p", "top_k", "max_new_tokens")}
    return {"policies": list(policies), "rows": out_rows, "sampler": sampler, "samples_per_problem": n}


def summarize_task(result: dict, baseline: str, seed: int = 0) -> dict[str, dict]:
    """Per policy: the mean over problems of each ROW_KEYS figure, a 95% bootstrap interval over problems for
    CI_KEYS, and against `baseline` the paired difference `<key>_delta` (with `<key>_delta_ci95`) of
    DELTA_KEYS. Returns {name: {"n_problems", "samples_per_problem", figures...}}."""
    rows, out = result["rows"], {}
    for name in result["policies"]:
        column = lambda key, name=name: np.array([r[name][key] for r in rows], dtype=float)  # noqa: E731
        entry = {"n_problems": len(rows), "samples_per_problem": result["samples_per_problem"]}
        for key in ROW_KEYS:
            values = column(key)  # [N]; NaN where a figure was not measured (kl without a reference)
            if np.isnan(values).any():
                continue
            entry[key] = float(values.mean())
            if key in CI_KEYS:
                entry[f"{key}_ci95"] = list(stats.bootstrap_ci(values, seed=seed)[1:])
            if key in DELTA_KEYS and name != baseline:
                diff, low, high = stats.paired_bootstrap_diff(column(key, baseline), values, seed=seed)
                entry[f"{key}_delta"], entry[f"{key}_delta_ci95"] = diff, [low, high]
        out[name] = entry
    return out


def save_task_evaluation(path: str | Path, result: dict, baseline: str, seed: int = 0) -> dict[str, dict]:
    """Write eval.json: `result` plus `baseline` and `methods` (`summarize_task`). Returns the methods."""
    methods = summarize_task(result, baseline, seed)
    write_text(path, json.dumps({**result, "baseline": baseline, "methods": methods}, indent=1))
    return methods
