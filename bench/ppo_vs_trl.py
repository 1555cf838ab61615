"""PPO speed and memory: rlhfkit against TRL 1.0.0's PPOTrainer on the same models and shapes.

Run with the project's venv (TRL runs in its own, made by bench/setup_trl.sh):
    bash bench/setup_trl.sh ppo
    .venv/bin/python bench/ppo_vs_trl.py [--steps 4] [--only all|trl|rlhfkit|ROW,...]

Setting shared by every row: policy SmolLM2-135M-Instruct (full fine-tuning unless the row says LoRA), a SmolLM2
reward model with an untrained score head (timing does not depend on its weights), the critic initialised from
that reward model, 8 prompts x 48 new tokens per step, 2 PPO epochs x 2 minibatches, temperature 0.7, top-p 1.
Each implementation runs in its own subprocess. Per row we report seconds per step (mean over the steps after the
first, which is warm-up) and the peak RSS of that subprocess (ru_maxrss from os.wait4), and both as a ratio
rlhfkit / TRL. Results go to bench/results/ppo_vs_trl.json; rows not run this time are kept from the last run
with the same setting, so `--only rlhfkit` still gets ratios against a stored TRL row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import (
    BENCH,
    CACHE,
    CHILD_ENV,
    RESULTS,
    RLHFKIT_CLI,
    ROOT,
    Measured,
    contention_message,
    last_line,
    machine,
    merged_with_stored,
    policy_folder,
    print_table,
    read_jsonl,
    run_measured,
    run_selected,
    timed_mean,
)

TRL_PYTHON = BENCH / ".venv-trl" / "bin" / "python"
# lr is TRL's PPOConfig default; it matters for speed too: a policy that moves fast soon stops at EOS earlier
SETTING = {"batch_size": 8, "max_new_tokens": 48, "ppo_epochs": 2, "num_minibatches": 2, "temperature": 0.7,
           "lr": 3e-6, "seed": 0}

TOPICS = [
    "photosynthesis", "the water cycle", "compound interest", "how vaccines work", "black holes",
    "the French Revolution", "machine learning", "plate tectonics", "the immune system", "inflation",
    "how a bicycle stays upright", "the internet", "climate change", "DNA replication", "supply and demand",
    "the Roman Empire", "electric cars", "sleep", "volcanoes", "the stock market", "gravity", "recycling",
    "the human heart", "rainbows", "democracy", "coffee", "bees and pollination", "the moon's phases",
    "solar panels", "antibiotics", "earthquakes", "the printing press", "tides", "batteries", "clouds",
    "the Olympic Games", "chess openings", "jazz", "bread baking", "lighthouses",
]


@dataclass
class Row:
    """One line of the table: how it was run, what it measured."""

    name: str
    impl: str
    status: str = "not run"  # ok | failed | skipped | not run
    message: str = ""
    step_times_s: list[float] = field(default_factory=list)  # every step, warm-up first
    s_per_step: float | None = None  # mean over the steps after warm-up
    generation_s: float | None = None  # per timed step
    scoring_s: float | None = None
    training_s: float | None = None
    peak_rss_mb: float | None = None
    time_ratio_vs_trl: float | None = None
    rss_ratio_vs_trl: float | None = None
    extra: dict = field(default_factory=dict)
    log: str = ""  # the subprocess's stdout+stderr, relative to the repository root

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-")

    @property
    def log_path(self) -> Path:
        return ROOT / self.log


# ----------------------------------------------------------------------------------------- inputs
def resolve_models() -> dict[str, Path]:
    """The policy folder (converted once by rlhfkit) and the two untrained reward models built from it."""
    from rlhfkit.models.load import resolve_model_path

    policy = policy_folder()
    return {
        "policy": policy,
        "smollm2_rm": untrained_reward_model(policy, CACHE / "smollm2-rm"),
        "minilm_rm": untrained_reward_model(resolve_model_path("minilm-l6"), CACHE / "minilm-rm"),
    }


def untrained_reward_model(base: Path, target: Path) -> Path:
    """A sequence classifier (num_labels=1, random score head, seed 0) with its tokenizer, saved once."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhfkit.models.load import fix_pad_token

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    fix_pad_token(tokenizer, model)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)
    return target


def write_prompts(n: int) -> Path:
    """n short instructions of similar length as {"prompt": text} JSONL, read by both implementations."""
    path = CACHE / "prompts.jsonl"
    lines = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        suffix = "" if i < len(TOPICS) else f" (take {i // len(TOPICS) + 1})"
        lines.append(json.dumps({"prompt": f"Explain {topic} to a curious teenager in a few sentences.{suffix}"}))
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------------------- running
def note_contention(row: Row, run: Measured) -> None:
    row.extra.update(wall_s=run.wall_s, foreign_cores=round(run.foreign_cores, 2))
    row.message = contention_message(run)


def run_trl(row: Row, models: dict[str, Path], prompts: Path, steps: int) -> None:
    if not TRL_PYTHON.is_file():
        row.status, row.message = "skipped", "bench/.venv-trl missing: run `bash bench/setup_trl.sh ppo` first"
        return
    result = CACHE / "trl-result.json"
    result.unlink(missing_ok=True)
    s = SETTING
    cmd = [str(TRL_PYTHON), str(BENCH / "trl_ppo_worker.py"), "--policy", str(models["policy"]),
           "--reward-model", str(models["smollm2_rm"]), "--value-model", str(models["smollm2_rm"]),
           "--prompts", str(prompts), "--output", str(CACHE / "runs" / row.slug), "--result", str(result),
           "--steps", str(steps), "--batch-size", str(s["batch_size"]), "--max-new-tokens", str(s["max_new_tokens"]),
           "--ppo-epochs", str(s["ppo_epochs"]), "--num-minibatches", str(s["num_minibatches"]),
           "--temperature", str(s["temperature"]), "--lr", str(s["lr"]), "--seed", str(s["seed"])]
    cmd += ["--gradient-checkpointing"] if row.name.endswith("ckpt") else []
    run = run_measured(cmd, row.log_path)
    if run.exit_code != 0 or not result.is_file():
        row.status, row.message = "failed", f"TRL worker exited {run.exit_code}: {last_line(row.log_path)}"
        return
    out = json.loads(result.read_text())
    fill_times(row, out["step_times_s"], out["gen_times_s"], out["scoring_times_s"], out["training_times_s"])
    row.peak_rss_mb = run.peak_rss_mb
    row.extra = {k: out[k] for k in ("response_lengths", "optimizer_steps", "torch_threads", "versions")}
    row.extra["worker_peak_rss_mb"] = out["peak_rss_mb"]
    note_contention(row, run)
    row.status = "ok"


def rlhfkit_flags(row_name: str, models: dict[str, Path], prompts: Path, output: Path, steps: int) -> list[str]:
    """The `rlhfkit ppo` command line of a row: the TRL setting, or the CPU defaults (LoRA, MiniLM RM)."""
    s = SETTING
    flags = ["ppo", "--policy", "smollm2-135m-instruct", "--prompts", str(prompts), "--output", str(output),
             "--steps", str(steps), "--batch-size", str(s["batch_size"]), "--max-new-tokens", str(s["max_new_tokens"]),
             "--ppo-epochs", str(s["ppo_epochs"]), "--num-minibatches", str(s["num_minibatches"]),
             "--seed", str(s["seed"])]
    if row_name == "rlhfkit defaults":
        return flags + ["--lora", "--reward-model", str(models["minilm_rm"])]
    dtype = "bf16" if "bf16" in row_name else "fp32"
    flags += ["--gradient-checkpointing"] if row_name.endswith("ckpt") else []
    return flags + ["--no-lora", "--dtype", dtype, "--reward-model", str(models["smollm2_rm"]),
                    "--value-model", str(models["smollm2_rm"]),
                    # TRL samples with top-k 0, top-p 1 and saves nothing while training (save_strategy="no")
                    "--temperature", str(s["temperature"]), "--top-p", "1.0", "--top-k", "0", "--save-every", "0",
                    "--lr", str(s["lr"])]


def run_rlhfkit(row: Row, models: dict[str, Path], prompts: Path, steps: int) -> None:
    if not RLHFKIT_CLI.is_file():
        row.status, row.message = "skipped", f"{RLHFKIT_CLI.relative_to(ROOT)} missing: run `make setup` first"
        return
    help_check = subprocess.run([str(RLHFKIT_CLI), "ppo", "--help"], capture_output=True, env=CHILD_ENV)
    if help_check.returncode != 0:
        row.status, row.message = "skipped", "this rlhfkit has no `ppo` command yet"
        return
    output = CACHE / "runs" / row.slug
    shutil.rmtree(output, ignore_errors=True)  # a stale checkpoint would make it resume
    run = run_measured([str(RLHFKIT_CLI), *rlhfkit_flags(row.name, models, prompts, output, steps)], row.log_path)
    metrics = output / "metrics.jsonl"
    logged = [m for m in read_jsonl(metrics) if "step_time_s" in m]
    if run.exit_code != 0 or not logged:
        if "No module named 'rlhfkit.trainers.ppo'" in row.log_path.read_text(errors="replace"):
            row.status, row.message = "skipped", "`rlhfkit ppo` is not implemented yet (no rlhfkit.trainers.ppo)"
        else:
            row.status, row.message = "failed", f"rlhfkit ppo exited {run.exit_code}: {last_line(row.log_path)}"
        return
    # scoring = RM scores + the no-grad forwards for log π_old, log π_ref and V_old: the same work as TRL's
    fill_times(row, [m["step_time_s"] for m in logged], [m.get("time/generation_s", 0.0) for m in logged],
               [m.get("time/scoring_s", 0.0) + m.get("time/logprobs_s", 0.0) for m in logged],
               [m.get("time/training_s", 0.0) for m in logged])
    row.peak_rss_mb = run.peak_rss_mb
    row.extra = {k: mean_of(logged, f"rollout/{k}") for k in ("response_len", "eos_rate")}
    note_contention(row, run)
    row.status = "ok"


def mean_of(logged: list[dict], key: str) -> float | None:
    values = [m[key] for m in logged if key in m]
    return sum(values) / len(values) if values else None


def fill_times(row: Row, step_s: list, generation_s: list, scoring_s: list, training_s: list) -> None:
    """Per-step lists (warm-up first) -> the row's means over the timed steps."""
    row.step_times_s = [round(t, 3) for t in step_s]
    row.s_per_step, row.generation_s = timed_mean(step_s), timed_mean(generation_s)
    row.scoring_s, row.training_s = timed_mean(scoring_s), timed_mean(training_s)


# ----------------------------------------------------------------------------------------- reporting
def baseline_of(row: Row) -> str:
    """The TRL row a row is compared with: the one with the same gradient-checkpointing setting."""
    return "TRL fp32 ckpt" if row.name.endswith("ckpt") else "TRL fp32"


def add_ratios(rows: list[Row]) -> None:
    by_name = {r.name: r for r in rows}
    for row in rows:
        trl = by_name.get(baseline_of(row))
        if trl is not None and trl.status == "ok" and row.status == "ok":
            row.time_ratio_vs_trl = row.s_per_step / trl.s_per_step
            row.rss_ratio_vs_trl = row.peak_rss_mb / trl.peak_rss_mb


COLUMNS = [("s/step", "s_per_step", "8.2f"), ("gen s", "generation_s", "8.2f"), ("score s", "scoring_s", "8.2f"),
           ("train s", "training_s", "8.2f"), ("peak RSS MB", "peak_rss_mb", "12.0f"),
           ("time x TRL", "time_ratio_vs_trl", "11.2f"), ("RSS x TRL", "rss_ratio_vs_trl", "10.2f")]


# ----------------------------------------------------------------------------------------- main
ROWS = [("TRL fp32", "trl"), ("rlhfkit fp32", "rlhfkit"), ("rlhfkit bf16", "rlhfkit"),
        ("rlhfkit defaults", "rlhfkit"),
        # gradient checkpointing on both sides (TRL's own config default), compared with each other
        ("TRL fp32 ckpt", "trl"), ("rlhfkit fp32 ckpt", "rlhfkit"), ("rlhfkit bf16 ckpt", "rlhfkit")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="PPO steps per row, the first being warm-up")
    parser.add_argument("--only", default="all", help="rows to run, comma-separated: all, trl, rlhfkit or a row "
                        "(trl-fp32, rlhfkit-fp32, rlhfkit-bf16, rlhfkit-defaults)")
    parser.add_argument("--wait-idle", type=float, default=300.0, metavar="S",
                        help="before each row, wait up to S seconds for other processes to leave the CPU")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first step is warm-up")
    setting = {**SETTING, "steps": args.steps}
    CACHE.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    models = resolve_models()
    prompts = write_prompts(SETTING["batch_size"] * args.steps)

    rows = [Row(name, impl) for name, impl in ROWS]
    run_selected(parser, rows, args.only, args.wait_idle, args.steps, "",
                 lambda row: (run_trl if row.impl == "trl" else run_rlhfkit)(row, models, prompts, args.steps))
    out = RESULTS / "ppo_vs_trl.json"
    rows = merged_with_stored(rows, setting, out, Row)
    add_ratios(rows)
    print(f"\nPPO, {SETTING['batch_size']} prompts x {SETTING['max_new_tokens']} tokens, {SETTING['ppo_epochs']} "
          f"epochs x {SETTING['num_minibatches']} minibatches; {args.steps} steps, first = warm-up")
    print_table(rows, COLUMNS, name_width=20)
    summary = {"setting": setting, "machine": machine(), "rows": [asdict(r) for r in rows]}
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 1 if any(r.status == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
