"""rlhfkit.engine: the fast sampler samples exactly softmax(logits / τ) of the model it copies, reproducibly, in
agreement with transformers `generate`, from merged LoRA weights, and never touches the trained weights."""

import logging

import pytest
import torch

from rlhfkit import engine
from rlhfkit.config import GenerationConfig, LoraConfig
from rlhfkit.models.load import apply_lora, load_causal_lm, load_tokenizer, store_frozen_matmuls
from rlhfkit.models.policy import response_logprobs
from rlhfkit.rollout import encode_prompts, generate, uses_engine
from tests.conftest import make_tokenizer, save_tiny_llama
from tests.test_sampling import chi_square_p_value

PROMPTS = ["the cat", "a dog is very big and good", "sun"]  # different lengths: left padding matters
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256, tie_word_embeddings=True)


def save_tiny(path, model_type: str) -> str:
    """A tiny random causal LM of `model_type` with the word-level test tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if model_type == "llama":
        return save_tiny_llama(path)
    torch.manual_seed(0)
    tok = make_tokenizer()
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
               bos_token_id=tok.bos_token_id)
    if model_type == "gpt2":
        config = AutoConfig.for_model("gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=256, **ids)
    else:
        extra = {"head_dim": 8} if model_type == "qwen3" else {}
        config = AutoConfig.for_model(model_type, **SMALL, **extra, **ids)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module", params=engine.SUPPORTED_MODEL_TYPES)
def tiny_lm(request, tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp(request.param), request.param)


def lora_model(path, seed: int = 0):
    """A LoRA model whose adapters are not zero (B is zero-initialised: merged = base would test nothing)."""
    lm = apply_lora(load_causal_lm(path), LoraConfig(use_lora=True), "CAUSAL_LM")
    torch.manual_seed(seed)
    for name, param in lm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    return lm


def engine_sample(lm, tokenizer, prompts, tau=0.7, max_new_tokens=6, **kw):
    query_ids, query_mask = encode_prompts(tokenizer, prompts)
    response_ids, logprobs = engine.sampler_for(lm).sample(
        query_ids, query_mask, temperature=tau, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id, **kw)
    return query_ids, query_mask, response_ids, logprobs


# --------------------------------------------------------------------------- sample_tokens (pure)
def test_sample_tokens_hand_case():
    """logits [0, ln 3] at τ = 0.5 → softmax([0, 2 ln 3]) = [1, 9] / 10: P(y=1) = 0.9, log-prob ln 0.9."""
    logits = torch.tensor([[0.0, torch.log(torch.tensor(3.0))]]).expand(20000, 2)  # [B, V]
    tokens, logprobs = engine.sample_tokens(logits, 0.5, torch.Generator().manual_seed(0))
    share = tokens.float().mean().item()
    assert abs(share - 0.9) < 4 * (0.9 * 0.1 / 20000) ** 0.5  # 4 σ of a binomial share: 0.0085
    expected = torch.where(tokens == 1, torch.log(torch.tensor(0.9)), torch.log(torch.tensor(0.1)))
    torch.testing.assert_close(logprobs, expected, atol=1e-6, rtol=0)


def test_sample_tokens_never_draws_a_zero_probability_token():
    logits = torch.tensor([[0.0, -float("inf"), 0.0, -float("inf")]]).expand(5000, 4)  # [B, V]
    tokens, _ = engine.sample_tokens(logits, 1.0, torch.Generator().manual_seed(0))
    assert set(tokens.tolist()) == {0, 2}


# --------------------------------------------------------------------------- the decode loop
def test_step_logprobs_equal_a_full_forward(tiny_lm):
    """Each step's log-prob (static cache, left padding, positions, one token at a time) equals the teacher-forced
    forward over [prompt; response] that the trainers use, at fp32 rounding: wrong positions or masks fail."""
    lm, tokenizer = load_causal_lm(tiny_lm), load_tokenizer(tiny_lm, padding_side="left")
    torch.manual_seed(0)
    query_ids, query_mask, response_ids, logprobs = engine_sample(lm, tokenizer, PROMPTS, max_new_tokens=8)
    input_ids = torch.cat([query_ids, response_ids], 1)  # [B, P+T]
    attention_mask = torch.cat([query_mask, torch.ones_like(response_ids)], 1)  # [B, P+T]
    expected = response_logprobs(lm, input_ids, attention_mask, response_ids, 0.7)  # [B, T]
    counted = logprobs != 0  # rows that ended hold 0 after their EOS
    torch.testing.assert_close(logprobs[counted], expected[counted], atol=2e-5, rtol=0)
    # Llama and Qwen2 decode with llama_decode_step; Mistral (sliding window), Qwen3 (q/k norms) and GPT-2 with
    # their own forward: both paths are checked here
    assert engine.sampler_for(lm).lean == (lm.config.model_type in ("llama", "qwen2"))


def test_lora_copy_is_the_merged_model(tiny_llama):
    """fp32 + LoRA: the copy holds W + s·BA; its step log-probs equal the unmerged LoRA model's full forward."""
    lm, tokenizer = lora_model(tiny_llama), load_tokenizer(tiny_llama, padding_side="left")
    torch.manual_seed(0)
    query_ids, query_mask, response_ids, logprobs = engine_sample(lm, tokenizer, PROMPTS, max_new_tokens=8)
    sampler = engine.sampler_for(lm)
    assert sampler.model is not lm.get_base_model() and sampler.copy_bytes > 0
    expected = response_logprobs(lm, torch.cat([query_ids, response_ids], 1),
                                 torch.cat([query_mask, torch.ones_like(response_ids)], 1), response_ids, 0.7)
    counted = logprobs != 0
    torch.testing.assert_close(logprobs[counted], expected[counted], atol=2e-5, rtol=0)
    with lm.disable_adapter():  # the base model alone gives other log-probs: the LoRA delta is really merged
        base = response_logprobs(lm, torch.cat([query_ids, response_ids], 1),
                                 torch.cat([query_mask, torch.ones_like(response_ids)], 1), response_ids, 0.7)
    assert (base[counted] - logprobs[counted]).abs().max() > 1e-2


def test_fixed_seed_gives_identical_samples(tiny_llama):
    lm, tokenizer = lora_model(tiny_llama), load_tokenizer(tiny_llama, padding_side="left")
    gen_cfg = GenerationConfig(max_new_tokens=8, temperature=0.7)
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            draws.append(generate(lm, tokenizer, PROMPTS * 4, gen_cfg).response_ids)
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])  # the seed is really used
    ids = [engine_sample(lm, tokenizer, PROMPTS, generator=torch.Generator().manual_seed(3))[2] for _ in range(2)]
    assert torch.equal(ids[0], ids[1])


def test_eos_ends_a_row_and_the_loop_stops_when_all_ended(tiny_llama):
    """After a row's first EOS: pad, log-prob 0; the loop runs until the last row's EOS, not max_new_tokens."""
    lm, tokenizer = load_causal_lm(tiny_llama), load_tokenizer(tiny_llama, padding_side="left")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    head = lm.lm_head  # an LM head with a bias of +3 on EOS: P(EOS) ≈ e³ / (e³ + 105) ≈ 0.16 per step
    lm.lm_head = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        lm.lm_head.weight.copy_(head.weight)
        lm.lm_head.bias.zero_()[eos] = 3.0
    query_ids, query_mask = encode_prompts(tokenizer, PROMPTS * 4)
    ids, logprobs = engine.sampler_for(lm).sample(query_ids, query_mask, temperature=1.0, max_new_tokens=100,
                                                  eos_id=eos, pad_id=pad, generator=torch.Generator().manual_seed(0))
    is_eos = ids == eos  # [B, T]
    assert is_eos.any(1).all() and ids.shape[1] < 100  # every row ended, and the loop stopped early
    first = is_eos.float().argmax(1)  # [B]
    after = torch.arange(ids.shape[1])[None] > first[:, None]  # [B, T]
    assert (ids[after] == pad).all() and (logprobs[after] == 0).all()
    assert (logprobs[~after] < 0).all()
    assert len(set(first.tolist())) > 1 and ids.shape[1] == first.max().item() + 1


# --------------------------------------------------------------------------- distributions
def first_two_tokens(roll_ids: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.bincount(roll_ids[:, 0], minlength=vocab).double(),
            torch.bincount(roll_ids[:, 1], minlength=vocab).double())


def homogeneity_p_value(counts_a: torch.Tensor, counts_b: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson's χ² test that two count vectors come from one distribution (2 × k table, k − 1 d.o.f.);
    cells with a pooled expected count under min_expected are merged into one cell."""
    pooled = (counts_a + counts_b) / (counts_a.sum() + counts_b.sum())  # [V]
    small = pooled * min(counts_a.sum(), counts_b.sum()) < min_expected  # [V]
    table = torch.stack([counts_a, counts_b])  # [2, V]
    pooled_cell = table[:, small].sum(1, keepdim=True)  # [2, 1]
    table = torch.cat([table[:, ~small]] + ([pooled_cell] if pooled_cell.sum() > 0 else []), 1)  # [2, k]
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()  # [2, k]
    chi2 = ((table - expected) ** 2 / expected).sum()
    dof = torch.tensor(table.shape[1] - 1, dtype=torch.float64)
    return torch.special.gammaincc(dof / 2, chi2 / 2).item()


def test_homogeneity_test_has_power():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(106, dtype=torch.float64), -1)  # [V]
    other = torch.softmax(torch.log(probs) + 0.3 * torch.randn(106, dtype=torch.float64), -1)  # [V]
    draw = lambda p: torch.bincount(torch.multinomial(p, 4000, replacement=True), minlength=106).double()  # noqa: E731
    assert homogeneity_p_value(draw(probs), draw(probs)) > 1e-3
    assert homogeneity_p_value(draw(probs), draw(other)) < 1e-6


@pytest.mark.parametrize("use_lora", [False, True])
def test_agrees_with_hf_generate_in_distribution(tiny_llama, use_lora):
    """4000 two-token responses to one prompt from each sampler: the first token against softmax(logits / τ)
    (goodness of fit, both samplers), the second token's marginal against each other (homogeneity)."""
    lm = lora_model(tiny_llama) if use_lora else load_causal_lm(tiny_llama)
    tokenizer = load_tokenizer(tiny_llama, padding_side="left")
    tau, n, vocab = 0.7, 4000, len(tokenizer)
    rolls = {}
    for which in ("fast", "hf"):
        torch.manual_seed(0 if which == "fast" else 1)
        gen_cfg = GenerationConfig(max_new_tokens=2, temperature=tau, engine=which)
        rolls[which] = generate(lm, tokenizer, ["the cat"] * n, gen_cfg)
    assert all(r.response_ids.shape[1] == 2 for r in rolls.values())
    query_ids, query_mask = rolls["hf"].query_ids[:1], rolls["hf"].query_mask[:1]
    with torch.no_grad():
        probs = torch.softmax(lm(input_ids=query_ids, attention_mask=query_mask).logits[0, -1].double() / tau, -1)
    (first_fast, second_fast), (first_hf, second_hf) = (first_two_tokens(rolls[w].response_ids, vocab)
                                                        for w in ("fast", "hf"))
    assert chi_square_p_value(first_fast, probs) > 1e-3
    assert chi_square_p_value(first_hf, probs) > 1e-3
    # an EOS first leaves pad as the second token in both; the other rows' second tokens must agree
    assert homogeneity_p_value(second_fast, second_hf) > 1e-3


def test_bf16_lora_copy_agrees_with_the_lora_model_in_distribution(tiny_llama):
    """Under bf16 autocast the copy holds bf16(W) and LoRA's bf16 factors: first tokens fit softmax(logits / τ)
    of the fp32 LoRA model."""
    lm, tokenizer = lora_model(tiny_llama), load_tokenizer(tiny_llama, padding_side="left")
    tau, n = 0.7, 4000
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        roll = generate(lm, tokenizer, ["the cat"] * n, GenerationConfig(max_new_tokens=1, temperature=tau))
        assert engine.sampler_for(lm).autocast_dtype == torch.bfloat16
    with torch.no_grad():
        probs = torch.softmax(lm(input_ids=roll.query_ids[:1], attention_mask=roll.query_mask[:1]).logits[0, -1]
                              .double() / tau, -1)
    counts = torch.bincount(roll.response_ids[:, 0], minlength=len(probs)).double()
    assert chi_square_p_value(counts, probs) > 1e-3


# --------------------------------------------------------------------------- the copy and its refresh
@pytest.mark.parametrize("use_lora", [False, True])
def test_sampling_leaves_the_trained_weights_untouched(tiny_llama, use_lora):
    lm = lora_model(tiny_llama) if use_lora else load_causal_lm(tiny_llama)
    tokenizer = load_tokenizer(tiny_llama, padding_side="left")
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            generate(lm, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=6))
    after = lm.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)


def test_bf16_copy_holds_only_the_matmul_weights(tiny_llama):
    """Embeddings, norms and buffers are shared with the model; the linear layers and the (untied) LM head are
    cast once: copy_bytes = 2 bytes × their parameters."""
    lm = load_causal_lm(tiny_llama)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sampler = engine.sampler_for(lm)
    matmul = sum(m.weight.numel() for m in lm.modules() if isinstance(m, torch.nn.Linear))
    assert sampler.copy_bytes == 2 * matmul
    embed = sampler.model.get_input_embeddings().weight
    assert embed.data_ptr() == lm.get_input_embeddings().weight.data_ptr()


def test_bf16_copy_computes_what_autocast_computes(tiny_llama):
    """Without LoRA, the bf16 copy under autocast gives the autocast forward's log-probs (the same bf16(W))."""
    lm, tokenizer = load_causal_lm(tiny_llama), load_tokenizer(tiny_llama, padding_side="left")
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        query_ids, query_mask, response_ids, logprobs = engine_sample(lm, tokenizer, PROMPTS, max_new_tokens=8)
        expected = response_logprobs(lm, torch.cat([query_ids, response_ids], 1),
                                      torch.cat([query_mask, torch.ones_like(response_ids)], 1), response_ids, 0.7)
    counted = logprobs != 0
    # 3e-4: a bf16 rounding of attention weights can flip between the one-row decode step and the full
    # forward (fp32 scores summed in another order); different weights would differ by ~1e-2
    torch.testing.assert_close(logprobs[counted], expected[counted], atol=3e-4, rtol=0)


@pytest.mark.parametrize("lora", ["separate", "merged"])
def test_bf16_lora_copy_computes_what_the_lora_models_autocast_forward_computes(tiny_llama, lora):
    """The trainer's forward under autocast computes bf16(W) x + s·bf16(B)(bf16(A) x). The separate copy's
    forward computes exactly that (what is left of the sampler's gap is incremental decoding against a full
    pass, as for a plain model); merging rounds the delta into bf16(W + s·BA) instead: 7e-3 in the logits here."""
    lm, tokenizer = lora_model(tiny_llama), load_tokenizer(tiny_llama, padding_side="left")
    store_frozen_matmuls(lm, torch.bfloat16)  # as the trainers store LoRA's base weights under bf16
    query_ids, query_mask = encode_prompts(tokenizer, PROMPTS)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        sampler = engine.sampler_for(lm, lora)
        assert bool(sampler.separate) == (lora == "separate")
        copy = sampler.model(input_ids=query_ids, attention_mask=query_mask).logits.float()  # [B, P, V]
        trainer = lm(input_ids=query_ids, attention_mask=query_mask).logits.float()  # [B, P, V]
    gap = (copy - trainer).abs().max().item()
    if lora == "separate":
        assert gap == 0.0
    else:
        assert gap > 1e-3, gap  # what `separate` removes


def test_separate_lora_sync_writes_only_what_changed(tiny_llama):
    """After an optimiser step on the adapters, `sync` writes LoRA's factors again but not the frozen base
    weights (their (data_ptr, version) did not move), which are the bulk of a re-sync."""
    lm, tokenizer = lora_model(tiny_llama), load_tokenizer(tiny_llama, padding_side="left")
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    with bf16():
        sampler = engine.sampler_for(lm, "separate")
    writes = []
    sampler.owned = {name: (lambda v, name=name, f=f: (writes.append(name), f(v))) for name, f in sampler.owned.items()}
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=0.1, fused=True)
    with bf16():  # its own autocast region, as a trainer's micro-batch (autocast caches casts of A and B)
        loss = lm(input_ids=encode_prompts(tokenizer, PROMPTS)[0]).logits.logsumexp(-1).mean()
    loss.backward()
    optimizer.step()
    query_ids, query_mask = encode_prompts(tokenizer, PROMPTS)
    with torch.no_grad(), bf16():
        assert engine.sampler_for(lm, "separate") is sampler  # found stale and synced in place, not rebuilt
        copy = sampler.model(input_ids=query_ids, attention_mask=query_mask).logits  # [B, P, V]
        trainer = lm(input_ids=query_ids, attention_mask=query_mask).logits  # [B, P, V]
    assert writes and all(name.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "lora_scale") for name in writes)
    assert torch.equal(copy, trainer)  # the updated adapters, nothing stale


@pytest.mark.parametrize("bf16", [False, True])
def test_generate_returns_the_log_probs_a_forward_pass_gives(tiny_llama, bf16):
    """`generate`'s sample_logprobs (log μ, whose gap to log π_old the trainers log as rollout/sampler_kl) are
    the policy's log-probs of the sampled tokens, 0 after EOS: as `response_logprobs` computes them, in fp32
    and, up to bf16 rounding, under bf16 autocast (on this tiny model; SmolLM2's gap is ~1.7e-3 nats per token
    in k3, bench/sampler_gap.py). The fallback computes them only when asked (`sampler_logprobs=True`)."""
    lm, tokenizer = load_causal_lm(tiny_llama), load_tokenizer(tiny_llama, padding_side="left")
    gen_cfg = GenerationConfig(max_new_tokens=8, temperature=0.7)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        roll = generate(lm, tokenizer, PROMPTS * 3, gen_cfg)
        expected = response_logprobs(lm, roll.input_ids, roll.attention_mask, roll.response_ids, 0.7)
    assert roll.sample_logprobs.shape == roll.mask.shape and (roll.sample_logprobs[roll.mask == 0] == 0).all()
    torch.testing.assert_close(roll.sample_logprobs * roll.mask, expected * roll.mask, atol=1e-3 if bf16 else 2e-5,
                               rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # the fallback computes none unasked
        hf = GenerationConfig(max_new_tokens=8, temperature=0.7, engine="hf")
        assert generate(lm, tokenizer, PROMPTS, hf).sample_logprobs is None
        roll = generate(lm, tokenizer, PROMPTS * 3, hf, sampler_logprobs=True)
        expected = response_logprobs(lm, roll.input_ids, roll.attention_mask, roll.response_ids, 0.7)
    assert (roll.sample_logprobs[roll.mask == 0] == 0).all()
    torch.testing.assert_close(roll.sample_logprobs * roll.mask, expected * roll.mask, atol=1e-3 if bf16 else 2e-5,
                               rtol=0)


@pytest.mark.parametrize("update", ["fused_adamw", "load_state_dict"])
def test_copy_follows_the_trained_weights(tiny_llama, update):
    """After an optimiser step (the fused AdamW of trainers/loop.py bumps no version counter) or a checkpoint
    load, `sampler_for` re-syncs: the step log-probs equal the updated model's full forward."""
    lm, tokenizer = lora_model(tiny_llama), load_tokenizer(tiny_llama, padding_side="left")
    engine_sample(lm, tokenizer, PROMPTS)
    sampler = engine.sampler_for(lm)
    assert not sampler.is_stale(lm)
    if update == "fused_adamw":
        optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=0.1, fused=True)
        lm(input_ids=encode_prompts(tokenizer, PROMPTS)[0]).logits.logsumexp(-1).mean().backward()
        optimizer.step()
    else:
        state = {k: v + 0.1 if "lora_B" in k else v for k, v in lm.state_dict().items()}
        lm.load_state_dict(state)
    assert sampler.is_stale(lm)
    torch.manual_seed(0)
    query_ids, query_mask, response_ids, logprobs = engine_sample(lm, tokenizer, PROMPTS, max_new_tokens=8)
    assert engine.sampler_for(lm) is sampler and not sampler.is_stale(lm)  # synced in place, not rebuilt
    expected = response_logprobs(lm, torch.cat([query_ids, response_ids], 1),
                                 torch.cat([query_mask, torch.ones_like(response_ids)], 1), response_ids, 0.7)
    counted = logprobs != 0
    torch.testing.assert_close(logprobs[counted], expected[counted], atol=2e-5, rtol=0)


# --------------------------------------------------------------------------- fallback
def test_unsupported_models_and_truncation_fall_back_to_generate(tmp_path, caplog):
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = make_tokenizer()
    config = AutoConfig.for_model("gpt_neox", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    lm, tokenizer = load_causal_lm(tmp_path), load_tokenizer(tmp_path, padding_side="left")
    assert "gpt_neox" in engine.unsupported_reason(lm)
    with caplog.at_level(logging.INFO, logger="rlhfkit.rollout"):
        roll = generate(lm, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=3))
    assert roll.response_ids.shape == (3, 3) or roll.ended.any()
    assert "gpt_neox" in caplog.text
    llama = load_causal_lm(save_tiny_llama(tmp_path / "llama"))
    assert uses_engine(llama, GenerationConfig())
    assert not uses_engine(llama, GenerationConfig(top_p=0.9))
    assert not uses_engine(llama, GenerationConfig(engine="hf"))


def test_bf16_copy_follows_a_full_fine_tune(tmp_path):
    """GPT-2 (Conv1D weights stored [in, out], biases) trained in full under bf16 autocast: after a fused AdamW
    step the packed copy (weights and biases) gives the autocast forward's log-probs of the updated model."""
    path = save_tiny(tmp_path, "gpt2")
    lm, tokenizer = load_causal_lm(path), load_tokenizer(path, padding_side="left")
    optimizer = torch.optim.AdamW(lm.parameters(), lr=0.05, fused=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        engine_sample(lm, tokenizer, PROMPTS)
        lm(input_ids=encode_prompts(tokenizer, PROMPTS)[0]).logits.float().logsumexp(-1).mean().backward()
    optimizer.step()
    assert engine._SAMPLERS[lm].is_stale(lm)
    # a new autocast region: the old one caches bf16 casts of the weights from before the step
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(0)
        query_ids, query_mask, response_ids, logprobs = engine_sample(lm, tokenizer, PROMPTS, max_new_tokens=8)
        with torch.no_grad():
            expected = response_logprobs(lm, torch.cat([query_ids, response_ids], 1),
                                         torch.cat([query_mask, torch.ones_like(response_ids)], 1), response_ids, 0.7)
    counted = logprobs != 0
    # 3e-4: a bf16 rounding of attention weights can flip between the one-row decode step and the full
    # forward (fp32 scores summed in another order); different weights would differ by ~1e-2
    torch.testing.assert_close(logprobs[counted], expected[counted], atol=3e-4, rtol=0)
