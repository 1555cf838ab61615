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


# --- multi-turn episodes (rollout.run_episodes with an environment) ---------------------------------------


class Talk:
    """A hand-made environment: answers each turn with the user message "the cat", done after the row's
    `turns` policy turns; step reward = the turn's number (1, 2, ...)."""

    def reset(self, row):
        self.turns = row["turns"]
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, messages, completion):
        turn = sum(m["role"] == "assistant" for m in messages) + 1
        return [{"role": "user", "content": "the cat"}], float(turn), turn == self.turns


def test_run_episodes_masks_exactly_the_sampled_tokens(tiny_llama, monkeypatch):
    """A scripted sampler. Turn 1: episode 0 samples `good <EOS>`, episode 1 `very good dog` (cut at
    max_new_tokens, no EOS) and is done (its row allows 1 turn). Turn 2 samples for episode 0 alone, on its
    prompt + turn 1 + the environment's turn as token ids: `sun <EOS>`. The response block is the sampled
    ids (mask 1, the sampler's log-probs) around the templated observation (mask 0, log-prob 0); a turn cut
    without EOS would be closed by the template's <|im_end|>, but episode 1 ends there."""
    from rlhfkit.data.collate import template_env_turn
    from rlhfkit.rollout import run_episodes

    tok, lm = load_tokenizer(tiny_llama), load_causal_lm(tiny_llama)
    pad, ids = tok.pad_token_id, tok.convert_tokens_to_ids
    script = [torch.tensor([ids(["good", "<|im_end|>", "bad"]), ids(["very", "good", "dog"])]),
              torch.tensor([ids(["sun", "<|im_end|>", "moon"])])]
    calls = []

    def fake_sample(self, query_ids, query_mask, **kwargs):
        calls.append((query_ids.clone(), query_mask.clone()))
        sampled = script[len(calls) - 1]
        return sampled, torch.full(sampled.shape, -0.5)

    monkeypatch.setattr(rlhfkit.engine.Sampler, "sample", fake_sample)
    prompts = ["the cat", "a dog is big"]
    roll, step_rewards = run_episodes(lm, tok, prompts, GenerationConfig(max_new_tokens=3), make_env=Talk,
                                      columns=[{"turns": 2}, {"turns": 1}], max_turns=3)
    history = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "good"}]
    env_text = template_env_turn(tok, history[:1], [{"role": "user", "content": "the cat"}], True)
    env_ids = tok(env_text, add_special_tokens=False)["input_ids"]
    assert env_ids == ids(["<|im_start|>", "[UNK]", "the", "cat", "<|im_end|>", "<|im_start|>", "[UNK]"])
    first = ids(["good", "<|im_end|>"]) + env_ids + ids(["sun", "<|im_end|>"])
    assert roll.response_ids.tolist() == [first, ids(["very", "good", "dog"]) + [pad] * (len(first) - 3)]
    env_zeros = [0.0] * len(env_ids)
    assert roll.mask.tolist() == [[1.0, 1.0] + env_zeros + [1.0, 1.0], [1.0] * 3 + [0.0] * (len(first) - 3)]
    assert roll.sample_logprobs.tolist() == (-0.5 * roll.mask).tolist()
    assert len(calls) == 2 and calls[1][0].shape[0] == 1  # turn 2: the one episode still running
    query0 = roll.query_ids[0][roll.query_mask[0].bool()].tolist()
    assert calls[1][0][0].tolist() == query0 + ids(["good", "<|im_end|>"]) + env_ids  # the training tokens
    assert torch.equal(calls[0][0], roll.query_ids)  # turn 1: the query itself
    assert roll.responses == ["sun", "very good dog"]  # each episode's last assistant message
    assert roll.turns.tolist() == [2.0, 1.0] and roll.ended.tolist() == [True, False]
    assert step_rewards == [1.0 + 2.0, 1.0]
    assert roll.conversations[0] == [*history, {"role": "user", "content": "the cat"},
                                     {"role": "assistant", "content": "sun"}]
    assert roll.conversations[1] == [{"role": "user", "content": "a dog is big"},
                                     {"role": "assistant", "content": "very good dog"}]


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_multi_turn_log_pi_old_is_the_samplers_on_every_policy_token(tiny_llama, engine):
    """Real sampling, 3 turns of up to 4 tokens, fp32: the trainer's forward over the assembled block gives
    the sampler's own log-probs on every mask-1 token (the same context and positions), and each run of
    mask-1 tokens decodes to that turn's assistant message."""
    from rlhfkit.rollout import policy_logprobs, run_episodes

    tok, lm = load_tokenizer(tiny_llama, padding_side="left"), load_causal_lm(tiny_llama)
    torch.manual_seed(0)
    roll, _ = run_episodes(lm, tok, ["the cat", "a dog is big", "sun"], make_env=Talk, max_turns=3,
                           gen_cfg=GenerationConfig(max_new_tokens=4, temperature=0.7, engine=engine),
                           columns=[{"turns": 3}, {"turns": 2}, {"turns": 3}])
    assert roll.turns.tolist() == [3.0, 2.0, 3.0]
    logprobs = policy_logprobs(lm, roll, 0.7)  # [B, T]
    torch.testing.assert_close(logprobs * roll.mask, roll.sample_logprobs, atol=2e-6, rtol=0)
    assert (roll.sample_logprobs[roll.mask == 0] == 0).all()
    for i, conversation in enumerate(roll.conversations):
        mask = roll.mask[i].tolist() + [0.0]
        starts = [t for t in range(len(mask) - 1) if mask[t] and (t == 0 or not mask[t - 1])]
        runs = [roll.response_ids[i, s:mask.index(0.0, s)] for s in starts]  # each policy turn's tokens
        assert tok.batch_decode([r[r != tok.eos_token_id] for r in runs], skip_special_tokens=True) == [
            m["content"] for m in conversation if m["role"] == "assistant"]


def test_single_turn_episodes_are_generate(tiny_llama):
    """Without an environment (`SingleTurn`) an episode is `generate`'s sample: same tensors, same text."""
    from rlhfkit.rollout import run_episodes

    tok, lm = load_tokenizer(tiny_llama, padding_side="left"), load_causal_lm(tiny_llama)
    prompts = ["the cat", ({"role": "system", "content": "be good"}, {"role": "user", "content": "a dog"})]
    gen = GenerationConfig(max_new_tokens=6, temperature=1.0)
    torch.manual_seed(1)
    roll, step_rewards = run_episodes(lm, tok, prompts, gen)
    torch.manual_seed(1)
    expected = generate(lm, tok, prompts, gen, sampler_logprobs=True)
    for key in ("query_ids", "query_mask", "response_ids", "mask", "sample_logprobs", "ended"):
        assert torch.equal(getattr(roll, key), getattr(expected, key)), key
    assert roll.responses == expected.responses and roll.prompts == prompts
    assert step_rewards == [0.0, 0.0] and roll.turns.tolist() == [1.0, 1.0]
