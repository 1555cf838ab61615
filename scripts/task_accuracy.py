"""The embedded policy's held-out accuracy on every built-in task before any RL (rlhfkit.tasks' docstring).

    .venv/bin/python scripts/task_accuracy.py [--max-new-tokens 12 24] [--samples 4] [--problems 64]

For each task and response budget: up to --problems held-out problems (all of the split when it holds fewer),
--samples samples each at τ 0.7 with the chat template, through the task demo's evaluation
(rlhfkit.eval.verifiable, rlhfkit's sampler, bf16 autocast where native). Prints pass@1, pass@k, format
failures and length per task, a few responses, and writes the table to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging

from rlhfkit import tasks
from rlhfkit.config import GenerationConfig
from rlhfkit.device import auto_dtype
from rlhfkit.eval.verifiable import evaluate_task_policies, summarize_task

POLICY = "smollm2-135m-instruct"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(tasks.TASKS))
    parser.add_argument("--max-new-tokens", nargs="+", type=int, default=[12, 24])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/task_accuracy.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    table = []
    for name in args.tasks:
        rows = tasks.task_rows(name, "heldout", args.problems, seed=args.seed)
        for max_new_tokens in args.max_new_tokens:
            gen = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.7)
            result = evaluate_task_policies({"sft": POLICY}, rows, reference=POLICY, gen_cfg=gen,
                                            samples_per_problem=args.samples, seed=args.seed,
                                            bf16=auto_dtype() == "bf16")
            m = summarize_task(result, "sft")["sft"]
            table.append({"task": name, "max_new_tokens": max_new_tokens, **m})
            print(f"{name:7s} T={max_new_tokens:3d} n={len(rows):3d}x{args.samples}: pass@1 {m['pass1']:.3f} "
                  f"{[round(x, 3) for x in m['pass1_ci95']]}, pass@{args.samples} {m['pass_k']:.3f}, "
                  f"format failures {m['format_failure']:.3f}, length {m['response_len']:.1f}, "
                  f"EOS {m['eos_rate']:.2f}", flush=True)
            for row in result["rows"][:3]:
                responses = [s["response"] for s in row["sft"]["samples"][:2]]
                print("    ", repr(row["prompt"][:60]), "->", responses)
    with open(args.out, "w") as f:
        json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
