"""The demo on several seeds, with and without extra settings, as the README's demo tables are made.

For each seed: `rlhfkit demo --seed S --output runs/seeds/base/sS` (defaults), then for each `--variant
LABEL="FLAGS"` the same demo with FLAGS in runs/seeds/LABEL/sS, whose preference and reward-model stages are
copied from the base run (their settings are the same, so the demo skips them and only the changed stages run:
a PPO setting reruns PPO and the evaluation). Prints one row per (variant, seed): Δ gold with its 95% interval,
KL, the PPO stage's time and the sampler's gap to the trainer (mean over PPO's steps of rollout/sampler_kl_k3
and of rollout/sampler_kl, and the largest rollout/sampler_logprob_gap_max), and writes
bench/results/demo_seeds.json.

    .venv/bin/python bench/demo_seeds.py --seeds 0,1,2 --variant tis2="--ppo.tis-cap 2" [--demo-flags "..."]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import RESULTS, machine, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
RLHFKIT = str(Path(sys.executable).parent / "rlhfkit")


def run_demo(out: Path, seed: int, flags: list[str]) -> float:
    """`rlhfkit demo` into `out`; returns its wall seconds (the log is `out`.log)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(f"{out}.log", "w") as log:
        subprocess.run([RLHFKIT, "demo", "--output", str(out), "--seed", str(seed), *flags], check=True,
                       stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return time.time() - start


def row(label: str, seed: int, out: Path, seconds: float) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    steps = read_jsonl(out / "ppo" / "metrics.jsonl")
    mean = lambda key: sum(r[key] for r in steps) / len(steps)  # noqa: E731
    return {"variant": label, "seed": seed, "gold_delta": summary["gold_delta"],
            "gold_delta_ci95": summary["gold_delta_ci95"], "kl": summary["kl_rlhf"],
            "ppo_s": summary["stage_seconds"].get("ppo"), "wall_s": seconds,
            "sampler_kl_k3": mean("rollout/sampler_kl_k3"), "sampler_kl": mean("rollout/sampler_kl"),
            "sampler_logprob_gap_max": max(r["rollout/sampler_logprob_gap_max"] for r in steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variant", action="append", default=[], help='LABEL="FLAGS" (repeatable)')
    parser.add_argument("--demo-flags", default="", help="flags for every run, base included")
    parser.add_argument("--runs", default="runs/seeds")
    parser.add_argument("--results", default="demo_seeds.json", help="file name in bench/results/")
    args = parser.parse_args()
    common = shlex.split(args.demo_flags)
    variants = [("base", [])] + [(v.split("=", 1)[0], shlex.split(v.split("=", 1)[1])) for v in args.variant]
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        base = ROOT / args.runs / "base" / f"s{seed}"
        for label, flags in variants:
            out = ROOT / args.runs / label / f"s{seed}"
            if label != "base":
                for stage in ("prefs", "rm"):
                    if not (out / stage).exists():
                        shutil.copytree(base / stage, out / stage)
            seconds = run_demo(out, seed, common + flags)
            rows.append(row(label, seed, out, seconds))
            r = rows[-1]
            print(f"{label:<8} seed {seed}: Δ gold {r['gold_delta']:+.3f} [{r['gold_delta_ci95'][0]:.3f}, "
                  f"{r['gold_delta_ci95'][1]:.3f}] KL {r['kl']:.2f}; PPO {r['ppo_s']:.0f} s, run {seconds:.0f} s; "
                  f"sampler k3 {r['sampler_kl_k3']:.2e} k1 {r['sampler_kl']:.2e} max {r['sampler_logprob_gap_max']:.2f}",
                  flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.results).write_text(json.dumps({"machine": machine(), "demo_flags": args.demo_flags,
                                                         "variants": dict(variants), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
