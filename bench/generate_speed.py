"""Sampling speed of `rollout.generate`: the fast engine against transformers `generate`, in one process.

SmolLM2-135M-Instruct, 8 chat-templated prompts (rlhfkit/assets/prompts.jsonl), 48 new tokens, temperature 0.7,
bf16 autocast (fp32 master weights), as in PPO's defaults. Rows, timed in turns within each round so that load
from other processes hits every row alike (ratios within one run are what counts):
  hf          transformers generate, the plain model
  hf-lora     transformers generate through unmerged LoRA adapters (PPO's default path before the engine)
  fast-lora   rlhfkit.engine on the same LoRA model (merged bf16 copy, static KV cache)
  fast        rlhfkit.engine on the plain model
tok/s = B · T / wall seconds, T = decoding steps run (every row stops when all rows have ended), median over
rounds; cpu tok/s divides by this process's CPU seconds instead (less sensitive to other processes taking
turns on the cores, but it counts the spinning of waiting OpenMP threads: use it with --threads 1).
Also printed: the one-off copy build, one `sync` (LoRA merge + cast, paid once per optimiser update), and the
copy's size.

    .venv/bin/python bench/generate_speed.py [--rounds 5] [--batch 8] [--max-new-tokens 48] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from rlhfkit import engine  # noqa: E402
from rlhfkit.config import GenerationConfig, LoraConfig  # noqa: E402
from rlhfkit.models.load import apply_lora, load_causal_lm, load_tokenizer  # noqa: E402
from rlhfkit.rollout import generate  # noqa: E402

PROMPTS = Path(__file__).resolve().parent.parent / "rlhfkit" / "assets" / "prompts.jsonl"
MODEL = "smollm2-135m-instruct"


def timed_generate(lm, tokenizer, prompts, gen_cfg, seed: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, B · T) of one `rollout.generate` under bf16 autocast."""
    torch.manual_seed(seed)
    start, start_cpu = time.perf_counter(), time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        roll = generate(lm, tokenizer, prompts, gen_cfg)
    return time.perf_counter() - start, time.process_time() - start_cpu, roll.response_ids.numel()


def copy_costs(lora_lm) -> dict[str, float]:
    """Build time and size of the engine's bf16 copy of `lora_lm`, and the time of one sync."""
    start = time.perf_counter()
    sampler = engine.Sampler(lora_lm, torch.bfloat16)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    sampler.sync(lora_lm)
    sync_s = time.perf_counter() - start
    return {"copy_build_s": build_s, "sync_s": sync_s, "copy_mb": sampler.copy_bytes / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(MODEL, padding_side="left")
    plain = load_causal_lm(MODEL)
    lora = apply_lora(load_causal_lm(MODEL), LoraConfig(use_lora=True), "CAUSAL_LM")
    prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines()][: args.batch]
    rows = {
        "hf": (plain, "hf"),
        "hf-lora": (lora, "hf"),
        "fast-lora": (lora, "fast"),
        "fast": (plain, "fast"),
    }
    seconds: dict[str, list[float]] = {name: [] for name in rows}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in rows}
    tokens: dict[str, list[int]] = {name: [] for name in rows}
    for round_ in range(args.rounds + 1):  # round 0 warms up (allocations, oneDNN kernels, the engine's copies)
        for name, (lm, which) in rows.items():
            gen_cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0.7, engine=which)
            s, cpu_s, n = timed_generate(lm, tokenizer, prompts, gen_cfg, seed=round_)
            if round_:
                seconds[name].append(s)
                cpu_seconds[name].append(cpu_s)
                tokens[name].append(n)
    tok_s = {name: statistics.median(n / s for n, s in zip(tokens[name], seconds[name])) for name in rows}
    cpu_tok_s = {name: statistics.median(n / s for n, s in zip(tokens[name], cpu_seconds[name])) for name in rows}
    print(f"{MODEL}, batch {args.batch}, {args.max_new_tokens} new tokens, bf16 autocast, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds")
    print(f"{'row':<10} {'tok/s':>7} {'s/call':>7} {'x hf':>6} {'x hf-lora':>9} {'cpu tok/s':>10} {'x hf':>6}")
    for name in rows:
        print(f"{name:<10} {tok_s[name]:7.0f} {statistics.median(seconds[name]):7.2f} "
              f"{tok_s[name] / tok_s['hf']:6.2f} {tok_s[name] / tok_s['hf-lora']:9.2f} "
              f"{cpu_tok_s[name]:10.0f} {cpu_tok_s[name] / cpu_tok_s['hf']:6.2f}")
    costs = copy_costs(lora)
    print(f"engine copy of the LoRA policy: {costs['copy_mb']:.0f} MB, built in {costs['copy_build_s']:.2f} s; "
          f"one sync (LoRA merge + bf16 cast, after each optimiser update): {costs['sync_s']:.2f} s")


if __name__ == "__main__":
    main()
