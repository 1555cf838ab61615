"""Frozen matmul weights stored in bf16 (`models.load.store_frozen_matmuls`) against fp32 under bf16 autocast.

One PPO update of SmolLM2-135M with LoRA (r16, all linear layers) and a value head under bf16 autocast (forward +
backward + AdamW step, 44 prompt + 48 response tokens, one row left-padded) and the no-grad forward of the same
batch, for the same model built twice (same seed): once as loaded (fp32 base weights, which autocast casts at
every call), once with its frozen matmul weights stored in bf16. Rows take turns within each round, so ratios
within one run are what counts. It also checks that the two give bit-identical log-probs and gradients.

    .venv/bin/python bench/frozen_weights_speed.py [--rounds 5] [--batch 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from rlhfkit.config import PPOConfig  # noqa: E402
from rlhfkit.models.load import load_tokenizer, store_frozen_matmuls  # noqa: E402
from rlhfkit.trainers import loop  # noqa: E402
from rlhfkit.trainers.online import build_actor_critic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4, help="sequences per update (PPO's demo minibatch: 4)")
    args = parser.parse_args()
    cfg = PPOConfig(prompts="unused", output="unused")
    tokenizer = load_tokenizer(cfg.policy, padding_side="left")
    models = {}
    for name in ("fp32", "bf16"):
        torch.manual_seed(1)  # the same LoRA initialisation for both
        model = build_actor_critic(cfg, tokenizer, True).train()
        if name == "bf16":
            store_frozen_matmuls(model.lm, torch.bfloat16)
        models[name] = (model, loop.make_optimizer(model, cfg.optim, 100)[0])
    prompt_len, response_len = 44, 48
    ids = torch.randint(100, 40000, (args.batch, prompt_len + response_len))
    mask = torch.ones_like(ids)
    mask[0, :6] = 0

    def update(model, optimizer, step: bool = True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logprobs, values, _ = model(ids, mask, prompt_len, ids[:, prompt_len:], 0.7, with_entropy=True)
            loss = -logprobs.mean() + 0.1 * values.pow(2).mean()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        if step:
            optimizer.step()
        optimizer.zero_grad()
        return logprobs.detach(), grads

    (lp_a, g_a), (lp_b, g_b) = (update(*models[n], step=False) for n in ("fp32", "bf16"))
    identical = torch.equal(lp_a, lp_b) and all(torch.equal(a, b) for a, b in zip(g_a, g_b))
    times = {name: {"update": [], "no_grad": []} for name in models}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, (model, optimizer) in models.items():
            start = time.perf_counter()
            update(model, optimizer)
            middle = time.perf_counter()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                model(ids, mask, prompt_len, ids[:, prompt_len:], 0.7)
            if r:
                times[name]["update"].append(middle - start)
                times[name]["no_grad"].append(time.perf_counter() - middle)
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    print(f"{torch.get_num_threads()} threads, median of {args.rounds} rounds, batch {args.batch} x "
          f"{prompt_len + response_len} tokens; bit-identical log-probs and gradients: {identical}")
    print(f"{'frozen weights':>14} {'update s':>9} {'no-grad s':>9}")
    for name in models:
        print(f"{name:>14} {med[name]['update']:>9.3f} {med[name]['no_grad']:>9.3f}")
    print(f"{'bf16 x fp32':>14} {med['bf16']['update'] / med['fp32']['update']:>9.2f} "
          f"{med['bf16']['no_grad'] / med['fp32']['no_grad']:>9.2f}")


if __name__ == "__main__":
    main()
