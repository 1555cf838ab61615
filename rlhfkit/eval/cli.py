"""`rlhfkit eval`: any checkpoints side by side with the same evaluation and report as the demo."""

from __future__ import annotations

import json
from pathlib import Path

from rlhfkit.atomic import write_text
from rlhfkit.config import EvalConfig, save_config
from rlhfkit.data.readers import load_prompts
from rlhfkit.errors import ConfigError
from rlhfkit.eval import gold
from rlhfkit.eval.compare import evaluate_policies, summarize
from rlhfkit.models.reward import RewardModel


def named_policies(specs: list[str]) -> dict[str, str]:
    """["sft=path", "path2"] -> {"sft": "path", "path2-name": "path2"}; the first one is the baseline."""
    if len(specs) < 1:
        raise ConfigError("eval needs at least one --policy (repeat it to compare)")
    out = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else (Path(spec.rstrip("/")).name, "", spec)
        if name in out:
            raise ConfigError(f"config key 'policy': name {name!r} used twice; write NAME=PATH")
        out[name] = path
    return out


def run_eval(cfg: EvalConfig) -> dict:
    policies = named_policies(cfg.policy)
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
    write_text(out / "eval" / "eval.json", json.dumps(result, indent=1))
    methods = summarize(result, baseline=baseline, seed=cfg.seed)
    summary = {"methods": methods, "baseline": baseline, "n_eval_prompts": len(prompts),
               "config": json.loads(json.dumps(cfg.__dict__, default=lambda o: o.__dict__))}
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    from rlhfkit.report.html import build_report

    build_report(out)
    return summary
