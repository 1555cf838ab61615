"""Best-of-n against the reward model: N samples per held-out prompt from the SFT policy, the RM's best kept.

Best-of-n (rejection sampling, reranking) is the training-free baseline of Nakano et al. 2021 (WebGPT, arXiv
2112.09332) and Gao et al. 2022 (arXiv 2210.10760): draw n responses from π_sft, return the one the proxy
(the learned RM) scores highest. Its gold reward at growing n traces over-optimisation without any training.

From N samples per prompt, every n ≤ N is evaluated with the unbiased estimator over all n-subsets (the one
WebGPT and Gao et al. use): sort the samples by proxy ascending; the sample of rank j (1-based) is the best
of a uniformly random n-subset with probability C(j−1, n−1) / C(N, n). So n = 1 is the plain mean over the N
samples (the SFT policy itself) and n = N is the proxy's argmax. KL(π_bon ‖ π_sft) is the analytic
log n − (n−1)/n (Stiennon et al. 2020; Gao et al. 2022), an upper bound on the true KL (Beirami et al.
2024, arXiv 2401.01879) and the value every best-of-n frontier in the literature plots.

The evaluation rows follow `rlhfkit.eval.compare` (ROW_KEYS), so `summarize`, `save_evaluation` and the report
treat "bon<n>" like any trained policy. The baseline "sft" is n = 1, the mean over the same N samples: both
methods see the same samples, so the paired gold difference carries no extra sampling noise.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rlhfkit.atomic import write_text
from rlhfkit.config import save_config, to_dict
from rlhfkit.data.readers import Prompt, load_prompts, prompt_text
from rlhfkit.device import resolve_dtypes
from rlhfkit.eval import stats
from rlhfkit.eval.compare import sample_policy, save_evaluation
from rlhfkit.eval.gold import gold_rewards
from rlhfkit.losses import bon_kl  # KL(π_bon ‖ π_sft) = log n − (n−1)/n
from rlhfkit.models.load import load_causal_lm, load_tokenizer
from rlhfkit.models.reward import RewardModel

log = logging.getLogger(__name__)

BASELINE = "sft"  # the n = 1 row: the SFT policy's mean over its samples


def bon_weights(proxy: Sequence[float], n: int) -> np.ndarray:
    """P(sample i is the proxy-best of a uniformly random n-subset of the N samples), for each i: [N].

    Sorted by proxy ascending, the sample of rank j has weight C(j−1, n−1) / C(N, n); the weights sum to 1.
    Ties: a subset's best is drawn uniformly among its tied maxima, so tied samples share the mean of their
    ranks' weights (exact: rank order within a tie is then a uniformly random permutation, independent of
    the subset). Without this a tie would be broken by sample order, favouring whichever came first.

    Args:
        proxy: [N] finite proxy (RM) scores of one prompt's samples.
        n: subset size, 1 <= n <= N.
    Returns:
        [N] weights in the samples' order.
    Raises:
        ValueError: n outside [1, N], or a non-finite proxy score.
    """
    proxy = np.asarray(proxy, dtype=float)  # [N]
    size = proxy.size
    if not 1 <= n <= size:
        raise ValueError(f"best-of-{n} needs 1 <= n <= N = {size} samples")
    if not np.isfinite(proxy).all():
        raise ValueError("proxy scores must be finite")
    order = np.argsort(proxy, kind="stable")  # [N] indices, ascending proxy
    total = math.comb(size, n)
    by_rank = np.array([math.comb(j - 1, n - 1) / total for j in range(1, size + 1)])  # [N], int / int: exact
    _, tie_group, tie_count = np.unique(proxy[order], return_inverse=True, return_counts=True)  # [N], [U]
    shared = np.bincount(tie_group, weights=by_rank) / tie_count  # [U] mean weight of each tie group
    weights = np.empty(size)  # [N]
    weights[order] = shared[tie_group]
    return weights


def bon_expected(proxy: Sequence[float], gold: Sequence[float] | None, n: int) -> tuple[float, float | None]:
    """E[proxy of the best], E[gold of the best] of best-of-n, unbiased from N >= n samples of one prompt.

    E[f(best)] = Σ_i w_i f(y_i) with w = `bon_weights(proxy, n)` (see there for the formula and ties).

    Args:
        proxy: [N] RM scores; gold: [N] gold scores of the same samples, or None.
    Returns:
        (proxy_of_best, gold_of_best); the second is None without gold.
    """
    weights = bon_weights(proxy, n)  # [N]
    gold_of_best = None if gold is None else float(weights @ np.asarray(gold, dtype=float))
    return float(weights @ np.asarray(proxy, dtype=float)), gold_of_best


def curve_ns(max_n: int) -> list[int]:
    """n = 1, 2, 4, ... up to max_n, and max_n itself (e.g. 12 -> [1, 2, 4, 8, 12])."""
    ns = [2**k for k in range(max_n.bit_length()) if 2**k <= max_n]
    return ns if ns[-1] == max_n else [*ns, max_n]


def sample_and_score(policy: str, prompts: list[Prompt], gen_cfg, *, reward_model, num_samples: int,
                     gold: Callable | None = None, batch_size: int = 32, seed: int = 0,
                     use_chat_template: bool = True, bf16: bool = False) -> list[dict]:
    """`num_samples` responses per prompt from `policy`, scored by the RM (proxy) and `gold`.

    Each prompt is repeated N times in a row, so one batched `generate` per `batch_size` sequences samples
    several prompts' groups at once (`compare.sample_policy`, seeded by `seed`).
    Returns one dict per prompt: {"prompt", "responses" [N], "rm_reward" [N], "gold_reward" [N] or None,
    "response_len" [N], "ended" [N]}."""
    tokenizer = load_tokenizer(policy, padding_side="left")
    lm = load_causal_lm(policy).eval()
    repeated = [p for p in prompts for _ in range(num_samples)]  # [P·N], each prompt's samples together
    log.info("best-of-n: sampling %d responses for each of %d prompts", num_samples, len(prompts))
    # no reference: best-of-n's KL is the analytic `bon_kl(n)`, so no forward pass for a sampled one
    samples = sample_policy(lm, None, tokenizer, repeated, gen_cfg, batch_size=batch_size, seed=seed,
                            use_chat_template=use_chat_template, bf16=bf16)
    texts = [prompt_text(p) for p in repeated]
    responses = [s["response"] for s in samples]
    rm_scores = reward_model.score(texts, responses)
    gold_scores = gold(texts, responses) if gold is not None else None
    out = []
    for i, prompt in enumerate(prompts):
        group = slice(i * num_samples, (i + 1) * num_samples)
        out.append({"prompt": prompt_text(prompt), "responses": responses[group],
                    "rm_reward": [float(r) for r in rm_scores[group]],
                    "gold_reward": None if gold_scores is None else [float(g) for g in gold_scores[group]],
                    "response_len": [s["response_len"] for s in samples[group]],
                    "ended": [s["ended"] for s in samples[group]]})
    return out


def best_of_n_rows(samples: list[dict], n: int, name: str | None = None) -> list[dict]:
    """Per-prompt rows in `compare`'s schema for the baseline "sft" (n = 1) and best-of-n (`name`, "bon<n>").

    Each ROW_KEYS figure is the estimator's expectation: Σ_i w_i x_i with w = `bon_weights` (uniform for
    n = 1); kl is 0 for sft (it is the reference) and `bon_kl(n)` for best-of-n; eos_rate is E[ended].
    `response` is a real draw: the first sample for sft, the proxy-best of the first n samples for bon.

    Args:
        samples: `sample_and_score`'s output (each with N >= n samples).
    Returns:
        [{"prompt", "sft": {...}, name: {...}}] for `compare.save_evaluation(..., baseline="sft")`.
    """
    name = name or f"bon{n}"
    rows = []
    for s in samples:
        size = len(s["rm_reward"])
        first_n_best = int(np.argmax(s["rm_reward"][:n]))  # argmax: first of tied maxima
        rows.append({"prompt": s["prompt"],
                     BASELINE: _row(s, np.full(size, 1 / size), kl=0.0, response=s["responses"][0]),
                     name: _row(s, bon_weights(s["rm_reward"], n), kl=bon_kl(n),
                                response=s["responses"][first_n_best])})
    return rows


def _row(sample: dict, weights: np.ndarray, kl: float, response: str) -> dict:
    """One method's ROW_KEYS figures for one prompt: the `weights`-average of each per-sample value."""
    average = lambda key: float(weights @ np.asarray(sample[key], dtype=float))  # noqa: E731
    gold = None if sample["gold_reward"] is None else average("gold_reward")
    return {"response": response, "gold_reward": gold, "rm_reward": average("rm_reward"), "kl": kl, "response_len": average("response_len"),
            "eos_rate": average("ended")}


def bon_points(proxy, gold=None, ns: Sequence[int] | None = None, seed: int = 0) -> list[dict]:
    """Best-of-n for each n in `ns`: the mean over prompts of E[proxy of best] and E[gold of best].

    Args:
        proxy: [P, N] RM scores; gold: [P, N] gold scores of the same samples, or None.
        ns: subset sizes, each 1 <= n <= N (default `curve_ns(N)`: 1, 2, 4, ..., N).
        seed: seeds the percentile bootstrap over prompts (`stats.bootstrap_ci`).
    Returns:
        [{"n", "kl", "rm_reward", "rm_reward_ci95", "gold_reward", "gold_reward_ci95"}] in `ns` order, named
        as in `compare.summarize`; kl = `bon_kl(n)`; the gold keys are absent without gold.
    """
    proxy = np.asarray(proxy, dtype=float)  # [P, N]
    ns = curve_ns(proxy.shape[1]) if ns is None else list(ns)
    curve = []
    golds = [None] * len(proxy) if gold is None else np.asarray(gold, dtype=float)  # [P, N]
    for n in ns:
        per_prompt = [bon_expected(p, g, n) for p, g in zip(proxy, golds)]  # P × (proxy, gold) of the best
        point = {"n": n, "kl": bon_kl(n)}
        columns = {"rm_reward": [p for p, _ in per_prompt]}
        if gold is not None:
            columns["gold_reward"] = [g for _, g in per_prompt]
        for key, values in columns.items():
            mean, low, high = stats.bootstrap_ci(values, seed=seed)
            point.update({key: mean, f"{key}_ci95": [low, high]})
        curve.append(point)
    return curve


def run_best_of_n(cfg) -> dict:
    """`rlhfkit bon`: sample, score, and write eval/eval.json (sft vs bon<n>, via `save_evaluation`),
    eval/bon_samples.json (every sample's scores, to re-derive any n <= N) and summary.json with the curve.

    Returns: the summary (methods, baseline, n_eval_prompts, samples_per_prompt, curve, config)."""
    cfg = resolve_dtypes(cfg)  # `auto` -> bf16 or fp32 for this machine
    out = Path(cfg.output)
    prompts, _ = load_prompts(cfg.prompts)
    prompts = prompts[: cfg.max_prompts] if cfg.max_prompts else prompts
    save_config(cfg, out / "config.yaml")
    rm = RewardModel.from_pretrained(cfg.reward_model)
    samples = sample_and_score(cfg.policy, prompts, cfg.generation, reward_model=rm,
                               num_samples=cfg.num_samples, gold=gold_rewards if cfg.gold else None,
                               batch_size=cfg.batch_size, seed=cfg.seed,
                               use_chat_template=cfg.use_chat_template, bf16=cfg.dtype == "bf16")
    write_text(out / "eval" / "bon_samples.json", json.dumps(samples))
    name = f"bon{cfg.n}"
    sampler = {k: getattr(cfg.generation, k) for k in ("temperature", "top_p", "top_k", "max_new_tokens")}
    result = {"policies": [BASELINE, name], "rows": best_of_n_rows(samples, cfg.n, name), "sampler": sampler}
    methods = save_evaluation(out / "eval" / "eval.json", result, baseline=BASELINE, seed=cfg.seed)
    curve = bon_points([s["rm_reward"] for s in samples],
                      [s["gold_reward"] for s in samples] if cfg.gold else None, seed=cfg.seed)
    summary = {"methods": methods, "baseline": BASELINE, "n_eval_prompts": len(prompts),
               "samples_per_prompt": cfg.num_samples, "curve": curve, "config": to_dict(cfg)}
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
