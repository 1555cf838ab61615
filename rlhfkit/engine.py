"""The rollout sampling engine: a sampling copy of the policy (LoRA merged, matmul weights stored in the autocast
dtype) and a plain decode loop (batched prefill, static KV cache, one token per step) that samples exactly
softmax(logits / τ). `rollout.generate` uses it for every rollout; transformers' `generate` stays the fallback.

Why it is faster on the CPU than `generate` under PPO's defaults (LoRA, bf16 autocast), measured in
bench/generate_speed.py: autocast re-casts every fp32 weight to bf16 on every decoding step, unmerged LoRA adds
two small matmuls per linear layer, and `generate` adds per-step work (logits processors, stopping criteria,
a growing cache). Here the weights are cast and merged once per optimiser update (`Sampler.sync`).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rlhfkit.models.policy import position_ids_for

log = logging.getLogger(__name__)

# model families whose sampling tests/test_engine.py checks against a full forward and against `generate`; they
# take `cache`, `position_ids` and `logits_to_keep` and build their masks with transformers' masking utilities
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gpt2")


def sample_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None):
    """y ~ softmax(logits / τ) for each row: the full distribution, no top-k / top-p / penalties (ALGORITHMS.md §1).

    Args: logits [B, V]; generator: None draws from torch's global RNG (seeded by the trainers).
    Returns: (tokens [B] long, logprobs [B] = log softmax(logits / τ)[y], fp32)."""
    logprobs = torch.log_softmax(logits.float() / temperature, -1)  # [B, V]
    tokens = torch.multinomial(logprobs.exp(), 1, generator=generator)  # [B, 1]
    return tokens.squeeze(1), logprobs.gather(1, tokens).squeeze(1)


def _is_peft(lm: nn.Module) -> bool:
    return hasattr(lm, "get_base_model")


def _is_plain_lora_linear(module: nn.Module) -> bool:
    """A peft LoRA linear layer whose merge is W + s·B A (no DoRA or other variant, no LoRA bias)."""
    from peft.tuners.lora.layer import Linear

    return isinstance(module, Linear) and not module.lora_variant and not any(module.lora_bias.values())


def unsupported_reason(lm: nn.Module) -> str | None:
    """Why the engine cannot sample from `lm` (None when it can): it needs a decoder-only model of a family in
    SUPPORTED_MODEL_TYPES, whole (not sharded) parameters, and at most plain LoRA adapters (peft)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = lm.get_base_model() if _is_peft(lm) else lm
    config = getattr(base, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES or config.is_encoder_decoder:
        return f"model type {model_type!r} is not one of {', '.join(SUPPORTED_MODEL_TYPES)}"
    if any(type(p) is not nn.Parameter for p in lm.parameters()):  # FSDP's DTensors, quantised weights
        return "its parameters are sharded or quantised"
    if _is_peft(lm) and lm.peft_type != "LORA":
        return f"peft type {lm.peft_type} (only LoRA is merged)"
    for name, module in base.named_modules():
        if isinstance(module, BaseTunerLayer) and not _is_plain_lora_linear(module):
            return f"peft layer {name} ({type(module).__name__}) is not a plain LoRA linear layer"
    return None


def merged_parameters(lm: nn.Module, merge: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """(name in the plain model, current value) of every parameter, active LoRA deltas merged in:
    W' = W + Σ_a s_a · B_a A_a (peft's `get_delta_weight`, which also transposes GPT-2's Conv1D weights).
    `merge=False` yields W itself (same name and shape). A parameter shared by two modules (tied embeddings)
    is yielded once under each name."""

    def walk(module: nn.Module, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
        if _is_plain_lora_linear(module):
            base_layer = module.get_base_layer()
            weight = base_layer.weight
            if merge and not module.merged and not module.disable_adapters:
                for adapter in module.active_adapters:
                    if adapter in module.lora_A:
                        weight = weight + module.get_delta_weight(adapter)  # [out, in]
            yield f"{prefix}weight", weight
            if base_layer.bias is not None:
                yield f"{prefix}bias", base_layer.bias
            return
        for name, param in module.named_parameters(recurse=False):
            yield f"{prefix}{name}", param
        for name, child in module.named_children():
            yield from walk(child, f"{prefix}{name}.")

    return walk(lm.get_base_model() if _is_peft(lm) else lm, "")


def _is_matmul_layer(module: nn.Module) -> bool:
    """Layers whose weights autocast casts to its dtype on every call (linear / addmm): nn.Linear, GPT-2's Conv1D."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


class Sampler:
    """A sampling copy of a causal LM `lm` (peft LoRA or plain), and the decode loop that samples from it.

    With `autocast_dtype` (bf16: PPO's default), the weights of matmul layers are stored merged and cast
    (bf16(W + s·BA)), and the copy runs under the same autocast; so for a model without LoRA it computes what
    the autocast forward of `lm` computes, without re-casting every weight on every step. Everything else
    (embeddings, norms, buffers) is shared with `lm`, not copied. Without `autocast_dtype`, only merged LoRA
    layers are copied, in their own dtype, and a model without LoRA is sampled from directly.
    Memory: one `autocast_dtype` copy of the matmul weights, incl. an untied LM head (269 MB for SmolLM2-135M).
    `sync(lm)` refreshes the copy after an optimiser update; `sampler_for` calls it when the weights changed."""

    def __init__(self, lm: nn.Module, autocast_dtype: torch.dtype | None = None):
        self.autocast_dtype = autocast_dtype
        self.device = next(lm.parameters()).device
        base = lm.get_base_model() if _is_peft(lm) else lm
        self.owned: dict[str, torch.Tensor] = {}  # name -> tensor of the copy that `sync` writes
        self.model = base if autocast_dtype is None and not _is_peft(lm) else self._build_copy(base)
        self.sync(lm)

    def _build_copy(self, base: nn.Module) -> nn.Module:
        """The model's module tree, built on the meta device, then given tensors: a new one (`owned`) for each
        weight that is cast to the autocast dtype or merged with LoRA; `base`'s own tensor for the rest."""
        import copy

        lora_layers = {name for name, module in base.named_modules() if _is_plain_lora_linear(module)}
        with torch.device("meta"):
            model = type(base)(copy.deepcopy(base.config))
        model.eval().requires_grad_(False)
        sources = dict(merged_parameters(base, merge=False))
        for name, module in model.named_modules():
            cast = self.autocast_dtype is not None and _is_matmul_layer(module)
            for pname, _ in list(module.named_parameters(recurse=False)):
                full = f"{name}.{pname}" if name else pname
                source = sources[full]
                dtype = self.autocast_dtype if cast and source.is_floating_point() else source.dtype
                if name in lora_layers or dtype != source.dtype:  # untied from `base` (and from each other)
                    self.owned[full] = torch.empty(source.shape, dtype=dtype, device=self.device)
                    module._parameters[pname] = nn.Parameter(self.owned[full], requires_grad=False)
                else:
                    module._parameters[pname] = nn.Parameter(source.detach(), requires_grad=False)
            for bname, _ in list(module.named_buffers(recurse=False)):
                module._buffers[bname] = base.get_buffer(f"{name}.{bname}" if name else bname)
        return model

    @staticmethod
    def weights_version(lm: nn.Module) -> tuple:
        """Changes whenever a parameter of `lm` is written in place (load_state_dict, most optimisers) or
        replaced; the fused AdamW of trainers/loop.py does not bump it, hence also `_mark_stepped`."""
        return tuple((p.data_ptr(), p._version) for p in lm.parameters())

    @torch.no_grad()
    def sync(self, lm: nn.Module) -> None:
        """Copy the current weights of `lm` (LoRA merged, cast) into the sampling copy."""
        if self.owned:
            for name, value in merged_parameters(lm):
                if name in self.owned:
                    self.owned[name].copy_(value)
        self.version = self.weights_version(lm)
        self.stepped = False

    def is_stale(self, lm: nn.Module) -> bool:
        return bool(self.owned) and (self.stepped or self.version != self.weights_version(lm))

    def _forward(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
        """Logits [B, V] of the last position; the new keys/values go into `cache`."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    @torch.no_grad()
    def sample(self, query_ids: torch.Tensor, query_mask: torch.Tensor, *, temperature: float, max_new_tokens: int,
               eos_id: int, pad_id: int, generator: torch.Generator | None = None):
        """y ~ π(·|x) one token per step for a batch of left-padded prompts (prefill in one forward pass).

        Rows that ended hold pad after their EOS; the loop stops once every row has ended.
        Args: query_ids, query_mask [B, P]. Returns: (response_ids [B, T], logprobs [B, T]) with T ≤ max_new_tokens
        and logprobs = log softmax(logits / τ)[y_t] under this copy (0 after EOS), for diagnostics only: the
        trainers recompute log π_old with their own forward."""
        from transformers import StaticCache

        batch, prompt_len = query_ids.shape
        cache = StaticCache(config=self.model.config, max_cache_len=prompt_len + max_new_tokens)
        attention_mask = F.pad(query_mask, (0, max_new_tokens))  # [B, P+T]: 0 until a token is sampled there
        next_position = position_ids_for(query_mask)[:, -1:] + 1  # [B, 1]: positions skip left padding
        response_ids = query_ids.new_full((batch, max_new_tokens), pad_id)  # [B, T]
        logprobs = torch.zeros(batch, max_new_tokens, device=query_ids.device)  # [B, T]
        ended = torch.zeros(batch, dtype=torch.bool, device=query_ids.device)  # [B]
        was_training = self.model.training
        self.model.eval()  # HF drops the cache in train mode under gradient checkpointing; dropout is 0 anyway
        precision = torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                                   enabled=self.autocast_dtype is not None)
        with precision:
            logits = self._forward(query_ids, attention_mask, position_ids_for(query_mask), cache)  # [B, V]
            for t in range(max_new_tokens):
                tokens, token_logprobs = sample_tokens(logits, temperature, generator)  # [B], [B]
                tokens = tokens.masked_fill(ended, pad_id)  # [B]
                response_ids[:, t] = tokens
                logprobs[:, t] = token_logprobs.masked_fill(ended, 0.0)
                ended |= tokens == eos_id
                if t + 1 == max_new_tokens or bool(ended.all()):
                    break
                attention_mask[:, prompt_len + t] = 1
                logits = self._forward(tokens[:, None], attention_mask, next_position + t, cache)  # [B, V]
        self.model.train(was_training)
        return response_ids[:, : t + 1], logprobs[:, : t + 1]


# lm -> its Sampler; an entry goes when its model is garbage-collected
_SAMPLERS: weakref.WeakKeyDictionary[nn.Module, Sampler] = weakref.WeakKeyDictionary()
_STEP_HOOK = None


def _mark_stepped(optimizer, args, kwargs) -> None:
    """Optimiser post-step hook: flag every sampler whose model holds a parameter this optimiser updated."""
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for lm, sampler in list(_SAMPLERS.items()):
        if not sampler.stepped and any(id(p) in stepped for p in lm.parameters()):
            sampler.stepped = True


def autocast_dtype_of(lm: nn.Module) -> torch.dtype | None:
    """The low-precision dtype of the caller's autocast on `lm`'s device, or None when autocast is off."""
    device_type = next(lm.parameters()).device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        return dtype if dtype in (torch.bfloat16, torch.float16) else None
    return None


def sampler_for(lm: nn.Module) -> Sampler:
    """The Sampler of `lm` under the current autocast, built on first use and refreshed (`sync`) when the weights
    of `lm` changed since: an optimiser step on any of its parameters, an in-place write or a replaced tensor.
    So a trainer needs no call of its own after an update."""
    global _STEP_HOOK
    if _STEP_HOOK is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _STEP_HOOK = register_optimizer_step_post_hook(_mark_stepped)
    dtype = autocast_dtype_of(lm)
    sampler = _SAMPLERS.get(lm)
    pointers = tuple(p.data_ptr() for p in lm.parameters())
    if sampler is None or sampler.autocast_dtype != dtype or pointers != tuple(v[0] for v in sampler.version):
        _SAMPLERS.pop(lm, None)  # free the old copy before allocating the new one
        sampler = _SAMPLERS[lm] = Sampler(lm, dtype)
    elif sampler.is_stale(lm):
        sampler.sync(lm)
    return sampler
