"""TRL 1.16's GRPOTrainer on a built-in verifiable task: the baseline side of bench/grpo_task_vs_trl.py (runs in
bench/.venv-trl-dpo, made by `bash bench/setup_trl.sh grpo`).

Trains `trl.GRPOTrainer` with LoRA (peft) on a task's train rows (a JSONL file of {"prompt", "answer", "task"},
written by the bench), the reward being rlhfkit's own grader (`rlhfkit.tasks.correct`, pure Python, imported
from the repository: TRL passes the dataset's other columns to reward functions, as rlhfkit does), then saves
the policy with LoRA merged as an HF folder, which the bench evaluates with rlhfkit's evaluation so both sides
are scored by the same sampler. Writes one JSON object to --result:
    {"impl": "trl", "train_s": ..., "step_times_s": [...], "reward": [...], "kl": [...], "response_len": [...],
     "peak_rss_mb": ..., "versions": {...}}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from harness import ROOT, own_peak_rss_mb  # bench/ is this script's folder, so on sys.path
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

sys.path.insert(0, str(ROOT))  # rlhfkit.tasks is pure Python: its grader runs here without rlhfkit's deps
from rlhfkit.tasks import correct  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", required=True, help="HF folder of the policy (its reference: adapters off)")
    p.add_argument("--prompts", required=True, help="JSONL of the task's train rows (prompt, answer, task)")
    p.add_argument("--output", required=True, help="TRL's output_dir; the merged policy goes to OUTPUT/policy")
    p.add_argument("--result", required=True, help="where to write the JSON result")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True, help="prompts per step")
    p.add_argument("--group-size", type=int, required=True, help="k completions per prompt (num_generations)")
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--temperature", type=float, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--beta", type=float, required=True)
    p.add_argument("--lora-r", type=int, required=True)
    p.add_argument("--lora-alpha", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    return p.parse_args()


def task_reward(prompts, completions, answer, task, **_):
    """rlhfkit.tasks.correct on TRL's conversational completions ([{"role": "assistant", "content"}])."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return correct(prompts, texts, answer, task)


class StepClock(TrainerCallback):
    """Wall time of every optimiser step (generation included: one generation batch per step here)."""

    def __init__(self):
        self.step_times_s: list[float] = []
        self.start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_times_s.append(time.perf_counter() - self.start)


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.policy)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    policy = AutoModelForCausalLM.from_pretrained(args.policy, dtype=torch.float32)
    rows = [json.loads(line) for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"],
                                  "task": r["task"]} for r in rows])
    config = GRPOConfig(
        output_dir=args.output,
        # one generation batch (batch_size prompts x k) = one micro-batch = one AdamW step, as in rlhfkit
        per_device_train_batch_size=args.batch_size * args.group_size, gradient_accumulation_steps=1,
        num_iterations=1, num_generations=args.group_size, max_completion_length=args.max_new_tokens,
        max_steps=args.steps, temperature=args.temperature, top_p=1.0, top_k=0, beta=args.beta, epsilon=0.2,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        # TRL 1.16's defaults, written out: token-mean loss ("dapo"), rewards scaled by the group's std,
        # per-token ratio, KL as a loss through k3·ρ: rlhfkit grpo's defaults too
        loss_type="dapo", scale_rewards="group", importance_sampling_level="token", use_bias_correction_kl=True,
        mask_truncated_completions=False,
        disable_dropout=True, gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True,
        seed=args.seed, data_seed=args.seed, save_strategy="no", eval_strategy="no", logging_steps=1,
        report_to=[], dataloader_num_workers=0, log_completions=False,
    )
    lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")  # rlhfkit's --lora defaults
    clock = StepClock()
    trainer = GRPOTrainer(model=policy, reward_funcs=task_reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora, callbacks=[clock])
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start

    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(Path(args.output) / "policy")
    tokenizer.save_pretrained(Path(args.output) / "policy")
    logged = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    result = {
        "impl": "trl", "train_s": train_s, "step_times_s": clock.step_times_s,
        "reward": [h.get("reward") for h in logged], "kl": [h.get("kl") for h in logged],
        "response_len": [h.get("completions/mean_length") for h in logged],
        "clip_ratio": [h.get("clip_ratio/region_mean") for h in logged],
        "peak_rss_mb": own_peak_rss_mb(), "torch_threads": torch.get_num_threads(),
        "versions": {m.__name__: m.__version__ for m in map(__import__, ("trl", "transformers", "torch", "peft"))},
    }
    Path(args.result).write_text(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
