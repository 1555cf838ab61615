"""DPO speed and memory: rlhfkit against TRL 1.16's DPOTrainer on the same model, data and batch shapes.

Run with the project's venv (TRL runs in its own, made by bench/setup_trl.sh):
    bash bench/setup_trl.sh dpo
    .venv/bin/python bench/dpo_vs_trl.py [--steps 6] [--only all|trl|rlhfkit|ROW,...]

Setting shared by every row: policy SmolLM2-135M-Instruct, one epoch over `steps` batches of 8 preference pairs
(chat-templated prompt of ~30 tokens, chosen ~60 and rejected ~40 response tokens; the same JSONL for both
sides), sigmoid loss, β 0.1, AdamW, max length 256, dropout off, no saving or
evaluation while training, no gradient checkpointing unless the row says `ckpt` (TRL's configs default to it).
Each implementation runs in its own subprocess.

Per row: s/step (mean wall time of an optimiser step after the first, which is warm-up), ref s/step (a one-off
reference pass before training, spread over the steps: 0 when the reference runs inside every step), total
s/step (their sum: the cost of an epoch per step) and the peak RSS of the subprocess (ru_maxrss from os.wait4).
Ratios are rlhfkit / TRL against the TRL row of the same precision and training mode (full or LoRA); TRL's
default (reference model in memory, recomputed every step) is the baseline of the full fine-tuning rows.
Results go to bench/results/dpo_vs_trl.json; rows not run this time are kept from the last run with the same
setting.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import (
    BENCH,
    CACHE,
    RESULTS,
    RLHFKIT_CLI,
    ROOT,
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

TRL_PYTHON = BENCH / ".venv-trl-dpo" / "bin" / "python"
SETTING = {"batch_size": 8, "max_length": 256, "beta": 0.1, "lr": 1e-6, "seed": 0}

TOPICS = [
    "photosynthesis", "the water cycle", "compound interest", "how vaccines work", "black holes",
    "the French Revolution", "machine learning", "plate tectonics", "the immune system", "inflation",
    "the internet", "climate change", "DNA replication", "supply and demand", "the Roman Empire", "gravity",
]
CHOSEN = ("{t} is a wonderful thing to learn about. In short, it describes how a few simple parts work together "
          "to produce something much bigger. Scientists study {t} with careful experiments, and everyday life "
          "shows it too. If you are curious, a good book or a museum visit will make {t} even clearer.")
REJECTED = "I do not really know much about {t}. It is complicated and boring, so you should look it up somewhere else."


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
    ref_s_per_step: float | None = None  # one-off reference pass / steps
    total_s_per_step: float | None = None
    peak_rss_mb: float | None = None
    time_ratio_vs_trl: float | None = None  # total s/step
    rss_ratio_vs_trl: float | None = None
    extra: dict = field(default_factory=dict)
    log: str = ""  # the subprocess's stdout+stderr, relative to the repository root

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "-").replace("(", "").replace(")", "")


ROWS = [
    Row("TRL fp32", "trl", ""),  # TRL's default: a second model as the reference, run in every step
    Row("TRL fp32 precompute", "trl", ""),  # precompute_ref_log_probs=True: no reference model in memory
    Row("TRL fp32 ckpt", "trl", ""),  # gradient checkpointing on, as in TRL's own config defaults
    Row("TRL bf16", "trl", ""),
    Row("TRL LoRA fp32", "trl", ""),
    Row("rlhfkit fp32", "rlhfkit", "TRL fp32"),
    Row("rlhfkit bf16", "rlhfkit", "TRL bf16"),
    Row("rlhfkit fp32 ckpt", "rlhfkit", "TRL fp32 ckpt"),
    Row("rlhfkit LoRA fp32", "rlhfkit", "TRL LoRA fp32"),
    Row("rlhfkit defaults", "rlhfkit", "TRL LoRA fp32"),  # `rlhfkit dpo` with no training flags
]


# ----------------------------------------------------------------------------------------- inputs
def write_pairs(n: int, path: Path) -> Path:
    """n preference pairs {"prompt", "chosen", "rejected"} of fixed shapes, the same file for both sides."""
    rows = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        take = "" if i < len(TOPICS) else f" (question {i + 1})"
        rows.append({"prompt": f"Explain {t} to a curious teenager in a few sentences.{take}",
                     "chosen": CHOSEN.format(t=t).capitalize(), "rejected": REJECTED.format(t=t)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------------------- running
def finish(row: Row, run, step_times_s: list[float], reference_s: float, steps: int) -> None:
    row.step_times_s = [round(t, 3) for t in step_times_s]
    row.s_per_step = timed_mean(step_times_s)
    row.ref_s_per_step = reference_s / steps
    row.total_s_per_step = row.s_per_step + row.ref_s_per_step
    row.peak_rss_mb = run.peak_rss_mb
    row.extra.update(wall_s=round(run.wall_s, 1), foreign_cores=round(run.foreign_cores, 2), steps=len(step_times_s))
    row.message = contention_message(run)
    row.status = "ok"


def run_trl(row: Row, policy: Path, data: Path, steps: int) -> None:
    if not TRL_PYTHON.is_file():
        row.status, row.message = "skipped", "bench/.venv-trl-dpo missing: run `bash bench/setup_trl.sh dpo` first"
        return
    result = CACHE / "trl-dpo-result.json"
    result.unlink(missing_ok=True)
    s = SETTING
    cmd = [str(TRL_PYTHON), str(BENCH / "trl_dpo_worker.py"), "--policy", str(policy), "--data", str(data),
           "--output", str(CACHE / "runs" / row.slug), "--result", str(result), "--batch-size", str(s["batch_size"]),
           "--max-length", str(s["max_length"]), "--lr", str(s["lr"]), "--beta", str(s["beta"]),
           "--seed", str(s["seed"])]
    cmd += ["--precompute-ref"] if "precompute" in row.name else []
    cmd += ["--lora"] if "LoRA" in row.name else []
    cmd += ["--bf16"] if "bf16" in row.name else []
    cmd += ["--gradient-checkpointing"] if "ckpt" in row.name else []
    run = run_measured(cmd, ROOT / row.log)
    if run.exit_code != 0 or not result.is_file():
        row.status, row.message = "failed", f"TRL worker exited {run.exit_code}: {last_line(ROOT / row.log)}"
        return
    out = json.loads(result.read_text())
    row.extra = {k: out[k] for k in ("has_ref_model", "optimizer_steps", "final_loss", "torch_threads", "versions")}
    row.extra["worker_peak_rss_mb"] = out["peak_rss_mb"]
    finish(row, run, out["step_times_s"], out["reference_s"], steps)


def rlhfkit_flags(row: Row, data: Path, eval_data: Path, output: Path) -> list[str]:
    """`rlhfkit dpo` in the shared setting (full fine-tuning or LoRA, fp32 or bf16), or with its defaults."""
    s = SETTING
    flags = ["dpo", "--policy", "smollm2-135m-instruct", "--data", str(data), "--eval-data", str(eval_data),
             "--output", str(output), "--epochs", "1", "--batch-size", str(s["batch_size"]), "--log-every", "1",
             "--seed", str(s["seed"])]
    if row.name == "rlhfkit defaults":
        return flags
    # TRL's setting: constant β and lr, no warm-up, no weight decay
    flags += ["--beta", str(s["beta"]), "--lr", str(s["lr"]), "--max-length", str(s["max_length"]),
              "--warmup-ratio", "0", "--weight-decay", "0", "--dtype", "bf16" if "bf16" in row.name else "fp32"]
    flags += ["--gradient-checkpointing"] if "ckpt" in row.name else []
    return flags + (["--lora"] if "LoRA" in row.name else ["--no-lora"])


def run_rlhfkit(row: Row, data: Path, eval_data: Path, steps: int) -> None:
    if not RLHFKIT_CLI.is_file():
        row.status, row.message = "skipped", f"{RLHFKIT_CLI.relative_to(ROOT)} missing: run `make setup` first"
        return
    output = CACHE / "runs" / row.slug
    shutil.rmtree(output, ignore_errors=True)  # no stale reference cache or checkpoint
    run = run_measured([str(RLHFKIT_CLI), *rlhfkit_flags(row, data, eval_data, output)], ROOT / row.log)
    logged = [m for m in read_jsonl(output / "metrics.jsonl") if "step_time_s" in m]
    summary = output / "summary.json"
    if run.exit_code != 0 or not logged or not summary.is_file():
        row.status, row.message = "failed", f"rlhfkit dpo exited {run.exit_code}: {last_line(ROOT / row.log)}"
        return
    final = json.loads(summary.read_text())
    row.extra = {"final_loss": logged[-1].get("dpo/loss"), "eval_reward_accuracy": final.get("eval_reward_accuracy")}
    finish(row, run, [m["step_time_s"] for m in logged], final.get("time/reference_s", 0.0), steps)


# ----------------------------------------------------------------------------------------- reporting
def add_ratios(rows: list[Row]) -> None:
    by_name = {r.name: r for r in rows}
    for row in rows:
        base = by_name.get(row.baseline) if row.baseline else None
        if row.status == "ok" and base is not None and base.status == "ok":
            row.time_ratio_vs_trl = row.total_s_per_step / base.total_s_per_step
            row.rss_ratio_vs_trl = row.peak_rss_mb / base.peak_rss_mb


COLUMNS = [("s/step", "s_per_step", "8.2f"), ("ref s/step", "ref_s_per_step", "11.2f"),
           ("total s", "total_s_per_step", "9.2f"), ("peak RSS MB", "peak_rss_mb", "12.0f"),
           ("vs", "baseline", "16s"), ("time x", "time_ratio_vs_trl", "8.2f"), ("RSS x", "rss_ratio_vs_trl", "7.2f")]


# ----------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps per row, the first being warm-up")
    parser.add_argument("--only", default="all", help="rows to run, comma-separated: all, trl, rlhfkit or a row "
                        f"({', '.join(r.slug.lower() for r in ROWS)})")
    parser.add_argument("--wait-idle", type=float, default=300.0, metavar="S",
                        help="before each row, wait up to S seconds for other processes to leave the CPU")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: the first step is warm-up")
    setting = {**SETTING, "steps": args.steps}
    CACHE.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    policy = policy_folder()
    data = write_pairs(SETTING["batch_size"] * args.steps, CACHE / "dpo_pairs.jsonl")
    eval_data = write_pairs(SETTING["batch_size"], CACHE / "dpo_pairs_eval.jsonl")

    rows = [Row(r.name, r.impl, r.baseline) for r in ROWS]
    run_selected(parser, rows, args.only, args.wait_idle, args.steps, "dpo-",
                 lambda row: run_trl(row, policy, data, args.steps) if row.impl == "trl"
                 else run_rlhfkit(row, data, eval_data, args.steps))
    out = RESULTS / "dpo_vs_trl.json"
    rows = merged_with_stored(rows, setting, out, Row)
    add_ratios(rows)
    print(f"\nDPO, {args.steps} steps of {SETTING['batch_size']} pairs (first = warm-up), max length "
          f"{SETTING['max_length']}; ratios are total s/step and peak RSS against the row named under `vs`")
    print_table(rows, COLUMNS)
    summary = {"setting": setting, "machine": machine(), "rows": [asdict(r) for r in rows]}
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 1 if any(r.status == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
