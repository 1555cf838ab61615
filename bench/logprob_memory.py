"""Memory and time of the log-prob head (`models.policy.token_logprobs`) under autograd, three ways, each
variant in its own subprocess so that its peak RSS is its own:
  one-block   the [B, T, V] logits of the whole batch at once (rlhfkit before this lever)
  chunked     chunks of LOGIT_ROWS sequences; autograd still keeps every chunk's logits for backward
  ckpt        chunks under activation checkpointing: logits freed after forward, recomputed in backward
SmolLM2-135M shapes (H 576, V 49152, the LM head tied to the embedding), B = 32 sequences x T = 48 response
tokens (the GRPO bench's 8 prompts x 4 completions), with the entropy metric as the trainers compute it.
peak MB = the subprocess's peak RSS above its RSS once weights and hidden states exist; s = median
forward + backward over --reps after one warm-up. Ratios are against one-block, same run.

    .venv/bin/python bench/logprob_memory.py [--dtype fp32|bf16] [--batch 32] [--tokens 48] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from rlhfkit.models.policy import LOGIT_ROWS, token_logprobs

VARIANTS = {"one-block": dict(rows=10**9), "chunked": dict(rows=LOGIT_ROWS),
            "ckpt": dict(rows=LOGIT_ROWS, checkpoint_chunks=True)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(variant: str, dtype: str, batch: int, tokens: int, reps: int) -> dict:
    """One variant in this process: {peak_mb above the set-up, s per forward + backward}."""
    torch.manual_seed(0)
    head = nn.Linear(576, 49152, bias=False)
    hidden = torch.randn(batch, tokens, 576, requires_grad=True)
    response_ids = torch.randint(0, 49152, (batch, tokens))
    base = peak_rss_mb()
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            logprobs, entropy = token_logprobs(head, hidden, response_ids, with_entropy=True, **VARIANTS[variant])
        logprobs.sum().backward()
        times.append(time.perf_counter() - start)
        head.weight.grad = hidden.grad = None
    return {"peak_mb": peak_rss_mb() - base, "s": statistics.median(times[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variant", choices=tuple(VARIANTS), help=argparse.SUPPRESS)  # the subprocess's row
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        print(json.dumps(measure(args.variant, args.dtype, args.batch, args.tokens, args.reps)))
        return
    rows = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
        rows[variant] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    ref = rows["one-block"]
    print(f"log-prob head, B {args.batch} x T {args.tokens}, V 49152, {args.dtype}, forward + backward")
    print(f"{'variant':10s} {'peak MB':>8s} {'x one-block':>11s} {'s':>7s} {'x one-block':>11s}")
    for variant, r in rows.items():
        print(f"{variant:10s} {r['peak_mb']:8.0f} {r['peak_mb'] / ref['peak_mb']:11.2f} {r['s']:7.3f} "
              f"{r['s'] / ref['s']:11.2f}")


if __name__ == "__main__":
    main()
