"""Sampling is exactly softmax(logits / τ), the distribution every log-prob describes (ALGORITHMS.md §1)."""

import json

import pytest
import torch
import transformers.generation.utils as generation_utils

from rlhfkit.config import EvalConfig, GenerationConfig, PPOConfig, build
from rlhfkit.errors import ConfigError
from rlhfkit.models.load import load_causal_lm, load_tokenizer
from rlhfkit.report.html import build_report
from rlhfkit.rollout import collect_rollout, generate
from rlhfkit.trainers.ppo import build_models
from tests.conftest import save_tiny_llama
from tests.trainers.test_ppo import WordReward, ppo_cfg

# what a model folder may ship in generation_config.json; none of it may reach a training rollout
FOLDER_SAMPLING = {"do_sample": False, "top_k": 1, "top_p": 0.5, "repetition_penalty": 1.3, "min_new_tokens": 3,
                   "no_repeat_ngram_size": 1, "suppress_tokens": [7, 8], "temperature": 0.2}


@pytest.fixture(scope="module")
def opinionated_llama(tmp_path_factory):
    """A tiny Llama whose generation_config.json asks for near-greedy, penalised, truncated sampling."""
    path = save_tiny_llama(tmp_path_factory.mktemp("opinionated"))
    gen_file = f"{path}/generation_config.json"
    with open(gen_file) as f:
        config = json.load(f)
    with open(gen_file, "w") as f:
        json.dump(config | FOLDER_SAMPLING, f)
    return path


@pytest.fixture
def processor_spy(monkeypatch):
    """The logits processors transformers builds for each `generate` call, as lists of processor objects."""
    built = []
    real = generation_utils.GenerationMixin._get_logits_processor

    def spy(self, *args, **kwargs):
        processors = real(self, *args, **kwargs)
        built.append(list(processors))
        return processors

    monkeypatch.setattr(generation_utils.GenerationMixin, "_get_logits_processor", spy)
    return built


@pytest.mark.parametrize("use_lora", [False, True])
def test_training_rollout_applies_only_the_temperature(opinionated_llama, tmp_path, processor_spy, use_lora):
    """The transformers fallback (engine "hf"); the fast engine builds no processors (tests/test_engine.py)."""
    cfg = ppo_cfg(opinionated_llama, tmp_path, use_lora=use_lora, temperature=0.7, **{"generation.engine": "hf"})
    actor_critic, ref_lm, tokenizer, _ = build_models(cfg, WordReward())
    collect_rollout(actor_critic, ref_lm, tokenizer, WordReward(), ["a cat", "the dog sun"], cfg.generation)
    assert len(processor_spy) == 1
    assert [type(p).__name__ for p in processor_spy[0]] == ["TemperatureLogitsWarper"]
    assert processor_spy[0][0].temperature == 0.7
    assert actor_critic.lm.generation_config.top_k == 1  # the folder's config is back in place afterwards


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_folder_with_top_k_1_still_gives_varied_samples(opinionated_llama, engine):
    lm, tokenizer = load_causal_lm(opinionated_llama), load_tokenizer(opinionated_llama, padding_side="left")
    torch.manual_seed(0)
    gen_cfg = GenerationConfig(max_new_tokens=4, temperature=1.0, top_p=1.0, top_k=0, engine=engine)
    roll = generate(lm, tokenizer, ["a cat"] * 32, gen_cfg)
    # top-k 1 would give 32 copies of one response; a random tiny model spreads over ~100 tokens
    assert len(set(roll.response_ids[:, 0].tolist())) > 10
    # repetition penalty 1.3 and no_repeat_ngram_size 1 would never repeat a token within a response
    assert any(len(set(row)) < len(row) for row in roll.response_ids[:, :4].tolist())


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson's χ² goodness-of-fit p-value; cells expected < min_expected times are pooled into one cell.
    χ² = Σ (O − E)² / E with k − 1 degrees of freedom; p = Q((k−1)/2, χ²/2) (regularised upper gamma)."""
    expected = probs * counts.sum()  # [V]
    small = expected < min_expected  # [V]
    observed, expected = counts[~small], expected[~small]  # [k]
    if small.any():
        observed = torch.cat([observed, counts[small].sum()[None]])  # [k+1]
        expected = torch.cat([expected, (probs[small].sum() * counts.sum())[None]])  # [k+1]
    chi2 = ((observed - expected) ** 2 / expected).sum()
    dof = torch.tensor(len(observed) - 1, dtype=torch.float64)
    return torch.special.gammaincc(dof / 2, chi2 / 2).item()


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_first_token_frequencies_match_softmax_at_temperature(tiny_llama, engine):
    """4000 first tokens for one prompt against softmax(logits / τ): top-k 50, top-p or an EOS mask at t = 0
    (min_new_tokens) would each leave cells empty that the exact distribution fills."""
    lm, tokenizer = load_causal_lm(tiny_llama), load_tokenizer(tiny_llama, padding_side="left")
    tau, n = 0.7, 4000
    torch.manual_seed(0)
    gen_cfg = GenerationConfig(max_new_tokens=1, temperature=tau, top_p=1.0, top_k=0, engine=engine)
    roll = generate(lm, tokenizer, ["the cat"] * n, gen_cfg)
    with torch.no_grad():
        logits = lm(input_ids=roll.query_ids[:1], attention_mask=roll.query_mask[:1]).logits[0, -1]  # [V]
    probs = torch.softmax(logits.double() / tau, -1)  # [V]
    counts = torch.bincount(roll.response_ids[:, 0], minlength=len(probs)).double()  # [V]
    assert counts[tokenizer.eos_token_id] > 0  # an empty response is a possible outcome
    assert chi_square_p_value(counts, probs) > 1e-3


def test_chi_square_rejects_top_k_sampling():
    """The check above has power: counts drawn from the top-50 renormalised distribution are rejected."""
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(106, dtype=torch.float64) / 0.7, -1)  # [V]
    truncated = torch.where(probs >= probs.topk(50).values[-1], probs, 0.0)  # [V]
    counts = torch.bincount(torch.multinomial(truncated, 4000, replacement=True), minlength=106).double()
    assert chi_square_p_value(counts, probs) < 1e-6
    exact = torch.bincount(torch.multinomial(probs, 4000, replacement=True), minlength=106).double()
    assert chi_square_p_value(exact, probs) > 1e-3


def test_defaults_sample_exactly():
    gen = GenerationConfig()
    assert (gen.top_p, gen.top_k) == (1.0, 0) and gen.is_exact
    assert build(PPOConfig, {"prompts": "p.jsonl", "output": "out"}).generation.is_exact


@pytest.mark.parametrize("override", [{"top_p": 0.9}, {"top_k": 50}, {"generation.top_k": 1}])
def test_ppo_refuses_truncated_sampling(override):
    with pytest.raises(ConfigError, match=r"generation\.top_[pk].*full softmax") as err:
        build(PPOConfig, {"prompts": "p.jsonl", "output": "out", **override})
    assert "\n" not in str(err.value)


def test_ppo_refuses_lora_dropout():
    with pytest.raises(ConfigError, match="lora.dropout"):
        build(PPOConfig, {"prompts": "p.jsonl", "output": "out", "lora.dropout": 0.1})


def test_evaluation_may_truncate_and_the_report_says_so(tmp_path):
    evaluation = build(EvalConfig, {"policy": ["sft"], "prompts": "p.jsonl", "output": "out", "top_p": 0.9})
    assert not evaluation.generation.is_exact
    for top_p, expected in ((1.0, "exact samples of each policy"), (0.9, "truncated")):
        run = tmp_path / f"top_p{top_p}"
        (run / "eval").mkdir(parents=True)
        rows = [{"prompt": "p", "sft": {"response": "r", "gold_reward": 0.1, "rm_reward": 0.0, "kl": 0.0,
                                        "response_len": 3, "eos_rate": 1.0}}]
        sampler = {"temperature": 0.7, "top_p": top_p, "top_k": 0, "max_new_tokens": 48}
        (run / "eval" / "eval.json").write_text(json.dumps({"policies": ["sft"], "rows": rows, "sampler": sampler}))
        html = build_report(run).read_text()
        assert f"Evaluation sampler: temperature 0.7, top-p {top_p:g}, top-k off" in html
        assert expected in html


def test_evaluation_records_its_sampler(tiny_llama):
    from rlhfkit.eval.compare import evaluate_policies

    gen_cfg = GenerationConfig(max_new_tokens=2, temperature=0.9, top_p=0.8, top_k=5)
    result = evaluate_policies({"sft": tiny_llama}, ["a cat"], reference=tiny_llama, gen_cfg=gen_cfg)
    assert result["sampler"] == {"temperature": 0.9, "top_p": 0.8, "top_k": 5, "max_new_tokens": 2}
