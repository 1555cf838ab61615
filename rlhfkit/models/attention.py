"""Attention for short sequences on the CPU: plain matmul-softmax-matmul instead of SDPA's CPU flash kernel.

    softmax(q kᵀ · s + mask) v,   mask = 0 where a query may attend a key, the dtype's minimum elsewhere

On this CPU (2 cores, bf16 inputs, SmolLM2's 9 query / 3 key-value heads of 64) SDPA's flash kernel is slow for
short sequences, its backward pass above all: forward + backward of one layer at batch 4 × 92 tokens took 8.5 ms
against 4.5 ms written out (batch 8: 17.2 vs 8.4 ms; 4 × 128: 11.6 vs 7.6; 4 × 160: 15.5 vs 11.7), and a whole
PPO update 0.84x as long. From ~175 keys on the flash kernel is faster (4 × 192: 13.7 vs 15.9 ms; 4 × 256: 18.8
vs 23.6; 1 × 1024: 38 vs 122) and needs no [B, H, L, L] weights kept for the backward pass, so longer sequences
and every other device keep SDPA (bench/attention_speed.py). So does fp32: there SDPA's kernel is the faster one
(4 × 92: 1.96 against 2.95 ms written out; 32 × 92: 17.2 against 24.3 ms). Kept weights are the cost: ~6 bytes × B·H·L² per
layer (1 GB more peak RSS at 32 × 92 tokens per update in bench/grpo_vs_trl.py).

`load_causal_lm` loads models with `attn_implementation=NAME`; masks are built as for SDPA (boolean, or None
when nothing is masked), so the two paths read the same masks. The engine's decode step makes the same choice
(`use_written_out`), so sampling and the trainers' forward passes compute the same attention.
"""

from __future__ import annotations

import torch
from torch import nn

NAME = "rlhfkit_sdpa"  # the attn_implementation name models are loaded with
MAX_EAGER_KEYS = 160  # up to this many keys the written-out attention runs on the CPU (measured crossover ~175)
# in fp32 SDPA's CPU kernel is the faster one (1.34-1.50x faster forward + backward at 4-32 × 92-160 tokens)
WRITTEN_OUT_DTYPES = (torch.bfloat16,)


def written_out_attention(query, key, value, mask: torch.Tensor, scaling: float) -> torch.Tensor:
    """softmax(q kᵀ · s + m) v with scores and softmax in fp32 and the weights cast to v's dtype, the order of
    SDPA's CPU flash kernel (outputs differ from it by about one bf16 rounding, not by bf16 scores).

    Args: query [B, Hq, Q, D]; key, value [B, Hkv, K, D] (Hq a multiple of Hkv: grouped-query attention);
        mask [B or 1, 1, Q, K] bool, True = may attend. A row with no key allowed (a left-padding position)
        gets uniform weights instead of NaN; its output is never read by a real position.
    Returns: [B, Hq, Q, D]."""
    groups = query.shape[1] // key.shape[1]
    with torch.autocast(query.device.type, enabled=False):
        key = key.repeat_interleave(groups, dim=1) if groups > 1 else key  # [B, Hq, K, D]
        value = value.repeat_interleave(groups, dim=1) if groups > 1 else value  # [B, Hq, K, D]
        scores = torch.matmul(query.float(), key.float().transpose(2, 3)) * scaling  # [B, Hq, Q, K]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1).to(value.dtype)  # [B, Hq, Q, K]
        return torch.matmul(weights, value)  # [B, Hq, Q, D]


def use_written_out(value: torch.Tensor, n_keys: int) -> bool:
    """Whether attention over `n_keys` keys is written out (CPU, values in WRITTEN_OUT_DTYPES, at most
    MAX_EAGER_KEYS keys) or left to SDPA. The values' dtype says whether the model runs in bf16: under autocast
    q and k are fp32 after the rotary embedding (its cos/sin follow the fp32 residual stream), v is not."""
    return value.device.type == "cpu" and value.dtype in WRITTEN_OUT_DTYPES and n_keys <= MAX_EAGER_KEYS


def attention(module: nn.Module, query, key, value, attention_mask, dropout: float = 0.0,
              scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """transformers' attention interface: the written-out attention for up to MAX_EAGER_KEYS keys on the CPU
    (without dropout), else transformers' SDPA. Returns (output [B, Q, Hq, D], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_len, k_len = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # no mask: causal self-attention over the whole input (or one unmasked query); with a cache and several
    # queries SDPA's alignment rules apply, so it keeps those
    simple = (attention_mask.dtype == torch.bool if attention_mask is not None
              else q_len == 1 or (q_len == k_len and causal))  # a float (additive) mask: SDPA takes it
    if (not use_written_out(value, k_len) or not simple or kwargs.get("softcap") is not None
            or (dropout and module.training)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if attention_mask is None:
        attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device)
        if q_len > 1:
            attention_mask = attention_mask.tril()
        attention_mask = attention_mask[None, None]  # [1, 1, Q, K]
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    return written_out_attention(query, key, value, attention_mask, scaling).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register NAME with transformers (attention function and SDPA's mask builder); returns NAME."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
