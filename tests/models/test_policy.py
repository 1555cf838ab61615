"""Response log-probs of a padded causal-LM batch equal a plain full forward of each unpadded sequence."""

import json

import pytest
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


def test_checkpointed_head_equals_one_block_in_value_and_gradient(tiny_llama, monkeypatch):
    """Policy(checkpoint_head=True) recomputes the logits chunk by chunk: same log-probs, same gradients."""
    from rlhfkit.models import policy as policy_mod

    calls = []
    real_checkpoint = policy_mod.checkpoint
    monkeypatch.setattr(policy_mod, "checkpoint", lambda *a, **kw: calls.append(1) or real_checkpoint(*a, **kw))
    monkeypatch.setattr(policy_mod.token_logprobs, "__defaults__", (1.0, False, False, False, 3))  # rows 3
    tok, lm = load_tokenizer(tiny_llama), load_causal_lm(tiny_llama)
    batch = encode_completions(tok, ["the cat", "a dog is big", "sun", "moon sea"],
                               ["good", "very good dog", "sea sea", "tree"])
    grads = []
    for checkpoint_head in (False, True):
        policy = Policy(lm, checkpoint_head=checkpoint_head)
        summed, _ = sequence_logprobs(policy, batch)
        summed.sum().backward()
        grads.append((summed.detach(), [p.grad.clone() for p in lm.parameters()]))
        lm.zero_grad(set_to_none=True)
    assert len(calls) == 2  # the flag took the checkpointed path, in two chunks (4 rows: 3 and 1)
    (a, ga), (b, gb) = grads
    assert torch.allclose(a, b, atol=1e-6)
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(ga, gb))


@pytest.mark.parametrize("checkpoint_chunks", [False, True])
def test_token_logprobs_in_chunks_equal_one_block(checkpoint_chunks):
    """Chunks of rows (2 + 2 + 1 of 5), checkpointed or not, give the one-block log-probs, entropy and
    gradients; the entropy stays out of the graph unless entropy_grad."""
    from rlhfkit.models.policy import token_logprobs

    torch.manual_seed(0)
    head = torch.nn.Linear(6, 11, bias=False)
    hidden = torch.randn(5, 4, 6, requires_grad=True)
    response_ids = torch.randint(0, 11, (5, 4))
    results = []
    for rows in (5, 2):
        lp, ent = token_logprobs(head, hidden, response_ids, 0.7, with_entropy=True,
                                 checkpoint_chunks=checkpoint_chunks and rows == 2, rows=rows)
        assert not ent.requires_grad
        lp.square().sum().backward()
        results.append((lp.detach(), ent, hidden.grad.clone(), head.weight.grad.clone()))
        hidden.grad = head.weight.grad = None
    logits = head(hidden).detach() / 0.7  # hand-computed: log softmax(z)[y], H = −Σ p log p
    expected = torch.log_softmax(logits, -1).gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
    probs = torch.softmax(logits, -1)
    assert torch.allclose(results[0][0], expected, atol=1e-6)
    assert torch.allclose(results[0][1], -(probs * probs.log()).sum(-1), atol=1e-5)
    for one, chunked in zip(results[0], results[1]):
        assert torch.allclose(one, chunked, atol=1e-6)
    lp, ent = token_logprobs(head, hidden, response_ids, with_entropy=True, entropy_grad=True, rows=2)
    assert ent.requires_grad


def count_grad_forwards(lm) -> list[int]:
    """Counts, per decoder layer, the runs of its attention block with autograd on: training forwards and,
    under gradient checkpointing, their recomputation in the backward pass. A hook on the layer itself misses
    the recomputation (transformers checkpoints the layer's `forward`, not `__call__`), and one on the MLP
    too (the recomputation stops once the last saved tensor, the input of down_proj, is back)."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    counts = [0] * len(base.model.layers)
    for i, layer in enumerate(base.model.layers):
        layer.self_attn.register_forward_hook(
            lambda module, args, out, i=i: counts.__setitem__(i, counts[i] + torch.is_grad_enabled()))
    return counts


@pytest.mark.parametrize("use_lora", [False, True])
def test_offline_trainer_recomputes_every_layer_with_gradient_checkpointing(tiny_llama, tmp_path, monkeypatch,
                                                                           use_lora):
    """SFT/DPO's Policy under --gradient-checkpointing: one training step runs each layer twice (forward, then
    recomputed in the backward pass); without it, once."""
    from rlhfkit.config import SFTConfig, build
    from rlhfkit.trainers import loop
    from rlhfkit.trainers.sft import train_sft

    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps({"prompt": "the cat", "response": "good dog"}) + "\n" for _ in range(8)))
    real, counts = loop.trainable_policy, {}

    def counted(path, cfg):
        policy = real(path, cfg)
        counts["per_layer"] = count_grad_forwards(policy.lm)
        return policy

    monkeypatch.setattr(loop, "trainable_policy", counted)
    for checkpointing, runs_per_step in ((False, 1), (True, 2)):
        cfg = build(SFTConfig, {"model": tiny_llama, "data": str(data), "eval_data": str(data), "epochs": 1,
                                "output": str(tmp_path / f"sft{checkpointing}"), "batch_size": 8, "dtype": "fp32",
                                "gradient_checkpointing": checkpointing, "lora.use_lora": use_lora})
        train_sft(cfg)
        assert counts["per_layer"] == [runs_per_step, runs_per_step], checkpointing  # one step, two layers
