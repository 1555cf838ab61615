"""The sampler's gap to the trainer on SmolLM2-135M: how far the engine's log μ(y_t) is from the trainer's
log π_old(y_t) on the tokens it sampled, and what the engine's LoRA mode costs in speed.

Rows (16 chat-templated prompts from rlhfkit/assets/prompts.jsonl, 48 new tokens, τ 0.7, the trainer's setting:
frozen matmul weights stored in bf16 under bf16 autocast, log π_old from a full forward pass):
  plain        the model without LoRA (the gap is incremental bf16 decoding against a full pass)
  lora-separate / lora-merged   LoRA r16 after 5 AdamW steps at lr 1e-4 (a delta of the size PPO's first
               steps make), sampled with the engine's two LoRA modes (GenerationConfig.engine_lora)
  *-fp32       the same without autocast (the control: the gap should be ~1e-7)
Columns: sampler_kl = mean_t (log μ − log π_old) (k1), its k3, max_t |log μ − log π_old| (nats per token,
losses.sampler_gap), sampling tok/s (median of --rounds calls, B·T / wall s) and one `sync` (the copy's refresh
after an optimiser update). Results: bench/results/sampler_gap.json.

    .venv/bin/python bench/sampler_gap.py [--rounds 3] [--prompts 16] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from harness import RESULTS, machine  # noqa: E402

from rlhfkit import engine, losses  # noqa: E402
from rlhfkit.config import GenerationConfig, LoraConfig  # noqa: E402
from rlhfkit.device import native_bf16  # noqa: E402
from rlhfkit.models.load import (  # noqa: E402
    apply_lora,
    load_causal_lm,
    load_tokenizer,
    restore_frozen_matmuls,
    store_frozen_matmuls,
)
from rlhfkit.rollout import generate, policy_logprobs  # noqa: E402

PROMPTS = Path(__file__).resolve().parent.parent / "rlhfkit" / "assets" / "prompts.jsonl"
MODEL = "smollm2-135m-instruct"


def trained_lora(tokenizer, prompts: list[str], steps: int = 5, lr: float = 1e-4):
    """SmolLM2 with LoRA r16 after `steps` AdamW steps on the NLL of its own greedy answers: a small, realistic
    delta (B starts at 0), base weights stored in bf16 as the trainers store them."""
    lm = apply_lora(load_causal_lm(MODEL), LoraConfig(use_lora=True), "CAUSAL_LM")
    store_frozen_matmuls(lm, torch.bfloat16)
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=lr)
    batch = tokenizer([f"{p} Sure, here is my answer." for p in prompts[:8]], return_tensors="pt", padding=True)
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = lm(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return lm


def measure(lm, tokenizer, prompts, gen_cfg, bf16: bool, rounds: int) -> dict:
    """Sampler gap over `rounds` sampling calls (seeds 0..rounds-1) and the median sampling speed."""
    k1, k3, gap_max, tok_s = [], [], [], []
    for seed in range(rounds + 1):  # call 0 warms up (the copy, oneDNN kernels)
        torch.manual_seed(seed)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            start = time.perf_counter()
            roll = generate(lm, tokenizer, prompts, gen_cfg)
            seconds = time.perf_counter() - start
            old = policy_logprobs(lm, roll, gen_cfg.temperature)  # the trainer's log π_old: a full pass
        a, b, c = losses.sampler_gap(roll.sample_logprobs, old, roll.mask)
        if seed:
            k1.append(a.item()), k3.append(b.item()), gap_max.append(c.item())
            tok_s.append(roll.response_ids.numel() / seconds)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        sampler = engine.sampler_for(lm, gen_cfg.engine_lora)
    sampler.stepped = True  # as after an optimiser step
    start = time.perf_counter()
    sampler.sync(lm)
    return {"sampler_kl": statistics.mean(k1), "sampler_kl_k3": statistics.mean(k3),
            "sampler_logprob_gap_max": max(gap_max), "tok_s": statistics.median(tok_s),
            "sync_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    tokenizer = load_tokenizer(MODEL, padding_side="left")
    prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines()][: args.prompts]
    plain = load_causal_lm(MODEL)
    store_frozen_matmuls(plain, torch.bfloat16)  # the frozen copy the trainers keep; bit-identical under autocast
    lora = trained_lora(tokenizer, prompts)
    lora_fp32 = copy.deepcopy(lora)
    restore_frozen_matmuls(lora_fp32)  # an fp32 run keeps every weight in fp32
    rows = {"plain": (plain, "separate", True), "lora-separate": (lora, "separate", True),
            "lora-merged": (lora, "merged", True), "lora-fp32": (lora_fp32, "separate", False)}
    results = {}
    for name, (lm, mode, bf16) in rows.items():
        gen_cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0.7, engine_lora=mode)
        results[name] = measure(lm, tokenizer, prompts, gen_cfg, bf16, args.rounds)
    native = native_bf16("cpu")
    header = (f"{MODEL}, {args.prompts} prompts x {args.max_new_tokens} tokens, τ 0.7, {args.rounds} rounds, "
              f"{torch.get_num_threads()} threads; {machine()['cpu']}, native bf16: {native[0]} ({native[1]})")
    print(header)
    print(f"{'row':<14} {'sampler_kl':>11} {'k3':>10} {'max |gap|':>10} {'tok/s':>7} {'sync s':>7}")
    for name, r in results.items():
        print(f"{name:<14} {r['sampler_kl']:11.2e} {r['sampler_kl_k3']:10.2e} {r['sampler_logprob_gap_max']:10.3f} "
              f"{r['tok_s']:7.0f} {r['sync_s']:7.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sampler_gap.json").write_text(json.dumps({"setting": header, "machine": machine(),
                                                          "native_bf16": native[0], "rows": results}, indent=2))


if __name__ == "__main__":
    main()
