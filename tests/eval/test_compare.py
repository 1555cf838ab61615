"""rlhfkit.eval.compare: the one producer of held-out statistics, with one name per figure."""

import json
import shutil

import pytest

from rlhfkit.config import GenerationConfig
from rlhfkit.eval import stats
from rlhfkit.eval.compare import ROW_KEYS, evaluate_policies, sample_policy, save_evaluation, summarize
from rlhfkit.models.load import load_causal_lm, load_tokenizer
from tests.conftest import make_tokenizer


def _result():
    """4 prompts, baseline `sft` and candidate `ppo`; no reward model (rm_reward None)."""
    sft_gold, ppo_gold = [0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 3.0, 2.0]
    rows = [{"prompt": f"p{i}",
             "sft": {"response": "a", "gold_reward": sft_gold[i], "rm_reward": None, "kl": 0.0,
                     "response_len": 10.0, "eos_rate": 1.0},
             "ppo": {"response": "b", "gold_reward": ppo_gold[i], "rm_reward": None, "kl": float(i + 1),
                     "response_len": 8.0 + 2 * i, "eos_rate": 0.5 * (i % 2)}}
            for i in range(4)]
    return {"policies": ["sft", "ppo"], "rows": rows}, sft_gold, ppo_gold


def test_summarize_names_each_figure_as_the_rows_do():
    result, sft_gold, ppo_gold = _result()
    methods = summarize(result, baseline="sft", seed=3)
    per_row = {"gold_reward", "gold_reward_ci95", "kl", "kl_ci95", "response_len", "eos_rate", "n"}
    assert set(methods["sft"]) == per_row  # rm_reward was not scored: left out, not null
    assert set(methods["ppo"]) == per_row | {"gold_delta", "gold_delta_ci95", "win_rate_gold",
                                             "win_rate_gold_ci95"}
    assert set(ROW_KEYS) - {"rm_reward"} <= set(methods["ppo"])
    ppo = methods["ppo"]
    # means: gold (1 + 1 + 3 + 2) / 4 = 1.75; kl (1 + 2 + 3 + 4) / 4 = 2.5; length (8 + 10 + 12 + 14) / 4 = 11
    assert (ppo["gold_reward"], ppo["kl"], ppo["response_len"], ppo["eos_rate"]) == (1.75, 2.5, 11.0, 0.25)
    assert methods["sft"]["gold_reward"] == 1.5 and methods["sft"]["n"] == 4
    # paired differences [1, 0, 1, -1]: Δ = 0.25; wins, tie, win, loss: (1 + ½ + 1 + 0) / 4 = 0.625
    assert ppo["gold_delta"] == pytest.approx(0.25, abs=1e-12)
    assert ppo["win_rate_gold"] == pytest.approx(0.625, abs=1e-12)
    assert ppo["gold_delta_ci95"] == list(stats.paired_bootstrap_diff(sft_gold, ppo_gold, seed=3)[1:])
    assert ppo["gold_reward_ci95"] == list(stats.bootstrap_ci(ppo_gold, seed=3)[1:])


def test_save_evaluation_writes_rows_and_the_statistics_it_returns(tmp_path):
    result, _, _ = _result()
    methods = save_evaluation(tmp_path / "eval.json", result, baseline="sft", seed=0)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["methods"] == methods and saved["baseline"] == "sft"
    assert saved["rows"] == result["rows"] and saved["policies"] == ["sft", "ppo"]


# SmolLM2-135M's width (hidden 576, MLP 1536, 9 heads / 3 KV heads) in 4 layers, init std 0.05 so the logits
# spread as a trained model's do: wide enough for bf16 roundings to show. With the engine's sampling log-probs
# as log π (the code before this test) a copy of it read KLs from -0.27 to +0.40 nats per response on PROMPTS
# (32 tokens, bf16 autocast, 1 thread; mean +0.038); at init std 0.02 the mean was +0.0025, at hidden 32 ~1e-6
# (STYLE.md §13). In fp32 the engine and a forward agree to 3e-5 per response: the fp32 case is a control.
WIDE_LLAMA = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=9,
                  num_key_value_heads=3, initializer_range=0.05)
PROMPTS = ["the cat is", "a dog and", "write a short poem", "explain the sun", "i like red", "one two three",
           "you are very nice", "the moon", "help me learn code", "a big blue sea", "we love data", "why not"]


def save_wide_llama(path) -> str:
    """A random Llama of WIDE_LLAMA's shape with the tiny tokenizer (`save_tiny_llama` fixes the width)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = make_tokenizer("llama")
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=256, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, **WIDE_LLAMA)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def save_equal_policies(reference: str, root) -> dict[str, str]:
    """Two policies that compute the reference's function, each at its own path: a copy of its folder and a
    fresh LoRA adapter on it (B = 0, saved as an adapter folder whose base is `reference`)."""
    from peft import LoraConfig, get_peft_model

    shutil.copytree(reference, root / "copy")
    lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
    adapter = get_peft_model(load_causal_lm(reference), lora)
    lora_b = [p for name, p in adapter.named_parameters() if "lora_B" in name]
    assert lora_b and not any(p.any() for p in lora_b)  # fresh: B = 0, so W + s·B A = W
    adapter.save_pretrained(root / "lora")
    adapter_config = json.loads((root / "lora" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == reference
    return {"copy": str(root / "copy"), "lora": str(root / "lora")}


@pytest.fixture(scope="module")
def wide_reference_and_equal_policies(tmp_path_factory):
    root = tmp_path_factory.mktemp("wide_llama")
    reference = save_wide_llama(root / "reference")
    return reference, save_equal_policies(reference, root)


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp32"])
def test_a_policy_equal_to_the_reference_reads_kl_zero(wide_reference_and_equal_policies, bf16):
    """log π and log π_ref from one computation: a copy of the reference and a fresh LoRA adapter on it,
    each at another path than the reference (so not the reference's own row), read KL 0 per response."""
    reference, policies = wide_reference_and_equal_policies
    gen_cfg = GenerationConfig(max_new_tokens=32, temperature=0.7)
    result = evaluate_policies(policies, PROMPTS, reference=reference, gen_cfg=gen_cfg, bf16=bf16)
    for name in policies:
        kls = [row[name]["kl"] for row in result["rows"]]  # one response per prompt
        assert max(abs(kl) for kl in kls) <= 1e-3, (name, kls)
    lengths = [row["copy"]["response_len"] for row in result["rows"]]
    assert sum(lengths) / len(lengths) > 16  # long responses: the per-token roundings had room to add up


def test_sample_policy_without_a_reference_leaves_kl_out(tiny_llama):
    """`ref_lm` None (best-of-n, whose KL is analytic): rows without a KL, not a KL of 0."""
    lm = load_causal_lm(tiny_llama).eval()
    tokenizer = load_tokenizer(tiny_llama, padding_side="left")
    rows = sample_policy(lm, None, tokenizer, ["the cat", "a dog"], GenerationConfig(max_new_tokens=3))
    assert [row["kl"] for row in rows] == [None, None]
    assert all(1 <= row["response_len"] <= 3 for row in rows)
