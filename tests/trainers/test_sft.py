"""SFT on a tiny random Llama: a fixed response is learned, the prompt is (or is not) in the loss, packing."""

import json
import math
import random

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.config import SFTConfig, build
from rlhfkit.data.collate import encode_completions
from rlhfkit.models.load import load_causal_lm, load_tokenizer
from rlhfkit.models.policy import Policy, completion_logprobs
from rlhfkit.rollout import encode_prompts
from rlhfkit.trainers.sft import train_sft

WORDS = "the cat dog sun moon sea tree book".split()


def write_demos(path, n, seed=0):
    """Random two-word prompts, always answered "good dog"."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps({"prompt": " ".join(rng.sample(WORDS, 2)), "response": "good dog"}) + "\n")
    return str(path)


def sft_cfg(tiny_llama, tmp_path, name, **kw):
    base = {"model": tiny_llama, "data": write_demos(tmp_path / "train.jsonl", 64),
            "eval_data": write_demos(tmp_path / "eval.jsonl", 8, seed=1), "output": str(tmp_path / name),
            "epochs": 4, "batch_size": 8, "lr": 3e-2, "dtype": "fp32", "log_every": 1}
    return build(SFTConfig, {**base, **kw})


def rows(tmp_path, name):
    return [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


def test_sft_learns_a_fixed_response(tiny_llama, tmp_path):
    final = train_sft(sft_cfg(tiny_llama, tmp_path, "sft"))
    metrics = rows(tmp_path, "sft")
    # a random model over a 75-token vocabulary starts near ln 75 ≈ 4.3 nats per token
    assert metrics[0]["sft/loss"] > 3.5
    assert final["eval_loss"] < 0.1  # measured 0.022 after 4 epochs of 8 batches
    assert final["eval_perplexity"] == pytest.approx(math.exp(final["eval_loss"]), rel=1e-6)
    assert [r["epoch"] for r in metrics if "epoch" in r] == [1, 2, 3, 4]
    for name in ("policy/config.json", "config.yaml", "summary.json", "checkpoint/trainer_state.json"):
        assert (tmp_path / "sft" / name).exists(), name

    # the saved policy answers through the same chat template that generation uses
    tok, lm = load_tokenizer(tmp_path / "sft" / "policy"), load_causal_lm(tmp_path / "sft" / "policy")
    query_ids, query_mask = encode_prompts(tok, ["moon tree"])
    out = lm.generate(input_ids=query_ids, attention_mask=query_mask, do_sample=False, max_new_tokens=3,
                      pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, query_ids.shape[1]:]) == "good dog <|im_end|>"


@torch.no_grad()
def prompt_nll(policy_dir, prompts):
    """Mean NLL of the prompt tokens (all but the first): the part only --no-completion-only trains on."""
    tok, lm = load_tokenizer(policy_dir), load_causal_lm(policy_dir)
    batch = encode_completions(tok, prompts, ["good dog"] * len(prompts), completion_only=False)
    mask = batch["mask"].clone()
    mask[:, -3:] = 0  # the last 3 response-block tokens are "good dog" + EOS (no padding: equal lengths)
    logprobs = completion_logprobs(Policy(lm), batch)
    return -((logprobs * mask).sum() / mask.sum()).item()


def test_completion_only_leaves_the_prompt_out_of_the_loss(tiny_llama, tmp_path):
    train_sft(sft_cfg(tiny_llama, tmp_path, "completion", epochs=2))
    train_sft(sft_cfg(tiny_llama, tmp_path, "full", epochs=2, completion_only=False))
    first = {name: rows(tmp_path, name)[0] for name in ("completion", "full")}
    # per batch of 8: 3 tokens each ("good dog" + EOS) vs 6 more prompt tokens each (9 minus the first)
    assert first["completion"]["sft/tokens"] == 8 * 3
    assert first["full"]["sft/tokens"] == 8 * (3 + 6)
    prompts = ["sun sea", "book cat"]  # template tokens are the learnable part of a prompt
    assert prompt_nll(tmp_path / "full" / "policy", prompts) < prompt_nll(tmp_path / "completion" / "policy",
                                                                         prompts) - 1.0


def test_packing_trains_on_blocks(tiny_llama, tmp_path):
    final = train_sft(sft_cfg(tiny_llama, tmp_path, "packed", packing=True, max_length=32, batch_size=2))
    metrics = rows(tmp_path, "packed")
    # 64 examples x 10 tokens (7 templated prompt + "good dog" + EOS) = 640 tokens -> 20 blocks of 32
    assert len([r for r in metrics if "epoch" not in r]) == 4 * 10  # 10 batches of 2 blocks per epoch
    assert final["eval_loss"] < 0.5


def test_sft_cli_bad_data_exits_2_with_location(tiny_llama, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "answer": "b"}\n')
    assert main(["sft", "--model", tiny_llama, "--data", str(bad), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "response" in err and "Traceback" not in err


@pytest.mark.parametrize("use_lora", [False, True])
def test_gradient_checkpointing_changes_memory_not_results(tiny_llama, tmp_path, use_lora):
    """Recomputing activations in the backward pass gives the same losses as keeping them."""
    from rlhfkit.trainers.loop import trainable_policy

    cfg = sft_cfg(tiny_llama, tmp_path, "probe", gradient_checkpointing=True, **{"lora.use_lora": use_lora})
    layers = trainable_policy(tiny_llama, cfg).lm.get_base_model().model.layers if use_lora else \
        trainable_policy(tiny_llama, cfg).lm.model.layers
    assert all(layer.gradient_checkpointing for layer in layers)  # it is on ...
    losses = {}
    for ckpt in (False, True):
        name = f"sft-ckpt{ckpt}"
        train_sft(sft_cfg(tiny_llama, tmp_path, name, epochs=1, gradient_checkpointing=ckpt,
                          **{"lora.use_lora": use_lora}))
        losses[ckpt] = [r["sft/loss"] for r in rows(tmp_path, name) if "sft/loss" in r]
    assert len(losses[True]) == 8
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
    assert losses[True][-1] < losses[True][0] - 0.1  # it trained (LoRA: 4.33 -> 4.13 in 8 steps)


@pytest.mark.parametrize("native, expected", [("0", "fp32"), ("1", "bf16")])
def test_dtype_auto_is_resolved_once_and_written_to_config_yaml(native, expected, tiny_llama, tmp_path,
                                                                monkeypatch, caplog):
    import yaml

    from rlhfkit import device

    monkeypatch.setenv("RLHFKIT_NATIVE_BF16", native)
    monkeypatch.setattr(device, "_LOGGED_CHOICES", set())
    cfg = sft_cfg(tiny_llama, tmp_path, "sft", dtype="auto", epochs=1)
    assert cfg.dtype == "auto"  # the default until a run starts (the config module imports no torch)
    with caplog.at_level("INFO", logger="rlhfkit.device"):
        train_sft(cfg)
    saved = yaml.safe_load((tmp_path / "sft" / "config.yaml").read_text())
    assert saved["dtype"] == expected  # the precision that ran: config.yaml reproduces it on any machine
    assert sum(f"dtype auto -> {expected}" in r.getMessage() for r in caplog.records) == 1  # printed once
