"""RLOO speed and memory: rlhfkit against TRL 1.16's RLOOTrainer on the same model, prompts, reward, shapes.

Run with the project's venv (TRL runs in its own, made by bench/setup_trl.sh):
    bash bench/setup_trl.sh rloo
    .venv/bin/python bench/rloo_vs_trl.py [--steps 4] [--only all|trl|rlhfkit|ROW,...]

Identical setting of the paired rows: SmolLM2-135M-Instruct fine-tuned in full; the same 8 chat-templated
prompts per step (bench/.cache/prompts.jsonl, ppo_vs_trl.TOPICS) x k = 4 completions = 32 sequences of at most
48 new tokens (both stop at EOS), temperature 1.0, top-p 1, top-k 0; the same reward model (SmolLM2 with an
untrained score head, bench/.cache/smollm2-rm: its score is a reward for timing purposes); the reward minus β
Σ_t k1 with β = 0.05 (so both hold a frozen reference model), the leave-one-out baseline without further
normalisation, a sequence-level ratio clipped at 0.2, log π_old from a no-grad pass (both); one AdamW step (lr
1e-6, constant, clipping at 1.0) per generation batch (TRL: per_device_train_batch_size 32,
gradient_accumulation_steps 1, num_iterations 1); dropout off, nothing saved while training, gradient
checkpointing off (TRL's config default is on) unless the row says `ckpt`. Rows `fp32` (TRL bf16=False),
`bf16` (TRL bf16=True: accelerate's bf16 autocast over fp32 weights; rlhfkit --dtype bf16, the same), `fp32
ckpt`, and `rlhfkit defaults` (LoRA, bf16, the MiniLM reward model, rlhfkit's own lr/temperature; the same
shapes) against TRL bf16.

Per row: s/step (mean wall time of an optimiser step after the first, which is warm-up), the step split into
generation, RM scoring, no-grad log-prob passes and training, and the peak RSS of the subprocess (ru_maxrss
from os.wait4); ratios rlhfkit / TRL against the row under `vs` (issue 12's targets: <= 0.5x time, <= 0.7x
RSS). Results go to bench/results/rloo_vs_trl.json; rows not run this time are kept from the last run with the
same setting. The shared code is bench/critic_free_bench.py; the TRL side is bench/trl_critic_free_worker.py.
"""

import sys

from critic_free_bench import main

if __name__ == "__main__":
    sys.exit(main("rloo", __doc__.split("\n")[0]))
