"""Response log-probs of a padded causal-LM batch equal a plain full forward of each unpadded sequence."""

import torch

from rlhfkit.data.collate import encode_completions
from rlhfkit.models.load import load_causal_lm, load_tokenizer
from rlhfkit.models.policy import Policy, completion_logprobs, sequence_logprobs


def manual_logprobs(lm, prompt_ids: list[int], response_ids: list[int]) -> torch.Tensor:
    """log p(y_t | x, y_<t) from one unpadded forward: the logits at position j predict token j + 1."""
    full = torch.tensor([prompt_ids + response_ids])
    logp = lm(full).logits[0].log_softmax(-1)  # [L, V]
    positions = range(len(prompt_ids) - 1, len(full[0]) - 1)
    return torch.stack([logp[j, full[0, j + 1]] for j in positions])  # [T]


@torch.no_grad()
def test_sequence_logprobs_sum_response_tokens_only(tiny_llama):
    tok, lm = load_tokenizer(tiny_llama), load_causal_lm(tiny_llama).eval()
    prompts, responses = ["the cat", "a dog is big"], ["good", "very good dog"]
    batch = encode_completions(tok, prompts, responses)  # row 0 has 2 pad tokens on each side
    summed, n_tokens = sequence_logprobs(Policy(lm), batch)
    per_token = completion_logprobs(Policy(lm), batch)
    assert n_tokens.tolist() == [2, 4]  # response + EOS
    for i, (p, r) in enumerate(zip(prompts, responses)):
        messages = [{"role": "user", "content": p}]
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
        response_ids = tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        expected = manual_logprobs(lm, prompt_ids, response_ids)
        assert torch.allclose(per_token[i, : len(expected)], expected, atol=1e-5)
        assert abs(summed[i].item() - expected.sum().item()) < 1e-5  # padding positions add nothing


def test_chunked_logprobs_equal_one_block_in_value_and_gradient(monkeypatch):
    """The checkpointed chunks of the vocabulary projection change neither the numbers nor the gradients."""
    from rlhfkit.losses import entropy_from_logits
    from rlhfkit.models import policy as policy_mod

    torch.manual_seed(0)
    head = torch.nn.Linear(6, 11, bias=False)
    hidden = torch.randn(3, 5, 6, requires_grad=True)  # [B, T, H]
    ids = torch.randint(0, 11, (3, 5))  # [B, T]

    def reference():  # one [B, T, V] block, the textbook way
        logits = head(hidden) / 0.7
        lp = logits.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return lp, entropy_from_logits(logits)

    monkeypatch.setattr(policy_mod, "LOGIT_CHUNK_TOKENS", 4)  # 15 positions -> chunks of 4, 4, 4, 3
    grads = []
    for fn in (reference, lambda: policy_mod.token_logprobs(head, hidden, ids, 0.7, True, entropy_grad=True)):
        lp, ent = fn()
        assert lp.shape == ent.shape == (3, 5)
        (lp.sum() + 0.3 * ent.sum()).backward()
        grads.append((lp.detach(), ent.detach(), hidden.grad.clone(), head.weight.grad.clone()))
        hidden.grad, head.weight.grad = None, None
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)
    # a metric entropy (entropy_grad=False) stays out of the graph
    lp, ent = policy_mod.token_logprobs(head, hidden, ids, 0.7, True)
    assert lp.requires_grad and not ent.requires_grad
