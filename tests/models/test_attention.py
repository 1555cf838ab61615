"""The written-out attention (models/attention.py): its formula on a hand-computed case, and that a model loaded
with it computes what SDPA computes, in values and gradients, with and without left padding."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.models import attention
from rlhfkit.models.load import load_causal_lm


def test_written_out_attention_by_hand():
    """One head pair, 2 queries over 2 keys, the first query masked from the 2nd key; GQA: 2 query heads
    share one key/value head."""
    q = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]], [[0.0, 0.0], [1.0, 1.0]]]])  # [1, Hq=2, Q=2, D=2]
    k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # [1, Hkv=1, K=2, D]
    v = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # [1, Hkv=1, K=2, D]
    mask = torch.tensor([[True, False], [True, True]])[None, None]  # [1, 1, Q, K]
    out = attention.written_out_attention(q, k, v, mask, scaling=0.5)  # [1, Hq, Q, D]
    # head 0, query 0: only key 0 -> v0; query 1: scores (0, 1) -> weights (1, e) / (1 + e)
    w = 1 / (1 + math.e)
    expected_h0 = [[1.0, 2.0], [w * 1 + (1 - w) * 3, w * 2 + (1 - w) * 4]]
    # head 1, query 0: only key 0 -> v0; query 1: scores (0.5, 0.5) -> the mean of v0 and v1
    expected_h1 = [[1.0, 2.0], [2.0, 3.0]]
    torch.testing.assert_close(out, torch.tensor([[expected_h0, expected_h1]]))


def test_a_row_with_no_key_is_finite():
    """A left-padding query row that may attend nothing gets finite (uniform) weights, not NaN."""
    q, k, v = torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 4), torch.randn(1, 2, 2, 4)
    mask = torch.tensor([[False, False], [True, True]])[None, None]
    out = attention.written_out_attention(q, k, v, mask, scaling=0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, :, 0], v.mean(2))


def forward_and_grads(lm, impl, input_ids, attention_mask):
    lm.config._attn_implementation = impl
    lm.zero_grad()
    logits = lm(input_ids=input_ids, attention_mask=attention_mask).logits  # [B, L, V]
    real = attention_mask.bool()
    logits[real].logsumexp(-1).sum().backward()
    return logits[real].detach(), {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("padded", [True, False])
def test_model_computes_what_sdpa_computes(tiny_llama, padded, monkeypatch):
    """fp32: the loaded model (written-out attention, allowed in fp32 for this comparison) against the same
    weights with transformers' SDPA, on the real (non-padding) positions, logits and every gradient."""
    monkeypatch.setattr(attention, "WRITTEN_OUT_DTYPES", (torch.bfloat16, torch.float32))
    calls = []
    written = attention.written_out_attention
    monkeypatch.setattr(attention, "written_out_attention", lambda *a: calls.append(1) or written(*a))
    lm = load_causal_lm(tiny_llama)
    assert lm.config._attn_implementation == attention.NAME
    torch.manual_seed(0)
    input_ids = torch.randint(3, lm.config.vocab_size, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    if padded:
        attention_mask[0, :4] = 0
        attention_mask[1, :1] = 0
    ours, our_grads = forward_and_grads(lm, attention.NAME, input_ids, attention_mask)
    assert len(calls) == lm.config.num_hidden_layers  # the written-out path ran, once per layer
    sdpa, sdpa_grads = forward_and_grads(lm, "sdpa", input_ids, attention_mask)
    torch.testing.assert_close(ours, sdpa, atol=1e-5, rtol=1e-5)
    assert our_grads.keys() == sdpa_grads.keys() and our_grads
    for name in our_grads:
        torch.testing.assert_close(our_grads[name], sdpa_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_long_sequences_and_other_devices_keep_sdpa(monkeypatch):
    """More keys than MAX_EAGER_KEYS, an additive float mask, fp32, or a non-CPU tensor: SDPA."""
    calls = []
    monkeypatch.setattr("transformers.integrations.sdpa_attention.sdpa_attention_forward",
                        lambda *a, **k: calls.append(a[2].shape[2]) or (None, None))
    module = torch.nn.Module()
    n = attention.MAX_EAGER_KEYS
    bf16 = torch.bfloat16
    for keys in (n, n + 1):
        q, kv = torch.randn(1, 2, keys, 4, dtype=bf16), torch.randn(1, 2, keys, 4, dtype=bf16)
        attention.attention(module, q, kv, kv, None, scaling=0.5)
    q, kv = torch.randn(1, 2, 4, 4, dtype=bf16), torch.randn(1, 2, 4, 4, dtype=bf16)
    attention.attention(module, q, kv, kv, torch.zeros(1, 1, 4, 4), scaling=0.5)  # an additive float mask
    q, kv = torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    attention.attention(module, q, kv, kv, None, scaling=0.5)  # fp32
    assert calls == [n + 1, 4, 6]
    assert attention.use_written_out(torch.empty(1, dtype=bf16), 8)
    assert not attention.use_written_out(torch.empty(1, dtype=bf16, device="meta"), 8)
    assert not attention.use_written_out(torch.empty(1), 8)


def test_sdpa_matches_on_one_query_with_a_mask():
    """The engine's decode shape (one query per row, an additive mask's boolean form) against SDPA."""
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 1, 8), torch.randn(3, 2, 10, 8), torch.randn(3, 2, 10, 8)
    mask = torch.ones(3, 1, 1, 10, dtype=torch.bool)
    mask[0, ..., :3] = False
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    torch.testing.assert_close(attention.written_out_attention(q, k, v, mask, 0.3), expected)


def test_written_out_under_bf16_autocast_and_sdpa_in_fp32(tiny_llama, monkeypatch):
    """Under bf16 autocast (q, k fp32 after the rotary embedding, v bf16) every layer takes the written-out
    path; in fp32, where SDPA's CPU kernel is the faster one, none does."""
    calls = []
    written = attention.written_out_attention
    monkeypatch.setattr(attention, "written_out_attention", lambda *a: calls.append(1) or written(*a))
    lm = load_causal_lm(tiny_llama)
    input_ids = torch.randint(3, lm.config.vocab_size, (2, 7))
    with torch.no_grad():
        lm(input_ids=input_ids)
        assert calls == []
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lm(input_ids=input_ids)
    assert len(calls) == lm.config.num_hidden_layers
