"""What bench/grpo_vs_trl.py and bench/rloo_vs_trl.py share: their rows, running `rlhfkit grpo|rloo` and TRL
1.16's GRPOTrainer / RLOOTrainer (bench/trl_critic_free_worker.py) as measured subprocesses, ratios, table.

The two scripts differ only in the algorithm name, its KL β and whether there is a β = 0 row (ALGOS below);
the setting, the prompts (ppo_vs_trl.TOPICS) and the untrained SmolLM2 reward model are the PPO bench's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import (
    BENCH,
    CACHE,
    CHILD_ENV,
    RESULTS,
    RLHFKIT_CLI,
    ROOT,
    contention_message,
    last_line,
    machine,
    merged_with_stored,
    print_table,
    read_jsonl,
    run_measured,
    run_selected,
    timed_mean,
)
from ppo_vs_trl import mean_of, resolve_models, write_prompts

TRL_PYTHON = BENCH / ".venv-trl-dpo" / "bin" / "python"  # TRL 1.16 with rlhfkit's transformers (setup_trl.sh)
# lr is TRL's default; it matters for speed too: a policy that moves fast ends at EOS earlier or later
SETTING = {"batch_size": 8, "group_size": 4, "max_new_tokens": 48, "temperature": 1.0, "lr": 1e-6,
           "seed": 0}
# per algorithm: β as each trainer uses it (GRPO: a k3·ρ loss term; RLOO: β Σ_t k1 off the reward), and
# whether to add a β = 0 row (TRL then loads no reference model; rlhfkit still computes log π_ref for its KL
# metric)
ALGOS = {"grpo": {"kl_coef": 0.02, "beta0_row": True}, "rloo": {"kl_coef": 0.05, "beta0_row": False}}
TIME_TARGET, RSS_TARGET = 0.5, 0.7  # issue 12: rlhfkit at most 0.5x TRL's time per step and 0.7x its peak RSS


@dataclass
class Row:
    """One line of the table: how it was run, what it measured."""

    name: str
    impl: str  # trl | rlhfkit
    baseline: str  # the TRL row its ratios are against ("" for TRL rows)
    status: str = "not run"  # ok | failed | skipped | not run
    message: str = ""
    step_times_s: list[float] = field(default_factory=list)  # every step, warm-up first
    s_per_step: float | None = None  # mean over the steps after warm-up
    generation_s: float | None = None  # per timed step: sampling the batch_size · group_size responses
    scoring_s: float | None = None  # the reward model's forward
    logprobs_s: float | None = None  # no-grad log π_old / log π_ref passes
    training_s: float | None = None  # the rest: advantages, forward/backward, AdamW
    peak_rss_mb: float | None = None
    time_ratio_vs_trl: float | None = None
    rss_ratio_vs_trl: float | None = None
    targets: str = ""  # whether the targets are met, for the rlhfkit rows
    extra: dict = field(default_factory=dict)
    log: str = ""  # the subprocess's stdout+stderr, relative to the repository root

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-")


MICRO_BATCHES = 4  # the "accum" row: the same update in 4 micro-batches of 8 sequences (--grad-accum-steps)


def rows_for(algo: str) -> list[Row]:
    """TRL and rlhfkit in the identical setting (fp32, bf16, optionally β = 0, gradient checkpointing);
    rlhfkit fp32 with the same update accumulated over micro-batches (a memory lever TRL's GRPO/RLOO step has
    no equivalent of: its gradient_accumulation_steps samples a new batch per micro-batch); and rlhfkit's CPU
    defaults (LoRA, bf16, MiniLM RM) against TRL bf16."""
    pairs = [("fp32", True), ("bf16", True), ("fp32 beta0", ALGOS[algo]["beta0_row"]), ("fp32 ckpt", True)]
    rows = []
    for variant, wanted in pairs:
        if wanted:
            rows += [Row(f"TRL {variant}", "trl", ""), Row(f"rlhfkit {variant}", "rlhfkit", f"TRL {variant}")]
    return rows + [Row("rlhfkit fp32 accum", "rlhfkit", "TRL fp32"), Row("rlhfkit defaults", "rlhfkit", "TRL bf16")]


# ----------------------------------------------------------------------------------------- running
def kl_coef_of(algo: str, row: Row) -> float:
    return 0.0 if "beta0" in row.name else ALGOS[algo]["kl_coef"]


def finish(row: Row, run, times: dict[str, list[float]]) -> None:
    """Per-step lists (warm-up first) -> the row's means over the timed steps; contention noted."""
    row.step_times_s = [round(t, 3) for t in times["step"]]
    row.s_per_step = timed_mean(times["step"])
    row.generation_s, row.scoring_s = timed_mean(times["generation"]), timed_mean(times["scoring"])
    row.logprobs_s, row.training_s = timed_mean(times["logprobs"]), timed_mean(times["training"])
    row.peak_rss_mb = run.peak_rss_mb
    row.extra.update(wall_s=round(run.wall_s, 1), foreign_cores=round(run.foreign_cores, 2))
    row.message = contention_message(run)
    row.status = "ok"


def run_trl(algo: str, row: Row, models: dict[str, Path], prompts: Path, steps: int) -> None:
    if not TRL_PYTHON.is_file():
        row.status = "skipped"
        row.message = "bench/.venv-trl-dpo missing: run `bash bench/setup_trl.sh grpo` first"
        return
    result = CACHE / f"trl-{algo}-result.json"
    result.unlink(missing_ok=True)
    s = SETTING
    cmd = [str(TRL_PYTHON), str(BENCH / "trl_critic_free_worker.py"), "--algo", algo,
           "--policy", str(models["policy"]), "--reward-model", str(models["smollm2_rm"]),
           "--prompts", str(prompts), "--output", str(CACHE / "runs" / f"{algo}-{row.slug}"),
           "--result", str(result), "--steps", str(steps),
           "--batch-size", str(s["batch_size"]), "--group-size", str(s["group_size"]),
           "--max-new-tokens", str(s["max_new_tokens"]), "--temperature", str(s["temperature"]),
           "--lr", str(s["lr"]), "--beta", str(kl_coef_of(algo, row)), "--seed", str(s["seed"])]
    cmd += ["--bf16"] if "bf16" in row.name else []
    cmd += ["--gradient-checkpointing"] if "ckpt" in row.name else []
    run = run_measured(cmd, ROOT / row.log)
    if run.exit_code != 0 or not result.is_file():
        row.status, row.message = "failed", f"TRL worker exited {run.exit_code}: {last_line(ROOT / row.log)}"
        return
    out = json.loads(result.read_text())
    kept = ("response_len", "completions_per_step", "nograd_forwards_per_step", "optimizer_steps",
            "has_ref_model", "mixed_precision", "autocast_by_phase", "gradient_checkpointing", "fused_adamw",
            "torch_threads", "versions")
    row.extra = {k: out[k] for k in kept}
    row.extra["worker_peak_rss_mb"] = out["peak_rss_mb"]
    finish(row, run, {"step": out["step_times_s"], "generation": out["gen_times_s"],
                      "scoring": out["scoring_times_s"], "logprobs": out["logprob_times_s"],
                      "training": out["training_times_s"]})


def rlhfkit_flags(algo: str, row: Row, models: dict[str, Path], prompts: Path, output: Path,
                  steps: int) -> list[str]:
    """The `rlhfkit grpo|rloo` command line of a row: TRL's setting, or the defaults with the same shapes."""
    s = SETTING
    flags = [algo, "--policy", "smollm2-135m-instruct", "--prompts", str(prompts), "--output", str(output),
             "--steps", str(steps), "--batch-size", str(s["batch_size"]),
             "--group-size", str(s["group_size"]), "--max-new-tokens", str(s["max_new_tokens"]),
             "--num-iterations", "1", "--num-minibatches", "1", "--seed", str(s["seed"])]
    if row.name == "rlhfkit defaults":
        return flags + ["--lora", "--reward-model", str(models["minilm_rm"])]
    flags += ["--gradient-checkpointing"] if "ckpt" in row.name else []
    flags += ["--grad-accum-steps", str(MICRO_BATCHES)] if "accum" in row.name else []
    return flags + ["--no-lora", "--dtype", "bf16" if "bf16" in row.name else "fp32",
                    "--reward-model", str(models["smollm2_rm"]), "--kl-coef", str(kl_coef_of(algo, row)),
                    # TRL: top-k 0, top-p 1, constant lr, nothing saved while training (save_strategy="no")
                    "--temperature", str(s["temperature"]), "--top-p", "1.0", "--top-k", "0",
                    "--lr", str(s["lr"]), "--scheduler", "constant", "--save-every", "0"]


def run_rlhfkit(algo: str, row: Row, models: dict[str, Path], prompts: Path, steps: int) -> None:
    if not RLHFKIT_CLI.is_file():
        row.status, row.message = "skipped", f"{RLHFKIT_CLI.relative_to(ROOT)} missing: run `make setup`"
        return
    if subprocess.run([str(RLHFKIT_CLI), algo, "--help"], capture_output=True, env=CHILD_ENV).returncode != 0:
        row.status, row.message = "skipped", f"this rlhfkit has no `{algo}` command yet"
        return
    output = CACHE / "runs" / f"{algo}-{row.slug}"
    shutil.rmtree(output, ignore_errors=True)  # a stale checkpoint would make it resume
    cmd = [str(RLHFKIT_CLI), *rlhfkit_flags(algo, row, models, prompts, output, steps)]
    run = run_measured(cmd, ROOT / row.log)
    logged = [m for m in read_jsonl(output / "metrics.jsonl") if "step_time_s" in m]
    if run.exit_code != 0 or not logged:
        row.status = "failed"
        row.message = f"rlhfkit {algo} exited {run.exit_code}: {last_line(ROOT / row.log)}"
        return
    timed = logged[1:] or logged
    row.extra = {"response_len": [round(m["rollout/response_len"], 1) for m in logged],
                 **{k: mean_of(timed, f"rollout/{k}") for k in ("eos_rate", "kl")},
                 "first_ratio": mean_of(timed, "rl/first_ratio"), "sampler": sampler_of(output),
                 # log π_ref always (also at β = 0, for the KL metric); log π_old unless the update's own
                 # forward gives it (one update per batch, KL as a loss: critic_free.needs_old_pass)
                 "nograd_forwards_per_step": 1 + needs_old_pass(output, algo)}
    finish(row, run, {"step": [m["step_time_s"] for m in logged],
                      **{k: [m.get(f"time/{k}_s", 0.0) for m in logged]
                         for k in ("generation", "scoring", "logprobs", "training")}})


def needs_old_pass(output: Path, algo: str) -> bool:
    """Whether the run made a no-grad pass for log π_old (its config.yaml through critic_free.needs_old_pass)."""
    from rlhfkit.config import GRPOConfig, RLOOConfig, build
    from rlhfkit.config_loading import load_yaml
    from rlhfkit.trainers.critic_free import needs_old_pass as needs

    return needs(build({"grpo": GRPOConfig, "rloo": RLOOConfig}[algo], load_yaml(str(output / "config.yaml"))))


def sampler_of(output: Path) -> str:
    """Which sampler the run asked for (config.yaml's generation.engine: rlhfkit.engine "fast" or transformers'
    generate "hf"; an rlhfkit from before the engine has no such key and always used generate)."""
    import yaml

    return yaml.safe_load((output / "config.yaml").read_text())["generation"].get("engine", "hf")


# ----------------------------------------------------------------------------------------- reporting
def add_ratios(rows: list[Row]) -> None:
    by_name = {r.name: r for r in rows}
    for row in rows:
        base = by_name.get(row.baseline) if row.baseline else None
        if row.status == "ok" and base is not None and base.status == "ok":
            row.time_ratio_vs_trl = row.s_per_step / base.s_per_step
            row.rss_ratio_vs_trl = row.peak_rss_mb / base.peak_rss_mb
            row.targets = (f"time {'met' if row.time_ratio_vs_trl <= TIME_TARGET else 'not met'}, "
                           f"RSS {'met' if row.rss_ratio_vs_trl <= RSS_TARGET else 'not met'}")


COLUMNS = [("s/step", "s_per_step", "8.2f"), ("gen s", "generation_s", "7.2f"), ("RM s", "scoring_s", "6.2f"),
           ("logp s", "logprobs_s", "7.2f"), ("train s", "training_s", "8.2f"),
           ("peak RSS MB", "peak_rss_mb", "12.0f"), ("vs", "baseline", "16s"),
           ("time x", "time_ratio_vs_trl", "8.2f"), ("RSS x", "rss_ratio_vs_trl", "7.2f"),
           ("targets", "targets", "26s")]


# ----------------------------------------------------------------------------------------- main
def main(algo: str, description: str) -> int:
    """Run the rows --only names for `algo` (grpo or rloo); print the table; write <algo>_vs_trl.json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=4,
                        help="optimiser steps per row, the first being warm-up")
    parser.add_argument("--only", default="all",
                        help="rows to run, comma-separated: all, trl, rlhfkit or a row "
                        f"({', '.join(r.slug.lower() for r in rows_for(algo))})")
    parser.add_argument("--wait-idle", type=float, default=300.0, metavar="S",
                        help="before each row, wait up to S seconds for other processes to leave the CPU")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first step is warm-up")
    setting = {**SETTING, "kl_coef": ALGOS[algo]["kl_coef"], "steps": args.steps}
    CACHE.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    models = resolve_models()
    prompts = write_prompts(SETTING["batch_size"] * args.steps)

    rows = rows_for(algo)
    def run_row(row: Row) -> None:
        (run_trl if row.impl == "trl" else run_rlhfkit)(algo, row, models, prompts, args.steps)

    run_selected(parser, rows, args.only, args.wait_idle, args.steps, f"{algo}-", run_row)
    out = RESULTS / f"{algo}_vs_trl.json"
    rows = merged_with_stored(rows, setting, out, Row)
    add_ratios(rows)
    s = SETTING
    print(f"\n{algo.upper()}, {s['batch_size']} prompts x {s['group_size']} completions x "
          f"{s['max_new_tokens']} tokens per step, one AdamW step each; {args.steps} steps, first = warm-up; "
          f"ratios against the row under `vs`; targets: time <= {TIME_TARGET}x, RSS <= {RSS_TARGET}x")
    print_table(rows, COLUMNS)
    summary = {"setting": setting, "machine": machine(), "rows": [asdict(r) for r in rows]}
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 1 if any(r.status == "failed" for r in rows) else 0
