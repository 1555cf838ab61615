"""The verifiable-reward demo: a built-in task's problems -> GRPO (and RLOO) with its exact grader -> held-out
accuracy of the starting and the trained policies -> summary.json and report.html.

Stages (each a `<stage>/done.json` marker, rerun when its settings change, as in `rlhfkit demo`):
    data    the task's train and held-out rows (rlhfkit.tasks.task_rows) as data/train.jsonl, heldout.jsonl
    grpo    `rlhfkit grpo` on data/train.jsonl with --reward-fn rlhfkit.tasks:correct (and :formatted at
            weight 0, logged only): grpo/config.yaml reruns it as the command (`rlhfkit grpo --config ...`)
    rloo    the same with RLOO, when asked (--algo grpo,rloo)
    eval    every policy on the held-out problems, eval_samples samples each (rlhfkit.eval.verifiable)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from rlhfkit import tasks
from rlhfkit.atomic import write_text
from rlhfkit.config import TaskDemoConfig, save_config, to_dict
from rlhfkit.demo import run_stage, write_jsonl
from rlhfkit.device import resolve_dtypes
from rlhfkit.eval.verifiable import evaluate_task_policies, save_task_evaluation
from rlhfkit.trainers import loop

log = logging.getLogger(__name__)

# the reward every method trains on: the grader, plus the format rate logged at weight 0 (not trained on)
REWARD_FNS = ["rlhfkit.tasks:correct", "rlhfkit.tasks:formatted=0"]
BASELINE = "sft"  # the starting policy's name in eval.json and summary.json
# bumped when the evaluation computes a figure differently, so a rerun in an old run folder re-evaluates
EVAL_VERSION = 1


def write_task_data(cfg: TaskDemoConfig, out: Path) -> dict:
    """Stage data: the task's train rows (train_problems of them, 0 = all) and held-out rows (eval_problems,
    0 = all), drawn with the seed, as JSON Lines; returns their counts."""
    train = tasks.task_rows(cfg.task, "train", cfg.train_problems or None, seed=cfg.seed)
    heldout = tasks.task_rows(cfg.task, "heldout", cfg.eval_problems or None, seed=cfg.seed)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "heldout.jsonl", heldout)
    task = tasks.get_task(cfg.task)
    return {"task": cfg.task, "description": task.description, "correct_when": task.correct_when,
            "n_train": len(train), "n_heldout": len(heldout)}


def method_config(cfg: TaskDemoConfig, algo: str, run: Path):
    """The task demo's group for `algo` with what the demo fills in: the policy, the train file, the task's
    reward functions, the output folder, the seed; the policy is saved with LoRA merged."""
    return dataclasses.replace(getattr(cfg, algo), policy=cfg.policy,
                               prompts=str(run / "data" / "train.jsonl"), reward_fn=list(REWARD_FNS),
                               reward_model=None, output=str(run / algo), seed=cfg.seed, merge_lora=True)


def train_method(cfg: TaskDemoConfig, algo: str, run: Path) -> dict:
    """Stage grpo / rloo: the command's own run on the train file (critic_free.train_critic_free)."""
    from rlhfkit.trainers.critic_free import train_critic_free

    return train_critic_free(method_config(cfg, algo, run))


def evaluate(cfg: TaskDemoConfig, policies: dict[str, str], run: Path) -> dict:
    """Stage eval: every policy on the held-out rows; eval/eval.json; returns the per-method statistics."""
    rows = [json.loads(line) for line in (run / "data" / "heldout.jsonl").read_text().splitlines() if line]
    bf16 = getattr(cfg, cfg.algos[0]).dtype == "bf16"
    result = evaluate_task_policies(policies, rows, reference=cfg.policy, gen_cfg=cfg.generation,
                                    samples_per_problem=cfg.eval_samples, seed=cfg.seed, bf16=bf16,
                                    batch_size=cfg.generation_batch_size)
    return save_task_evaluation(run / "eval" / "eval.json", result, baseline=BASELINE, seed=cfg.seed)


def stage_keys(cfg: TaskDemoConfig) -> dict[str, str]:
    """A hash per stage of the settings its output depends on, chained to the stages it reads."""
    c = to_dict(cfg)

    def digest(obj) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]

    keys = {"data": digest([c[k] for k in ("task", "seed", "train_problems", "eval_problems")]
                           + [tasks.HELDOUT_PERCENT])}
    for algo in cfg.algos:
        keys[algo] = digest([keys["data"], c["policy"], c[algo]])
    keys["eval"] = digest([keys["data"], [keys[a] for a in cfg.algos], c["policy"], c["generation"],
                           c["eval_samples"], c["generation_batch_size"], EVAL_VERSION])
    return keys


def run_task_demo(cfg: TaskDemoConfig) -> dict:
    """All stages, then summary.json and report.html in cfg.output_dir. Returns the summary."""
    cfg = resolve_dtypes(cfg)  # every group's `auto` -> bf16 or fp32 here (the stage keys read it)
    loop.seed_everything(cfg.seed)
    run, timings = Path(cfg.output_dir), {}
    save_config(cfg, run / "config.yaml")
    keys = stage_keys(cfg)
    stage = lambda name, fn: run_stage(name, run, cfg.force, fn, timings, keys[name])  # noqa: E731
    data = stage("data", lambda: write_task_data(cfg, run / "data"))
    trained = {algo: stage(algo, lambda algo=algo: train_method(cfg, algo, run)) for algo in cfg.algos}
    policies = {BASELINE: cfg.policy} | {algo: str(run / algo / "policy") for algo in cfg.algos}
    methods = stage("eval", lambda: evaluate(cfg, policies, run))
    summary = make_summary(cfg, data, methods, trained, timings)
    write_text(run / "summary.json", json.dumps(summary, indent=2))
    from rlhfkit.report.task_page import build_task_report

    build_task_report(run)
    return summary


def make_summary(cfg: TaskDemoConfig, data: dict, methods: dict, trained: dict, timings: dict) -> dict:
    """summary.json: the headline figures copied from the evaluation's statistics (`<figure>_sft` of the
    starting policy, `<figure>_rl` of the first method trained), the training's last-step metrics, timings and
    the config as it ran."""
    sft, rl = methods[BASELINE], methods[cfg.algos[0]]
    run = Path(cfg.output_dir)
    return {
        "task": cfg.task, "rl_method": cfg.algos[0], "baseline": BASELINE,
        "pass1_sft": sft["pass1"], "pass1_rl": rl["pass1"], "pass1_delta": rl["pass1_delta"],
        "pass1_delta_ci95": rl["pass1_delta_ci95"], "pass1_sft_ci95": sft["pass1_ci95"],
        "pass1_rl_ci95": rl["pass1_ci95"], "pass_k_sft": sft["pass_k"], "pass_k_rl": rl["pass_k"],
        "k": cfg.eval_samples, "format_failure_sft": sft["format_failure"],
        "format_failure_rl": rl["format_failure"], "kl_rl": rl["kl"], "kl_rl_ci95": rl["kl_ci95"],
        "response_len_sft": sft["response_len"], "response_len_rl": rl["response_len"],
        "n_train_problems": data["n_train"], "n_heldout_problems": data["n_heldout"],
        "steps": {algo: getattr(cfg, algo).steps for algo in cfg.algos},
        "wall_seconds": sum(timings.values()), "stage_seconds": timings, "data": data, "methods": methods,
        "training": trained,
        "config": {**to_dict(cfg), **{a: to_dict(method_config(cfg, a, run)) for a in cfg.algos}},
    }
