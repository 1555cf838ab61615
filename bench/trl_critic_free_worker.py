"""TRL 1.16's GRPOTrainer or RLOOTrainer timed step by step: the baseline side of bench/grpo_vs_trl.py and
bench/rloo_vs_trl.py (runs in bench/.venv-trl-dpo, which has the same transformers as rlhfkit).

Trains `trl.GRPOTrainer` / `trl.RLOOTrainer` (`--algo`) for `--steps` optimiser steps on local model folders
and writes one JSON object (also printed as the last stdout line):
    {"impl": "trl", "step_times_s": [...], "gen_times_s": [...], "scoring_times_s": [...],
     "logprob_times_s": [...], "training_times_s": [...], "peak_rss_mb": ..., ...}
All lists have one entry per step, warm-up included; the harness drops the first. One step is one generation
batch (prompts x k completions) and one AdamW step: per_device_train_batch_size = prompts x k,
gradient_accumulation_steps = 1 (so steps_per_generation = 1), num_iterations = 1.

Where the time goes, measured by wrapping the trainer's own methods (no change to its algorithm):
    generation = `_generate_single_turn` (policy.generate for the whole generation batch)
    scoring    = `_calculate_rewards` (the reward model's forward)
    logprobs   = `_get_per_token_logps_and_entropies` called without gradients (log π_old, log π_ref)
    training   = the rest of the step: advantages, the training forward/backward, AdamW
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
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

TRAINERS = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algo", choices=sorted(TRAINERS), required=True)
    p.add_argument("--policy", required=True, help="HF folder of the policy (and its reference)")
    p.add_argument("--reward-model", required=True, help="HF sequence-classification folder (num_labels=1)")
    p.add_argument("--prompts", required=True, help="JSONL with a `prompt` field; batch_size*steps rows")
    p.add_argument("--output", required=True, help="scratch folder for TRL's output_dir")
    p.add_argument("--result", required=True, help="where to write the JSON result")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8, help="prompts per step")
    p.add_argument("--group-size", type=int, default=4, help="k completions per prompt (num_generations)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-6, help="AdamW learning rate (TRL's default)")
    p.add_argument("--beta", type=float, required=True, help="KL coefficient (0: no reference model)")
    p.add_argument("--bf16", action="store_true", help="bf16=True (mixed precision: autocast, fp32 weights)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="TRL's own config default")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


class PhaseTimer:
    """Seconds spent in each phase since the last `take()`, by wrapping methods of the trainer class."""

    def __init__(self):
        self.seconds = dict.fromkeys(("generation", "scoring", "logprobs"), 0.0)
        self.nograd_forwards = 0  # no-grad log-prob passes over the whole batch (old and reference)
        self.completions: list[int] = []  # completions per generate call
        self.lengths: list[float] = []  # mean completion length per generate call (tokens, EOS included)
        self.current = "training"  # the phase running now (what is outside the wrapped methods is training)
        self.autocast: dict[str, bool] = {}  # phase -> whether a model's first layer ran under CPU autocast

    def wrap(self, cls: type, name: str, phase: str, *, only_without_grad: bool = False) -> None:
        fn = getattr(cls, name)

        def timed(trainer, *args, **kwargs):
            if only_without_grad and torch.is_grad_enabled():  # the same method computes the training forward
                return fn(trainer, *args, **kwargs)
            start, self.current = time.perf_counter(), phase
            out = fn(trainer, *args, **kwargs)
            self.seconds[phase] += time.perf_counter() - start
            self.current = "training"
            if phase == "logprobs":
                self.nograd_forwards += 1
            if phase == "generation":  # GRPO: (completion_ids, logprobs); RLOO: completion_ids (lists of ids)
                ids = out[0] if isinstance(out, tuple) else out
                self.completions.append(len(ids))
                self.lengths.append(sum(map(len, ids)) / len(ids))
            return out

        setattr(cls, name, timed)

    def watch_autocast(self, model: torch.nn.Module) -> None:
        """Record, per phase, whether `model`'s first decoder layer runs under torch.autocast: TRL's bf16=True
        is accelerate's mixed precision, which should wrap every forward pass in a bf16 autocast on CPU."""
        layer = model.base_model.layers[0]

        def record(*_):
            seen = self.autocast.get(self.current, False)
            self.autocast[self.current] = seen or torch.is_autocast_enabled("cpu")

        layer.register_forward_pre_hook(record)

    def take(self) -> dict[str, float]:
        seconds, self.seconds = self.seconds, dict.fromkeys(self.seconds, 0.0)
        nograd, self.nograd_forwards = self.nograd_forwards, 0
        return {**seconds, "nograd_forwards": nograd}


class StepClock(TrainerCallback):
    """Wall time of every optimiser step (generation, scoring, log-probs, training), split by the PhaseTimer;
    counts AdamW's real steps and records how the trainer set the model up."""

    def __init__(self, phases: PhaseTimer):
        self.phases = phases
        self.steps: list[dict[str, float]] = []
        self.optimizer_steps = 0
        self.setup: dict = {}
        self.start = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper around AdamW
        inner.register_step_post_hook(lambda *_: setattr(self, "optimizer_steps", self.optimizer_steps + 1))
        self.setup = {
            "optimizer": type(inner).__name__,
            "fused_adamw": bool(inner.defaults.get("fused")),
            "gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", False)),
            "param_dtype": str(next(model.parameters()).dtype),
        }

    def on_step_begin(self, args, state, control, **kwargs):
        self.phases.take()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        step_s = time.perf_counter() - self.start
        phase = self.phases.take()
        training_s = step_s - phase["generation"] - phase["scoring"] - phase["logprobs"]
        self.steps.append({"step": step_s, **phase, "training": training_s})


def chat_dataset(path: str, n: int) -> Dataset:
    """The first n prompts as one user turn each, so TRL applies the same chat template as rlhfkit does."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()][:n]
    if len(rows) < n:
        raise SystemExit(f"{path}: needs {n} prompts (batch_size x steps), has {len(rows)}")
    return Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])


def trainer_config(args: argparse.Namespace):
    config_cls, _ = TRAINERS[args.algo]
    rollouts = args.batch_size * args.group_size
    common = dict(
        output_dir=args.output,
        # one generation batch (batch_size prompts x k) = one micro-batch = one AdamW step, as in rlhfkit
        per_device_train_batch_size=rollouts, gradient_accumulation_steps=1, num_iterations=1,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens, max_steps=args.steps,
        temperature=args.temperature, top_p=1.0, top_k=0, beta=args.beta, epsilon=0.2,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0,
        disable_dropout=True, gradient_checkpointing=args.gradient_checkpointing,
        bf16=args.bf16, fp16=False,  # TRL's configs default to bf16=True: the fp32 rows turn it off
        use_cpu=True, seed=args.seed, data_seed=args.seed, save_strategy="no", eval_strategy="no",
        logging_steps=1, report_to=[], dataloader_num_workers=0, log_completions=False,
    )
    if args.algo == "grpo":
        # TRL's defaults, written out: token-mean loss ("dapo"), rewards scaled by the group's std, per-token
        # ratio, KL as a loss through k3·ρ (use_bias_correction_kl), as rlhfkit grpo's defaults
        common.update(loss_type="dapo", scale_rewards="group", importance_sampling_level="token",
                      use_bias_correction_kl=True, mask_truncated_completions=False)
    else:
        # TRL's default: k1 KL summed per sequence in the reward, leave-one-out baseline, sequence ratio
        common.update(normalize_advantages=False, mask_truncated_completions=False)
    return config_cls(**common)


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    _, trainer_cls = TRAINERS[args.algo]
    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    fp32 = {"dtype": torch.float32}
    policy = AutoModelForCausalLM.from_pretrained(args.policy, **fp32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1, **fp32)
    reward_tokenizer = AutoTokenizer.from_pretrained(args.reward_model)

    phases = PhaseTimer()
    phases.wrap(trainer_cls, "_generate_single_turn", "generation")
    phases.wrap(trainer_cls, "_calculate_rewards", "scoring")
    phases.wrap(trainer_cls, "_get_per_token_logps_and_entropies", "logprobs", only_without_grad=True)
    clock = StepClock(phases)
    trainer = trainer_cls(
        model=policy, reward_funcs=reward_model, args=trainer_config(args),
        train_dataset=chat_dataset(args.prompts, args.batch_size * args.steps), processing_class=tokenizer,
        reward_processing_classes=reward_tokenizer, callbacks=[clock],
    )
    for model in (policy, trainer.ref_model, reward_model):
        if model is not None:
            phases.watch_autocast(model)
    trainer.train()

    steps = clock.steps
    logged = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    result = {
        "impl": "trl",
        "algo": args.algo,
        "step_times_s": [s["step"] for s in steps],
        "gen_times_s": [s["generation"] for s in steps],
        "scoring_times_s": [s["scoring"] for s in steps],
        "logprob_times_s": [s["logprobs"] for s in steps],
        "training_times_s": [s["training"] for s in steps],
        "nograd_forwards_per_step": [s["nograd_forwards"] for s in steps],
        "completions_per_step": phases.completions,
        "response_len": [round(x, 1) for x in phases.lengths],
        "kl": [h.get("kl") for h in logged],
        "peak_rss_mb": own_peak_rss_mb(),
        "has_ref_model": trainer.ref_model is not None,
        "mixed_precision": trainer.accelerator.mixed_precision,
        "autocast_by_phase": phases.autocast,
        "optimizer_steps": clock.optimizer_steps,
        **clock.setup,
        "torch_threads": torch.get_num_threads(),
        "versions": {m.__name__: m.__version__ for m in map(__import__, ("trl", "transformers", "torch"))},
    }
    Path(args.result).write_text(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
