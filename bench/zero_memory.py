"""The memory ZeRO saves on CPU processes: peak resident memory per process of SmolLM2-135M full fine-tuning
(fp32, AdamW, no LoRA) for `sft` and `dpo`, one row per engine, side by side in one run:

  1 process       plain `rlhfkit CMD` (the global batch of the 2-process rows)
  DDP             `accelerate launch --multi_gpu --num_processes 2` (gloo)
  ZeRO-2 / ZeRO-3 `accelerate launch --config_file examples/accelerate/deepspeed_zero{2,3}_cpu.yaml`

Each process runs through `bench/rss_probe.py`, which writes its own peak RSS (VmHWM) at exit; a row reports
the larger of its 2 processes (rank 0 also gathers and saves the final model). `base` is the peak RSS of a
process that imports torch, transformers and accelerate and loads nothing (what no engine can save). The
accounting column is the per-parameter arithmetic of docs/guide/distributed.md: fp32 weights 4 B + gradients 4 B + AdamW's two
moments 8 B = 16 B per trained parameter, plus DDP's gradient buckets (4 B), divided as each engine divides
them (ZeRO-2: 4 + 12/N, ZeRO-3: 16/N), added to `base`. It ignores activations, the copy held while loading
and ZeRO-3's gathered layers, so measured - accounting shows what they cost.

    .venv/bin/python bench/zero_memory.py [--commands sft,dpo] [--rows 32] [--batch-size 4] [--max-length 128]

Results: bench/results/zero_memory.json. Memory, not time: the wall seconds are printed but not compared
(rows take turns on the same 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import CHILD_ENV, RESULTS, ROOT, machine, policy_folder

ACCELERATE = str(ROOT / ".venv" / "bin" / "accelerate")
PROBE = str(Path(__file__).resolve().parent / "rss_probe.py")
CONFIGS = {"ZeRO-2": ROOT / "examples/accelerate/deepspeed_zero2_cpu.yaml",
           "ZeRO-3": ROOT / "examples/accelerate/deepspeed_zero3_cpu.yaml"}
TARGET = 0.65  # issue 20: ZeRO-3's per-process peak at most 0.65x DDP's, for SFT and DPO


def launcher(engine: str, port: int) -> list[str]:
    if engine == "1 process":
        return [sys.executable]
    common = ["--num_processes", "2", "--main_process_port", str(port)]
    if engine == "DDP":
        return [ACCELERATE, "launch", "--multi_gpu", *common]
    return [ACCELERATE, "launch", "--config_file", str(CONFIGS[engine]), *common]


def command_args(command: str, data: Path, batch_size: int, max_length: int, ckpt: bool) -> list[str]:
    model = ["--model" if command == "sft" else "--policy", str(policy_folder())]
    sft = ["--response-field", "chosen"] if command == "sft" else []
    return [command, *model, "--data", str(data), *sft, "--no-lora", "--dtype", "fp32", "--epochs", "1",
            "--batch-size", str(batch_size), "--max-length", str(max_length), "--eval-fraction", "0.125",
            "--lr", "1e-5", *(["--gradient-checkpointing"] if ckpt else [])]


def run_row(command: str, engine: str, ckpt: bool, data: Path, work: Path, args) -> dict:
    name = f"{command}-{engine}-{'ckpt' if ckpt else 'plain'}".replace(" ", "_")
    out, rss = work / name, work / f"rss-{name}"
    processes = 1 if engine == "1 process" else 2
    batch = args.batch_size * (2 if processes == 1 else 1)  # the same global batch on every row
    cmd = [*launcher(engine, 29500 + len(os.listdir(work))), PROBE, str(rss),
           *command_args(command, data, batch, args.max_length, ckpt), "--output", str(out)]
    env = {**CHILD_ENV, "OMP_NUM_THREADS": str(2 // processes), "CUDA_VISIBLE_DEVICES": ""}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"command": command, "engine": engine, "activations": "checkpointed" if ckpt else "kept",
                "status": "failed", "message": proc.stderr[-1500:]}
    peaks = [json.loads(p.read_text())["peak_rss_mb"] for p in sorted(rss.glob("rss.*.json"))]
    share = next((line.split(":", 1)[1].strip() for line in proc.stderr.splitlines()
                  if "parameter elements" in line), "")
    return {"command": command, "engine": engine, "activations": "checkpointed" if ckpt else "kept",
            "status": "ok", "processes": processes,
            "peak_rss_mb": max(peaks), "per_rank_mb": peaks, "wall_s": round(wall, 1), "sharding": share}


def base_rss_mb() -> float:
    code = ("import torch, transformers, accelerate, rlhfkit.trainers.loop; from pathlib import Path; "
            "print([l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')][0])")
    line = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=CHILD_ENV,
                          check=True).stdout
    return int(line.split()[1]) / 1024


def accounting_mb(engine: str, n_params: int, base: float) -> float:
    per_param = {"1 process": 16, "DDP": 16 + 4, "ZeRO-2": 4 + 12 / 2, "ZeRO-3": 16 / 2}[engine]
    return base + per_param * n_params / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", default="sft,dpo")
    parser.add_argument("--engines", default="1 process,DDP,ZeRO-2,ZeRO-3")
    parser.add_argument("--rows", type=int, default=32, help="preference rows used (examples/prefs_train.jsonl)")
    parser.add_argument("--batch-size", type=int, default=4, help="per process (1 process: 2x)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--activations", default="kept,checkpointed",
                        help="kept: plain backward; checkpointed: --gradient-checkpointing (every row alike)")
    args = parser.parse_args()
    from safetensors import safe_open

    with safe_open(str(policy_folder() / "model.safetensors"), "pt") as f:
        n_params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    base = base_rss_mb()
    print(f"SmolLM2-135M: {n_params / 1e6:.1f}M parameters; base process {base:.0f} MB; {machine()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zero_memory_") as tmp:
        work = Path(tmp)
        data = work / "prefs.jsonl"
        lines = (ROOT / "examples" / "prefs_train.jsonl").read_text().splitlines()[:args.rows]
        data.write_text("\n".join(lines) + "\n")
        for command, ckpt, engine in [(c, a == "checkpointed", e) for c in args.commands.split(",")
                                      for a in args.activations.split(",") for e in args.engines.split(",")]:
                print(f"running {command} / {engine} / {'checkpointed' if ckpt else 'kept'} ...", flush=True)
                row = run_row(command, engine, ckpt, data, work, args)
                if row["status"] == "ok":
                    row["accounting_mb"] = round(accounting_mb(engine, n_params, base))
                rows.append(row)
                print("  " + json.dumps({k: v for k, v in row.items() if k != "message"}), flush=True)
                if row["status"] != "ok":
                    print(row["message"], flush=True)
    print("\n| command | engine | peak RSS per process (MB) | vs DDP | accounting (MB) |\n|---|---|---|---|---|")
    for row in rows:
        if row["status"] != "ok":
            print(f"| {row['command']} | {row['engine']} | failed | | |")
            continue
        ddp = next((r for r in rows if r["command"] == row["command"] and r["engine"] == "DDP"
                    and r["status"] == "ok"), None)
        row["vs_ddp"] = round(row["peak_rss_mb"] / ddp["peak_rss_mb"], 3) if ddp else None
        print(f"| {row['command']} | {row['engine']} | {row['peak_rss_mb']:.0f} | {row['vs_ddp'] or '-'} "
              f"| {row['accounting_mb']} |")
    for command in args.commands.split(","):
        z3 = next((r for r in rows if r["command"] == command and r["engine"] == "ZeRO-3"), None)
        if z3 and z3.get("vs_ddp") is not None:
            verdict = "met" if z3["vs_ddp"] <= TARGET else "NOT met"
            print(f"{command}: ZeRO-3 / DDP = {z3['vs_ddp']:.2f} (target <= {TARGET}: {verdict})")
    RESULTS.mkdir(exist_ok=True)
    setting = {"model": "SmolLM2-135M-Instruct", "params": n_params, "dtype": "fp32", "optimizer": "AdamW",
               "rows": args.rows, "batch_size_per_process": args.batch_size, "max_length": args.max_length,
               "base_rss_mb": round(base), "date": time.strftime("%Y-%m-%d")}
    (RESULTS / "zero_memory.json").write_text(json.dumps({"setting": setting, "machine": machine(), "rows": rows},
                                                         indent=1) + "\n")


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    main()
