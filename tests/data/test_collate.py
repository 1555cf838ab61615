"""Causal-LM collation: chat-templated prompt left-padded, response + EOS right-padded, prompt masked."""

import torch

from rlhfkit.data.collate import (
    collate_preferences,
    encode_completions,
    pack_completions,
    tokenize_completions,
)
from rlhfkit.data.readers import PreferencePair
from rlhfkit.rollout import encode_prompts
from tests.conftest import make_tokenizer

TOK = make_tokenizer("llama")
PAD, EOS = TOK.pad_token_id, TOK.eos_token_id  # <|endoftext|> = 0, <|im_end|> = 2


def ids(*tokens):
    return TOK.convert_tokens_to_ids(list(tokens))


# the tiny template renders "the cat" as "<|im_start|>user the cat<|im_end|> <|im_start|>assistant ";
# "user" and "assistant" are not in the tiny vocabulary, so they become [UNK]
PROMPT_1 = ids("<|im_start|>", "[UNK]", "the", "cat", "<|im_end|>", "<|im_start|>", "[UNK]")  # 7 tokens
PROMPT_2 = ids("<|im_start|>", "[UNK]", "a", "dog", "is", "big", "<|im_end|>", "<|im_start|>", "[UNK]")  # 9
PROMPTS, RESPONSES = ["the cat", "a dog is big"], ["good", "very good dog"]


def test_prompt_left_padded_response_right_padded_and_masked():
    batch = encode_completions(TOK, PROMPTS, RESPONSES)
    # P = 9 (longest prompt), T = 4 (longest response "very good dog" + EOS)
    assert batch["input_ids"].tolist() == [
        [PAD, PAD] + PROMPT_1 + ids("good") + [EOS, PAD, PAD],
        PROMPT_2 + ids("very", "good", "dog") + [EOS],
    ]
    assert batch["attention_mask"].tolist() == [[0, 0] + [1] * 9 + [0, 0], [1] * 13]
    assert batch["response_ids"].tolist() == [ids("good") + [EOS, PAD, PAD],
                                              ids("very", "good", "dog") + [EOS]]
    # over the whole sequence (labels view): 0 on every prompt position, 1 on the response and its EOS
    labels_mask = torch.cat([torch.zeros(2, 9), batch["mask"]], 1)
    assert labels_mask.tolist() == [[0] * 9 + [1, 1, 0, 0], [0] * 9 + [1, 1, 1, 1]]


def test_prompt_block_is_what_generation_sees():
    """One templating implementation: the prompt block equals rollout.encode_prompts' left-padded ids."""
    query_ids, query_mask = encode_prompts(TOK, PROMPTS)
    batch = encode_completions(TOK, PROMPTS, RESPONSES)
    assert torch.equal(batch["input_ids"][:, :9], query_ids)
    assert torch.equal(batch["attention_mask"][:, :9], query_mask)


def test_without_chat_template_the_plain_prompt_is_used():
    batch = encode_completions(TOK, ["the cat"], ["good"], use_chat_template=False)
    assert batch["input_ids"].tolist() == [ids("the", "cat", "good") + [EOS]]
    assert batch["mask"].tolist() == [[1, 1]]


def test_chat_messages_prompt_uses_every_turn():
    messages = ({"role": "system", "content": "be nice"}, {"role": "user", "content": "the cat"})
    [ex] = tokenize_completions(TOK, [messages], ["good"])
    assert ex.prompt_ids == ids("<|im_start|>", "[UNK]", "be", "nice", "<|im_end|>") + PROMPT_1


def test_completion_only_off_counts_every_token_but_the_first():
    [ex] = tokenize_completions(TOK, ["the cat"], ["good"], completion_only=False)
    assert ex.prompt_ids == PROMPT_1[:1]
    assert ex.response_ids == PROMPT_1[1:] + ids("good") + [EOS]
    assert ex.mask == [1] * 8  # 6 prompt tokens + "good" + EOS


def test_truncation_keeps_the_prompt_end_and_the_response_start():
    # max_length 6: the response keeps max(6 - 9, 6 // 2) = 3 tokens (EOS cut), the prompt its last 3
    [ex] = tokenize_completions(TOK, ["a dog is big"], ["very good dog"], max_length=6)
    assert ex.prompt_ids == PROMPT_2[-3:]
    assert ex.response_ids == ids("very", "good", "dog")


def test_packing_cuts_the_stream_and_keeps_each_token_mask():
    examples = tokenize_completions(TOK, PROMPTS, RESPONSES)  # 7 + 2 and 9 + 4 tokens: a stream of 22
    stream = PROMPT_1 + ids("good") + [EOS] + PROMPT_2 + ids("very", "good", "dog") + [EOS]
    blocks = pack_completions(examples, max_length=10)  # [0:10], [10:20], [20:22]
    assert [b.prompt_ids + b.response_ids for b in blocks] == [stream[0:10], stream[10:20], stream[20:22]]
    assert [len(b.prompt_ids) for b in blocks] == [1, 1, 1]
    # stream flags: 7 zeros, 2 ones, 9 zeros, 4 ones; a block's mask is its flags after the first token
    assert [b.mask for b in blocks] == [[0] * 6 + [1, 1, 0], [0] * 7 + [1, 1], [1]]


def test_preferences_stack_chosen_then_rejected():
    pairs = [PreferencePair("the cat", "good", "bad dog"),
             PreferencePair("a dog is big", "very good dog", "bad")]
    batch = collate_preferences(lambda p, r: encode_completions(TOK, p, r), pairs)
    assert batch["response_ids"].tolist() == [
        ids("good") + [EOS, PAD, PAD], ids("very", "good", "dog") + [EOS],
        ids("bad", "dog") + [EOS, PAD], ids("bad") + [EOS, PAD, PAD],
    ]
    assert batch["mask"].sum(1).tolist() == [2, 4, 3, 2]
    assert batch["margin"].tolist() == [0.0, 0.0]
