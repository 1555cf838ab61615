"""TRL 1.16's DPOTrainer timed step by step: the baseline side of bench/dpo_vs_trl.py (runs in bench/.venv-trl-dpo).

Trains `trl.DPOTrainer` for one epoch over `--data` (chat-format pairs) and writes one JSON object (also printed
as the last stdout line):
    {"impl": "trl", "step_times_s": [...], "reference_s": ..., "peak_rss_mb": ..., "optimizer_steps": ..., ...}
`step_times_s` has one entry per optimiser step, warm-up included; the harness drops the first. `reference_s` is
the one-off reference pass of `--precompute-ref` (TRL's `_precompute_ref_logps`, timed by wrapping it); without
it TRL runs the frozen reference model inside every step, so its cost is part of the step times.
This file imports nothing from rlhfkit (it runs in TRL's venv), only the standard-library bench/harness.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from datasets import Dataset
from harness import own_peak_rss_mb  # bench/ is this script's folder, so on sys.path
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", required=True, help="HF folder of the policy (its initial state is the reference)")
    p.add_argument("--data", required=True, help="JSONL with text fields prompt, chosen, rejected")
    p.add_argument("--output", required=True, help="scratch folder for TRL's output_dir")
    p.add_argument("--result", required=True, help="where to write the JSON result")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per optimiser step")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--precompute-ref", action="store_true", help="precompute_ref_log_probs=True (no ref model)")
    p.add_argument("--lora", action="store_true", help="LoRA r16 alpha 32 on all linear layers (ref = no adapter)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="TRL's own default (True in its configs)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


class StepClock(TrainerCallback):
    """Wall time of every optimiser step (forward of chosen+rejected, reference, backward, AdamW)."""

    def __init__(self):
        self.step_times_s: list[float] = []
        self.last = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_times_s.append(time.perf_counter() - self.last)


def chat_dataset(path: str) -> Dataset:
    """TRL's conversational preference format: the prompt as a user turn, each response as an assistant turn, so
    TRL applies the same chat template as rlhfkit does."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                               "chosen": [{"role": "assistant", "content": r["chosen"]}],
                               "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    policy = AutoModelForCausalLM.from_pretrained(args.policy, dtype=torch.float32)
    peft_config = None
    if args.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    config = DPOConfig(
        output_dir=args.output, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        num_train_epochs=1, learning_rate=args.lr, beta=args.beta, max_length=args.max_length,
        precompute_ref_log_probs=args.precompute_ref, precompute_ref_batch_size=args.batch_size * 2,
        gradient_checkpointing=args.gradient_checkpointing, bf16=args.bf16, use_cpu=True, seed=args.seed, data_seed=args.seed,
        save_strategy="no", eval_strategy="no", logging_steps=1, report_to=[], dataloader_num_workers=0,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
    )
    reference_s = [0.0]
    precompute = DPOTrainer._precompute_ref_logps  # called from __init__ when precompute_ref_log_probs=True

    def timed_precompute(self, *a, **kw):
        start = time.perf_counter()
        out = precompute(self, *a, **kw)
        reference_s[0] += time.perf_counter() - start
        return out

    DPOTrainer._precompute_ref_logps = timed_precompute
    clock = StepClock()
    trainer = DPOTrainer(model=policy, args=config, train_dataset=chat_dataset(args.data),
                         processing_class=tokenizer, callbacks=[clock], peft_config=peft_config)
    trainer.train()
    result = {
        "impl": "trl",
        "step_times_s": clock.step_times_s,
        "reference_s": reference_s[0],
        "peak_rss_mb": own_peak_rss_mb(),
        "has_ref_model": trainer.ref_model is not None,
        "optimizer_steps": trainer.state.global_step,
        "final_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
        "torch_threads": torch.get_num_threads(),
        "versions": {m.__name__: m.__version__ for m in map(__import__, ("trl", "transformers", "torch"))},
    }
    Path(args.result).write_text(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
