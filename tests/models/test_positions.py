"""Left padding must not shift positions: on a model with ABSOLUTE position embeddings (GPT-2), a left-padded
prompt gives the same response log-probs as the unpadded one. (RoPE models cannot tell: a constant shift of
every position leaves their attention scores unchanged, so the Llama tests cannot catch missing position ids.)"""

import pytest
import torch

from rlhfkit.models import policy
from rlhfkit.models.policy import response_logprobs

PAD = 0


@pytest.fixture(scope="module")
def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=40, n_positions=32, n_embd=32, n_layer=2, n_head=4, pad_token_id=PAD,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12]]  # 3 and 5 tokens: the first is left-padded by 2
RESPONSES = [[20, 21, 22], [23, 24, 25]]


def batch_logprobs(lm, prompts, responses):
    """[left-padded prompts ; responses] -> response log-probs [B, T] (temperature 0.7, as in PPO)."""
    width = max(map(len, prompts))
    prompt_ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])  # [B, P]
    prompt_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])  # [B, P]
    response_ids = torch.tensor(responses)  # [B, T]
    input_ids = torch.cat([prompt_ids, response_ids], 1)  # [B, P+T]
    attention_mask = torch.cat([prompt_mask, torch.ones_like(response_ids)], 1)  # [B, P+T]
    return response_logprobs(lm, input_ids, attention_mask, response_ids, temperature=0.7)


@torch.no_grad()
def test_left_padding_keeps_absolute_positions(tiny_gpt2, monkeypatch):
    padded = batch_logprobs(tiny_gpt2, PROMPTS, RESPONSES)  # [2, 3]
    for i in range(2):
        alone = batch_logprobs(tiny_gpt2, PROMPTS[i:i + 1], RESPONSES[i:i + 1])[0]  # no padding at all
        torch.testing.assert_close(padded[i], alone, atol=1e-5, rtol=0)

    # the check has teeth: positions 0, 1, 2, ... that count the 2 pad tokens move row 0's log-probs
    monkeypatch.setattr(policy, "position_ids_for",
                        lambda mask: torch.arange(mask.shape[1]).expand(mask.shape[0], -1))
    shifted = batch_logprobs(tiny_gpt2, PROMPTS, RESPONSES)
    assert (shifted[0] - padded[0]).abs().max() > 1e-2
    torch.testing.assert_close(shifted[1], padded[1], atol=1e-5, rtol=0)  # the unpadded row is unchanged
