"""The end-to-end demo: SFT model -> simulated preferences -> reward model -> PPO -> held-out evaluation -> report.

Stages write into the run folder and end with a `<stage>/done.json` marker; a rerun skips finished stages whose
settings are unchanged (a changed setting reruns that stage and the stages after it).
The simulated annotator (rlhfkit.eval.gold) is the "human": a known gold reward, so the report can show
whether RLHF improved what the annotator wanted, not only what the learned reward model says.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
from pathlib import Path

import torch

from rlhfkit.atomic import write_text
from rlhfkit.config import DemoConfig, DPOConfig, RMConfig, save_config, to_dict
from rlhfkit.data.readers import load_prompts, read_rows
from rlhfkit.device import autocast, default_device, resolve_dtypes
from rlhfkit.eval import gold
from rlhfkit.eval.compare import evaluate_policies, save_evaluation
from rlhfkit.eval.prompts import shipped_prompts
from rlhfkit.models.load import load_causal_lm, load_tokenizer
from rlhfkit.models.reward import RewardModel
from rlhfkit.rollout import generate
from rlhfkit.tracking import progress
from rlhfkit.trainers import loop

log = logging.getLogger(__name__)

def split_prompts(cfg: DemoConfig) -> tuple[list, list]:
    """(train, held-out) prompts: the shipped fixed split, or a file's `split` column, or a seeded 80/20 split."""
    if cfg.prompts is None:
        return shipped_prompts("train"), shipped_prompts("heldout")
    prompts, _ = load_prompts(cfg.prompts)
    splits = [row.get("split") for _, row in read_rows(cfg.prompts)]
    if all(s in ("train", "heldout") for s in splits):
        return ([p for p, s in zip(prompts, splits) if s == "train"],
                [p for p, s in zip(prompts, splits) if s == "heldout"])
    order = list(range(len(prompts)))
    random.Random(cfg.seed).shuffle(order)
    cut = int(0.8 * len(order))
    return [prompts[i] for i in order[:cut]], [prompts[i] for i in order[cut:]]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def collect_preferences(cfg: DemoConfig, train_prompts: list, out: Path) -> dict:
    """Stage 2: K samples per prompt from the SFT policy (on `default_device()`), gold-scored, labelled with
    Bradley–Terry noise."""
    tokenizer = load_tokenizer(cfg.policy, padding_side="left")
    device = default_device()
    lm = load_causal_lm(cfg.policy).eval().to(device)
    n = cfg.rm_prompts + cfg.rm_val_prompts
    prompts = train_prompts[:n]
    repeated = [p for p in prompts for _ in range(cfg.samples_per_prompt)]
    responses: list[str] = []
    torch.manual_seed(cfg.seed)
    for i in progress(range(0, len(repeated), cfg.generation_batch_size), desc="sampling for labels"):
        with autocast(device, enabled=cfg.ppo.dtype == "bf16"):
            responses += generate(lm, tokenizer, repeated[i : i + cfg.generation_batch_size], cfg.generation).responses
    k = cfg.samples_per_prompt
    per_prompt = [responses[i * k : (i + 1) * k] for i in range(len(prompts))]
    scores = [gold.gold_rewards([p] * k, rs) for p, rs in zip(prompts, per_prompt)]
    pairs = gold.label_pairs(prompts, per_prompt, scores, cfg.label_temperature, cfg.seed, cfg.pairs_per_prompt,
                             cfg.min_gold_gap)
    train_set = set(prompts[: cfg.rm_prompts])
    write_jsonl(out / "prefs.jsonl", [p for p in pairs if p["prompt"] in train_set])
    write_jsonl(out / "prefs_val.jsonl", [p for p in pairs if p["prompt"] not in train_set])
    summary = {"n_prompts": len(prompts), "k": k, "n_pairs": len(pairs), "label_temperature": cfg.label_temperature,
               "min_gold_gap": cfg.min_gold_gap,
               "gold_agreement": sum(p["gold_agrees"] for p in pairs) / max(len(pairs), 1),
               "sft_gold_mean": sum(map(sum, scores)) / max(len(responses), 1)}
    write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def train_rm(cfg: DemoConfig, prefs: Path, out: Path) -> dict:
    """Stage 3: the learned (proxy) reward model; validation accuracy vs noisy labels and vs gold ordering."""
    from rlhfkit.trainers.rm import train_reward_model

    rm_cfg = RMConfig(data=str(prefs / "prefs.jsonl"), eval_data=str(prefs / "prefs_val.jsonl"), base=cfg.rm_base,
                      output=str(out), epochs=cfg.rm_epochs, seed=cfg.seed, max_length=128)
    final = train_reward_model(rm_cfg)
    rows = [r for _, r in read_rows(prefs / "prefs_val.jsonl")]
    rm = RewardModel.from_pretrained(out)
    chosen = rm.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = rm.score([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    gold_order = [(c > r) == (g["gold_chosen"] > g["gold_rejected"]) for c, r, g in zip(chosen, rejected, rows)
                  if g["gold_chosen"] != g["gold_rejected"]]
    return {"val_accuracy": final["eval_accuracy"],
            "val_gold_accuracy": sum(gold_order) / max(len(gold_order), 1), "n_val_pairs": len(rows)}


ONLINE = ("ppo", "grpo", "rloo", "reinforce_pp")  # the methods trained against the learned RM
# bumped when the evaluation computes a figure differently, so a rerun in an old run folder re-evaluates:
# 2 = policy and reference log-probs from the same forward pass (the KL of earlier runs was biased)
EVAL_VERSION = 2


def run_online(cfg: DemoConfig, algo: str, train_prompts: list, rm_dir: Path, out: Path) -> dict:
    """Stage 4: an online method (PPO, GRPO, RLOO, REINFORCE++; LoRA by default) against the learned RM; the
    gold reward is logged, never optimised."""
    if algo == "ppo":
        from rlhfkit.trainers.ppo import train_ppo as train
    else:
        from rlhfkit.trainers.critic_free import train_critic_free as train
    return train(online_config(cfg, algo, rm_dir, out), monitors={"gold": gold.gold_rewards}, prompts=train_prompts)


def online_config(cfg: DemoConfig, algo: str, rm_dir: Path, out: Path):
    """The demo's group for `algo` with what the demo fills in; `prompts` stays None: the train split is
    passed in memory (it follows from the demo's `prompts` and `seed`)."""
    return dataclasses.replace(getattr(cfg, algo), policy=cfg.policy, reward_model=str(rm_dir), output=str(out),
                               seed=cfg.seed, merge_lora=True)


def run_dpo(cfg: DemoConfig, prefs: Path, out: Path) -> dict:
    """Stage 4b: DPO on the same labelled pairs (no reward model; reference = LoRA adapters disabled)."""
    from rlhfkit.trainers.dpo import train_dpo

    return train_dpo(dpo_config(cfg, prefs, out))


def dpo_config(cfg: DemoConfig, prefs: Path, out: Path) -> DPOConfig:
    """The demo's DPO group with what the demo fills in: the policy, the collected pairs, the output."""
    return dataclasses.replace(cfg.dpo, policy=cfg.policy, data=str(prefs / "prefs.jsonl"),
                               eval_data=str(prefs / "prefs_val.jsonl"), output=str(out), seed=cfg.seed,
                               merge_lora=True)


def evaluate(cfg: DemoConfig, heldout: list, policies: dict[str, str], rm_dir: Path, out: Path) -> dict:
    """Stage 5: every policy on held-out prompts, scored by gold and the learned RM, with KL to the SFT model;
    eval/eval.json holds the rows and the per-method statistics, which are returned."""
    result = evaluate_policies(policies, heldout[: cfg.eval_prompts], reference=cfg.policy,
                               gen_cfg=cfg.generation, reward_model=RewardModel.from_pretrained(rm_dir),
                               gold=gold.gold_rewards, batch_size=cfg.generation_batch_size, seed=cfg.seed,
                               samples_per_prompt=cfg.eval_samples_per_prompt, bf16=cfg.ppo.dtype == "bf16")
    return save_evaluation(out / "eval.json", result, baseline="sft", seed=cfg.seed)


def stage_keys(cfg: DemoConfig, algos: list[str]) -> dict[str, str]:
    """A hash per stage of the settings its output depends on, chained: a stage's key includes the keys of
    the stages it reads, so a change reruns that stage and everything downstream (and nothing upstream)."""
    c = to_dict(cfg)
    digest = lambda obj: hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]  # noqa: E731
    sampling = {k: c[k] for k in ("policy", "seed", "generation", "generation_batch_size")} | {
        "autocast": cfg.ppo.dtype}
    keys = {"prefs": digest([sampling, {k: c[k] for k in ("prompts", "rm_prompts", "rm_val_prompts",
                                                          "samples_per_prompt", "pairs_per_prompt",
                                                          "label_temperature", "min_gold_gap")}])}
    keys["rm"] = digest([keys["prefs"], c["rm_base"], c["rm_epochs"]])
    for algo in algos:  # DPO reads the preferences; the online methods the RM
        keys[algo] = digest([keys["prefs" if algo == "dpo" else "rm"], c[algo]])
    keys["eval"] = digest([sampling, keys["rm"], [keys[a] for a in algos], c["eval_prompts"],
                           c["eval_samples_per_prompt"], EVAL_VERSION])
    return keys


def run_stage(name: str, run: Path, force: bool, fn, timings: dict, key: str) -> dict:
    """Run `fn()` unless `run/name/done.json` exists with the same settings `key`; the marker holds the
    result, the seconds and the key."""
    marker = run / name / "done.json"
    done = json.loads(marker.read_text()) if marker.is_file() else None
    if done is not None and not force and done.get("key") == key:
        log.info("stage %s: done already (%.0f s), skipped; --force reruns it", name, done["seconds"])
    else:
        if done is not None and not force:
            log.info("stage %s: its settings changed since the last run, rerunning", name)
        log.info("stage %s ...", name)
        (run / name).mkdir(parents=True, exist_ok=True)
        start = time.time()
        done = {"result": fn(), "seconds": time.time() - start, "key": key}
        write_text(marker, json.dumps(done, indent=2, default=float))
    timings[name] = done["seconds"]
    return done["result"]


def run_demo(cfg: DemoConfig) -> dict:
    """All stages, then summary.json and report.html. Returns the summary."""
    cfg = resolve_dtypes(cfg)  # every group's `auto` -> bf16 or fp32 for this machine (stage keys read it)
    loop.seed_everything(cfg.seed)
    run, timings = Path(cfg.output), {}
    save_config(cfg, run / "config.yaml")
    train_prompts, heldout = split_prompts(cfg)
    algos = cfg.algos
    keys = stage_keys(cfg, algos)
    stage = lambda name, fn: run_stage(name, run, cfg.force, fn, timings, keys[name])  # noqa: E731
    prefs = stage("prefs", lambda: collect_preferences(cfg, train_prompts, run / "prefs"))
    rm = stage("rm", lambda: train_rm(cfg, run / "prefs", run / "rm"))
    for algo in algos:
        if algo == "dpo":
            stage("dpo", lambda: run_dpo(cfg, run / "prefs", run / "dpo"))
        else:
            stage(algo, lambda algo=algo: run_online(cfg, algo, train_prompts, run / "rm", run / algo))
    policies = {"sft": cfg.policy} | {a: str(run / a / "policy") for a in algos}
    methods = stage("eval", lambda: evaluate(cfg, heldout, policies, run / "rm", run / "eval"))
    betas = {a: getattr(cfg, a).kl_coef for a in ONLINE} | {"dpo": cfg.dpo.beta}  # the chart labels points by β
    methods = {name: {**m, "beta": betas[name]} if name in betas else m for name, m in methods.items()}
    summary = make_summary(cfg, prefs, rm, methods, timings)
    write_text(run / "summary.json", json.dumps(summary, indent=2))
    from rlhfkit.report.html import build_report

    build_report(run)
    return summary


def make_summary(cfg: DemoConfig, prefs: dict, rm: dict, methods: dict, timings: dict) -> dict:
    """summary.json: the documented top-level figures (docs/guide/demo.md "summary.json"), copied from the
    evaluation's per-method statistics (`<figure>_sft` from methods["sft"], `<figure>_rlhf` from the first method trained:
    PPO when it ran)."""
    sft, ppo = methods["sft"], methods[cfg.algos[0]]
    return {
        "gold_reward_sft": sft["gold_reward"], "gold_reward_rlhf": ppo["gold_reward"],
        "gold_delta": ppo["gold_delta"], "gold_delta_ci95": ppo["gold_delta_ci95"],
        "rm_reward_sft": sft["rm_reward"], "rm_reward_rlhf": ppo["rm_reward"],
        "kl_rlhf": ppo["kl"], "kl_rlhf_ci95": ppo["kl_ci95"], "win_rate_gold": ppo["win_rate_gold"],
        "win_rate_gold_ci95": ppo["win_rate_gold_ci95"], "rm_val_accuracy": rm["val_accuracy"],
        "rm_val_gold_accuracy": rm["val_gold_accuracy"], "response_len_sft": sft["response_len"],
        "response_len_rlhf": ppo["response_len"], "n_eval_prompts": sft["n"],
        "wall_seconds": sum(timings.values()), "stage_seconds": timings, "prefs": prefs,
        "methods": methods, "config": resolved_config(cfg),
    }


def resolved_config(cfg: DemoConfig) -> dict:
    """The demo config with its method groups as they ran (`online_config`, `dpo_config`): policy, reward
    model, data and output filled in; <online>.prompts is null because the train split is passed in memory."""
    run = Path(cfg.output)
    return {**to_dict(cfg), **{a: to_dict(online_config(cfg, a, run / "rm", run / a)) for a in ONLINE},
            "dpo": to_dict(dpo_config(cfg, run / "prefs", run / "dpo"))}
