"""`rlhfkit eval`: any checkpoints side by side with the same evaluation and report as the demo."""

from __future__ import annotations

import json
from pathlib import Path

from rlhfkit.atomic import write_text
from rlhfkit.config import EvalConfig, save_config, to_dict
from rlhfkit.data.readers import load_prompts
from rlhfkit.device import resolve_dtypes
from rlhfkit.eval import gold
from rlhfkit.eval.compare import evaluate_policies, save_evaluation
from rlhfkit.models.reward import RewardModel


def run_eval(cfg: EvalConfig) -> dict:
    cfg = resolve_dtypes(cfg)  # `auto` -> bf16 or fp32 for this machine
    policies = cfg.named_policies
    baseline = next(iter(policies))
    prompts, _ = load_prompts(cfg.prompts)
    prompts = prompts[: cfg.max_prompts] if cfg.max_prompts else prompts
    out = Path(cfg.output)
    save_config(cfg, out / "config.yaml")
    rm = RewardModel.from_pretrained(cfg.reward_model) if cfg.reward_model else None
    result = evaluate_policies(policies, prompts, reference=cfg.reference or policies[baseline],
                               gen_cfg=cfg.generation, reward_model=rm,
                               gold=gold.gold_rewards if cfg.gold else None, batch_size=cfg.batch_size,
                               seed=cfg.seed, samples_per_prompt=cfg.samples_per_prompt,
                               bf16=cfg.dtype == "bf16")
    methods = save_evaluation(out / "eval" / "eval.json", result, baseline=baseline, seed=cfg.seed)
    summary = {"methods": methods, "baseline": baseline, "n_eval_prompts": len(prompts),
               "config": to_dict(cfg)}
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    from rlhfkit.report.html import build_report

    build_report(out)
    return summary
