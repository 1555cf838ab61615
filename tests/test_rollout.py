"""rollout.response_mask and the EOS cut in rollout.generate: nothing after the first EOS counts or is decoded."""

import pytest
import torch

import rlhfkit.engine
from rlhfkit.config import GenerationConfig
from rlhfkit.models.load import load_causal_lm, load_tokenizer
from rlhfkit.rollout import encode_prompts, generate, response_mask

EOS = 2  # any id works for response_mask; 2 is <|im_end|>, the tiny tokenizer's EOS


@pytest.mark.parametrize(
    "response_ids, mask, ended",
    [
        # EOS in the middle: 1 up to and incl. the FIRST EOS; the second EOS is after it and does not count
        ([[5, EOS, 7, EOS]], [[1, 1, 0, 0]], [True]),
        ([[5, 6, 7, 8]], [[1, 1, 1, 1]], [False]),  # no EOS: every token counts (hit max_new_tokens)
        ([[EOS, 5, 6, 7]], [[1, 0, 0, 0]], [True]),  # EOS first: the EOS alone counts
        ([[5, 6, 7, EOS]], [[1, 1, 1, 1]], [True]),  # EOS last: all count, and it ended
        ([[EOS]], [[1]], [True]),
        ([[9]], [[1]], [False]),
    ],
)
def test_response_mask_hand_cases(response_ids, mask, ended):
    got_mask, got_ended = response_mask(torch.tensor(response_ids), EOS)
    assert got_mask.dtype.is_floating_point
    assert got_mask.tolist() == mask
    assert got_ended.tolist() == ended


def test_response_mask_rows_are_independent():
    """A batch gives each row its own cut (the first EOS of that row, not of the batch)."""
    response_ids = torch.tensor([[5, EOS, 7, EOS], [5, 6, 7, 8], [EOS, 5, 6, 7], [5, 6, EOS, 0]])
    mask, ended = response_mask(response_ids, EOS)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]]
    assert ended.tolist() == [True, False, True, True]


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_generate_cuts_after_the_first_eos(tiny_llama, engine, monkeypatch):
    """`generate` keeps the sampled tokens up to and incl. the first EOS, pads the rest, and decodes the
    text before the EOS, whichever sampler drew them. `ended` comes from the response only: every templated
    prompt holds an EOS (<|im_end|> closes the user turn), yet a response without EOS has not ended."""
    tok, lm = load_tokenizer(tiny_llama), load_causal_lm(tiny_llama)
    pad, eos = tok.pad_token_id, tok.eos_token_id
    assert pad != eos
    ids = tok.convert_tokens_to_ids
    sampled = torch.tensor([
        ids(["good", "<|im_end|>", "bad", "<|im_end|>", "dog"]),  # EOS at 1, then more tokens and a 2nd EOS
        ids(["very", "good", "dog", "sun", "moon"]),  # no EOS: hit max_new_tokens
        ids(["<|im_end|>", "good", "good", "good", "good"]),  # EOS first: an empty response
    ])
    prompts = ["the cat", "a dog is big", "sun"]
    query_ids, _ = encode_prompts(tok, prompts)
    assert (query_ids == eos).any(1).all()  # the prompts themselves contain the EOS token

    def fake_generate(input_ids, **kwargs):  # "samples" the fixed tokens above after the prompt
        from types import SimpleNamespace

        return SimpleNamespace(sequences=torch.cat([input_ids, sampled], 1))

    def fake_sample(self, query_ids, query_mask, **kwargs):  # the engine's sampler, same tokens
        return sampled, torch.zeros(sampled.shape)

    lm.generate = fake_generate
    monkeypatch.setattr(rlhfkit.engine.Sampler, "sample", fake_sample)
    roll = generate(lm, tok, prompts, GenerationConfig(max_new_tokens=5, temperature=1.0, engine=engine))
    assert roll.response_ids.tolist() == [
        ids(["good", "<|im_end|>"]) + [pad] * 3,
        sampled[1].tolist(),
        [eos] + [pad] * 4,
    ]
    assert roll.mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert roll.ended.tolist() == [True, False, True]
    assert roll.responses == ["good", "very good dog sun moon", ""]
    assert roll.response_len.tolist() == [2, 5, 1]
    assert torch.equal(roll.query_ids, query_ids)
