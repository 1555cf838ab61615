"""TRL 1.0.0's PPOTrainer timed step by step: the baseline side of bench/ppo_vs_trl.py (runs in bench/.venv-trl).

Runs `trl.experimental.ppo.PPOTrainer` for `--steps` rollout batches on local model folders and writes one JSON
object (also printed as the last stdout line):
    {"impl": "trl", "step_times_s": [...], "gen_times_s": [...], "scoring_times_s": [...],
     "training_times_s": [...], "gen_time_s": ..., "peak_rss_mb": ..., ...}
All lists have one entry per step, warm-up included; the harness drops the first.

Where the time goes, measured by wrapping TRL's own module-level functions (no change to its algorithm):
    generation = `batch_generation` (policy.generate for the whole rollout batch)
    scoring    = `get_reward` (value and reward model) + the no-grad `forward` (reference log-probs)
    training   = the rest of the step: GAE, then the PPO epochs (forward, backward, AdamW)
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
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)
from trl.experimental.ppo import PPOConfig, PPOTrainer
from trl.experimental.ppo import ppo_trainer as trl_ppo


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", required=True, help="HF folder of the policy (also the reference)")
    p.add_argument("--reward-model", required=True, help="HF sequence-classification folder (num_labels=1)")
    p.add_argument("--value-model", required=True, help="HF sequence-classification folder for the critic")
    p.add_argument("--prompts", required=True, help="JSONL with a `prompt` text field; needs batch_size*steps rows")
    p.add_argument("--output", required=True, help="scratch folder for TRL's output_dir")
    p.add_argument("--result", required=True, help="where to write the JSON result")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8, help="prompts per rollout batch")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--num-minibatches", type=int, default=2)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--lr", type=float, default=3e-6, help="AdamW learning rate (TRL's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gradient-checkpointing", action="store_true", help="TRL's own config default")
    # the GPU check (scripts/gpu_check.py) runs TRL on CUDA under bf16 autocast; the CPU bench uses neither
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (TrainingArguments.bf16)")
    return p.parse_args()


class PhaseTimer:
    """Seconds spent in each rollout phase since the last `take()`, by wrapping functions of TRL's module."""

    def __init__(self):
        self.seconds = {"generation": 0.0, "scoring": 0.0}
        self.response_lengths: list[int] = []

    def wrap(self, name: str, fn, phase: str, *, only_without_grad: bool = False):
        def timed(*args, **kwargs):
            if only_without_grad and torch.is_grad_enabled():  # `forward` is also the training forward pass
                return fn(*args, **kwargs)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.seconds[phase] += time.perf_counter() - start
            if name == "batch_generation":  # (query_responses, logits): logits has one row per new token
                self.response_lengths.append(out[1].shape[1])
            return out

        setattr(trl_ppo, name, timed)

    def take(self) -> dict[str, float]:
        seconds, self.seconds = self.seconds, dict.fromkeys(self.seconds, 0.0)
        return seconds


class StepClock(TrainerCallback):
    """Wall time of every PPO step (rollout + PPO epochs), split by the PhaseTimer."""

    def __init__(self, phases: PhaseTimer):
        self.phases = phases
        self.steps: list[dict[str, float]] = []
        self.last = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.phases.take()
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        step_time_s, self.last = now - self.last, now
        phase = self.phases.take()
        training_s = step_time_s - phase["generation"] - phase["scoring"]
        self.steps.append({"step": step_time_s, **phase, "training": training_s})


def prompt_dataset(path: str, tokenizer, n: int) -> Dataset:
    """The first n prompts, chat-templated and tokenised (TRL expects an `input_ids` column)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()][:n]
    if len(rows) < n:
        raise SystemExit(f"{path}: needs {n} prompts (batch_size x steps), has {len(rows)}")
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                      add_generation_prompt=True)
        for r in rows
    ]
    # the template already writes every special token; add_special_tokens would add another BOS
    return Dataset.from_dict({"input_ids": [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]})


def ppo_config(args: argparse.Namespace) -> PPOConfig:
    return PPOConfig(
        output_dir=args.output,
        # rollout batch = per_device_train_batch_size * gradient_accumulation_steps (* world_size 1) = batch_size.
        # With gradient_accumulation_steps=1 each minibatch (batch_size / num_mini_batches rows: TRL slices the
        # micro-batch from the minibatch) is one AdamW step: epochs x minibatches updates, as in rlhfkit.
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=args.num_minibatches,
        num_ppo_epochs=args.ppo_epochs,
        total_episodes=args.batch_size * args.steps,
        local_rollout_forward_batch_size=args.batch_size,  # the whole rollout batch in one generate call
        response_length=args.max_new_tokens,
        stop_token=None,  # no stop token: every response is exactly max_new_tokens long
        missing_eos_penalty=None,
        temperature=args.temperature,
        learning_rate=args.lr,
        num_sample_generations=0,  # no extra debug generations inside the timed loop
        gradient_checkpointing=args.gradient_checkpointing,  # TRL's configs default to True
        bf16=args.bf16,
        fp16=False,
        use_cpu=args.device == "cpu",
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=args.seed,
        dataloader_num_workers=0,
    )


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.policy, padding_side="left")  # queries are left-padded
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    fp32 = {"dtype": torch.float32}
    policy = AutoModelForCausalLM.from_pretrained(args.policy, **fp32)
    ref_policy = AutoModelForCausalLM.from_pretrained(args.policy, **fp32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1, **fp32)
    value_model = AutoModelForSequenceClassification.from_pretrained(args.value_model, num_labels=1, **fp32)

    phases = PhaseTimer()
    phases.wrap("batch_generation", trl_ppo.batch_generation, "generation")
    phases.wrap("get_reward", trl_ppo.get_reward, "scoring")
    phases.wrap("forward", trl_ppo.forward, "scoring", only_without_grad=True)
    clock = StepClock(phases)
    trainer = PPOTrainer(
        args=ppo_config(args),
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=prompt_dataset(args.prompts, tokenizer, args.batch_size * args.steps),
        callbacks=[clock],
    )
    optimizer_steps = []  # counts real AdamW steps (accelerate skips them while accumulating)
    trainer.optimizer.optimizer.register_step_post_hook(lambda *_: optimizer_steps.append(1))
    trainer.train()

    steps = clock.steps
    result = {
        "impl": "trl",
        "step_times_s": [s["step"] for s in steps],
        "gen_times_s": [s["generation"] for s in steps],
        "scoring_times_s": [s["scoring"] for s in steps],
        "training_times_s": [s["training"] for s in steps],
        "gen_time_s": sum(s["generation"] for s in steps[1:]) / max(1, len(steps) - 1),  # per timed step
        "peak_rss_mb": own_peak_rss_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None,
        "response_lengths": phases.response_lengths,
        "optimizer_steps": len(optimizer_steps),
        "torch_threads": torch.get_num_threads(),
        "versions": {m.__name__: m.__version__ for m in map(__import__, ("trl", "transformers", "torch"))},
    }
    Path(args.result).write_text(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
