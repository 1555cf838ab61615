"""Attention on the CPU: rlhfkit's written-out attention (models/attention.py) against SDPA, in one process.

Two tables, rows taking turns within each round (ratios within one run are what counts):
  layer   one attention layer of SmolLM2-135M's shape (9 query / 3 key-value heads of 64), bf16 inputs
          (`--layer-dtype fp32`: fp32, where rlhfkit keeps SDPA), forward + backward, at several (batch, length); SDPA's CPU flash kernel against the written-out
          attention (no MAX_EAGER_KEYS cut-off here: this table is where the cut-off comes from)
  update  one PPO update of SmolLM2-135M with LoRA and a value head under bf16 autocast (forward + backward,
          44 prompt + 48 response tokens, two rows left-padded), and the no-grad forward of the same batch,
          with the model's attention set to SDPA and to rlhfkit's

    .venv/bin/python bench/attention_speed.py [--rounds 5] [--layer-dtype bf16|fp32] [--layers-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rlhfkit.config import PPOConfig  # noqa: E402
from rlhfkit.models import attention  # noqa: E402
from rlhfkit.models.load import load_tokenizer  # noqa: E402
from rlhfkit.trainers import loop  # noqa: E402
from rlhfkit.trainers.online import build_actor_critic  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64  # SmolLM2-135M
# (batch, length): 92 = the demo's PPO batch; 128-256 bracket the cut-off (attention.MAX_EAGER_KEYS)
SHAPES = [(4, 92), (8, 92), (4, 128), (4, 160), (4, 192), (4, 256), (2, 512), (1, 1024)]


def layer_rows(rounds: int, dtype: torch.dtype = torch.bfloat16) -> list[dict]:
    rows = []
    for batch, length in SHAPES:
        q = torch.randn(batch, HEADS, length, HEAD_DIM, dtype=dtype, requires_grad=True)
        k = torch.randn(batch, KV_HEADS, length, HEAD_DIM, dtype=dtype, requires_grad=True)
        v = torch.randn(batch, KV_HEADS, length, HEAD_DIM, dtype=dtype, requires_grad=True)
        mask = torch.ones(length, length, dtype=torch.bool).tril()[None, None].repeat(batch, 1, 1, 1)
        mask[0, ..., : length // 8] = False  # one left-padded row
        variants = {
            # as transformers' SDPA path does with a mask: K/V repeated per query head, then the flash kernel
            "sdpa": lambda q=q, k=k, v=v, m=mask: F.scaled_dot_product_attention(
                q, k.repeat_interleave(HEADS // KV_HEADS, 1), v.repeat_interleave(HEADS // KV_HEADS, 1),
                attn_mask=m, scale=0.125),
            "written": lambda q=q, k=k, v=v, m=mask: attention.written_out_attention(q, k, v, m, 0.125),
        }
        times = {name: [] for name in variants}
        for r in range(rounds + 1):
            for name, fn in variants.items():
                start = time.perf_counter()
                for _ in range(5):
                    fn().float().sum().backward()
                if r:  # round 0 warms up
                    times[name].append((time.perf_counter() - start) / 5 * 1e3)
        sdpa, written = (statistics.median(times[n]) for n in ("sdpa", "written"))
        rows.append({"batch": batch, "length": length, "sdpa_ms": sdpa, "written_ms": written,
                     "written_x_sdpa": written / sdpa})
    return rows


def update_rows(rounds: int) -> list[dict]:
    cfg = PPOConfig(prompts="unused", output="unused")
    tokenizer = load_tokenizer(cfg.policy, padding_side="left")
    model = build_actor_critic(cfg, tokenizer, True).train()
    optimizer, _ = loop.make_optimizer(model, cfg.optim, 100)
    config = model.lm.get_base_model().config
    rows = []
    for batch in (4, 8):
        prompt_len, response_len = 44, 48
        ids = torch.randint(100, 40000, (batch, prompt_len + response_len))
        mask = torch.ones_like(ids)
        mask[0, :6], mask[1, :3] = 0, 0
        times = {impl: {"update": [], "no_grad": []} for impl in ("sdpa", attention.NAME)}
        for r in range(rounds + 1):
            for impl, t in times.items():
                config._attn_implementation = impl
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logprobs, values, _ = model(ids, mask, prompt_len, ids[:, prompt_len:], 0.7, with_entropy=True)
                    loss = -logprobs.mean() + 0.1 * values.pow(2).mean()
                loss.backward()
                optimizer.zero_grad()
                middle = time.perf_counter()
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    model(ids, mask, prompt_len, ids[:, prompt_len:], 0.7)
                if r:
                    t["update"].append(middle - start)
                    t["no_grad"].append(time.perf_counter() - middle)
        med = {impl: {k: statistics.median(v) for k, v in t.items()} for impl, t in times.items()}
        ours, sdpa = med[attention.NAME], med["sdpa"]
        rows.append({"batch": batch, "update_s": {"sdpa": sdpa["update"], "rlhfkit": ours["update"]},
                     "update_x_sdpa": ours["update"] / sdpa["update"],
                     "no_grad_s": {"sdpa": sdpa["no_grad"], "rlhfkit": ours["no_grad"]},
                     "no_grad_x_sdpa": ours["no_grad"] / sdpa["no_grad"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layer-dtype", choices=["bf16", "fp32"], default="bf16", help="inputs of the layer rows")
    parser.add_argument("--layers-only", action="store_true", help="skip the PPO update rows")
    args = parser.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.layer_dtype]
    print(f"{torch.get_num_threads()} threads, median of {args.rounds} rounds")
    print(f"one attention layer, {args.layer_dtype} inputs, forward + backward (ms)")
    print(f"{'batch':>5} {'length':>6} {'sdpa':>8} {'written':>8} {'x sdpa':>7}")
    for row in layer_rows(args.rounds, dtype):
        print(f"{row['batch']:>5} {row['length']:>6} {row['sdpa_ms']:>8.2f} {row['written_ms']:>8.2f} "
              f"{row['written_x_sdpa']:>7.2f}")
    if args.layers_only:
        return
    print("one PPO update of SmolLM2-135M (LoRA, value head, bf16 autocast, 92 tokens), seconds")
    print(f"{'batch':>5} {'sdpa':>7} {'rlhfkit':>7} {'x sdpa':>7}   no-grad: {'sdpa':>6} {'rlhfkit':>7} {'x sdpa':>7}")
    for row in update_rows(args.rounds):
        print(f"{row['batch']:>5} {row['update_s']['sdpa']:>7.3f} {row['update_s']['rlhfkit']:>7.3f} "
              f"{row['update_x_sdpa']:>7.2f}   {'':9}{row['no_grad_s']['sdpa']:>6.3f} "
              f"{row['no_grad_s']['rlhfkit']:>7.3f} {row['no_grad_x_sdpa']:>7.2f}")


if __name__ == "__main__":
    main()
