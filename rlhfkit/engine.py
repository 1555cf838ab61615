"""The rollout sampling engine: a sampling copy of the policy (LoRA merged, matmul weights cast once to the
autocast dtype and packed for oneDNN) and a plain decode loop (batched prefill, static KV cache, one token per
step) that samples exactly softmax(logits / τ). `rollout.generate` uses it for every rollout; transformers'
`generate` stays the fallback (`GenerationConfig.engine = "hf"`, other model families, top-p / top-k).

Where `generate` loses time on this CPU under PPO's defaults (LoRA, bf16 autocast; bench/generate_speed.py):
autocast re-casts the frozen fp32 base weights to bf16 at every decoding step (it caches casts only of weights
that require grad), unmerged LoRA adds two small matmuls per linear layer, bf16 matmuls on unpacked weights run
at half the speed of oneDNN's packed ones, torch.multinomial draws one exponential per vocabulary entry, and
the per-layer dispatch of the model's forward is a large share of a batch-8 step. Here the weights are merged,
cast and packed once per optimiser update (`Sampler.sync`, found stale automatically by `sampler_for`).
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rlhfkit.models import attention
from rlhfkit.models.policy import position_ids_for

log = logging.getLogger(__name__)

# model families whose sampling tests/test_engine.py checks against a full forward and against `generate`; they
# take `cache`, `position_ids` and `logits_to_keep` and build their masks with transformers' masking utilities
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gpt2")


def sample_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None):
    """y ~ softmax(logits / τ) for each row: the full distribution, no top-k / top-p / penalties (ALGORITHMS.md §1).

    By inversion: y = min{k : F_k > u · F_V}, u ~ U[0, 1), F_k = Σ_{j≤k} p_j summed in float64, so every token
    keeps its fp32 probability up to ~1e-16. (torch.multinomial draws one exponential per vocabulary entry:
    7.2 ms per [8, 49152] call on this CPU against ~1.5 ms here, at every decoding step.)
    Args: logits [B, V]; generator: None draws from torch's global RNG (seeded by the trainers).
    Returns: (tokens [B] long, logprobs [B] = log softmax(logits / τ)[y], fp32)."""
    logprobs = torch.log_softmax(logits.float() / temperature, -1)  # [B, V]
    cdf = logprobs.exp().double().cumsum(-1)  # [B, V]
    u = torch.rand(cdf.shape[0], 1, dtype=torch.float64, device=cdf.device, generator=generator)  # [B, 1]
    # the clamp only matters if u · F_V rounds up to F_V (u within 2^-53 of 1)
    tokens = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=cdf.shape[1] - 1)  # [B, 1]
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
    # FSDP2's DTensors and quantised weights are other types; DeepSpeed ZeRO-3 leaves empty placeholders
    if any(type(p) is not nn.Parameter or hasattr(p, "ds_id") for p in lm.parameters()):
        return "its parameters are sharded or quantised"
    if _is_peft(lm) and lm.peft_type != "LORA":
        return f"peft type {lm.peft_type} (only LoRA is merged)"
    for name, module in base.named_modules():
        if isinstance(module, BaseTunerLayer) and not _is_plain_lora_linear(module):
            return f"peft layer {name} ({type(module).__name__}) is not a plain LoRA linear layer"
    return None


def merged_parameters(lm: nn.Module, merge: bool = True,
                      separate: frozenset[str] = frozenset()) -> Iterator[tuple[str, torch.Tensor]]:
    """(name in the plain model, current value) of every parameter, active LoRA deltas merged in:
    W' = W + Σ_a s_a · B_a A_a (peft's `get_delta_weight`, which also transposes GPT-2's Conv1D weights).
    `merge=False` yields W itself (same name and shape). The LoRA layers named in `separate` yield W and
    their one adapter's factors instead, as `<layer>.lora_A` [r, in], `<layer>.lora_B` [out, r] and
    `<layer>.lora_scale` [] (s, or 0 while the adapter is off or already merged into W). A parameter shared
    by two modules (tied embeddings) is yielded once under each name."""

    def walk(module: nn.Module, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
        if _is_plain_lora_linear(module) and prefix.rstrip(".") in separate:
            base_layer = module.get_base_layer()
            yield f"{prefix}weight", base_layer.weight
            if base_layer.bias is not None:
                yield f"{prefix}bias", base_layer.bias
            (adapter,) = module.lora_A  # `separate` holds single-adapter layers only
            on = adapter in module.active_adapters and not module.merged and not module.disable_adapters
            yield f"{prefix}lora_A", module.lora_A[adapter].weight
            yield f"{prefix}lora_B", module.lora_B[adapter].weight
            yield f"{prefix}lora_scale", torch.tensor(float(module.scaling[adapter]) if on else 0.0)
            return
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
    """Layers whose weights autocast casts to its dtype (linear / addmm): nn.Linear, GPT-2's Conv1D."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def can_pack(device: torch.device, dtype: torch.dtype | None) -> bool:
    """Whether oneDNN's prepacked bf16 linear layers are available (x86 CPUs with bf16 support)."""
    return (device.type == "cpu" and dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedLinear(nn.Module):
    """y = x Wᵀ + b in bf16 with W stored once in oneDNN's blocked layout (what inductor's CPU freezing does).
    Measured on this 2-core Xeon (AMX), batch 8, one thread: 1.6-2.2x faster than F.linear on the same bf16
    weight (SmolLM2's shapes: 192x576 1.6x, 576x576 2.1x, MLP 2.2x, LM head 2.0x), bit-identical output.
    `transposed`: W is stored [in, out] (GPT-2's Conv1D)."""

    def __init__(self, bias: torch.Tensor | None, transposed: bool):
        super().__init__()
        self.transposed = transposed
        self.weight: torch.Tensor | None = None  # filled by load_weight
        self.bias = None if bias is None else torch.empty(bias.shape, dtype=torch.bfloat16)  # filled by sync

    def load_weight(self, weight: torch.Tensor) -> None:
        weight = weight.t() if self.transposed else weight  # [out, in]
        # 8: the rollout batch size, a hint for the blocked layout; any batch size works
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.to(torch.bfloat16).contiguous(), 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.weight, self.bias, "none", [], "")


class SeparateLoraLinear(nn.Module):
    """y = base(x) + s · B (A x), the LoRA delta as its own low-rank matmul: what peft's forward computes under
    autocast, bf16(W) x + s · bf16(bf16(B) bf16(bf16(A) x)), where merging would round the small delta into
    bf16(W + s·BA) and lose much of it (SmolLM2: bench/sampler_gap.py). `base` is the cast (or packed) copy of W.

    The two thin matmuls run in fp32 on the bf16-rounded factors and round their outputs to bf16, as the bf16
    kernels do (they accumulate in fp32): the same numbers (tests/test_engine.py compares the logits bit for
    bit), at a third of the time of oneDNN's bf16 calls on such shapes ([16, 576] x [576, 16]: 18 µs vs 63 µs
    on a 2-core Xeon with AMX, native bf16)."""

    def __init__(self, base: nn.Module, rank: int, in_features: int, out_features: int, dtype, device):
        super().__init__()
        self.base = base
        self.dtype = dtype
        self.lora_A = torch.empty(in_features, rank, device=device)  # fp32 of bf16(A)ᵀ, filled by sync
        self.lora_B = torch.empty(rank, out_features, device=device)  # fp32 of bf16(B)ᵀ
        self.scale = 0.0  # s = alpha / r, 0 while the adapter is off

    def load_factors(self, name: str, value: torch.Tensor) -> None:
        """Write A [r, in] or B [out, r] (rounded to the autocast dtype, as autocast would cast it)."""
        getattr(self, name).copy_(value.detach().to(self.dtype).float().t())

    def set_scale(self, scale: torch.Tensor) -> None:
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if not self.scale:
            return self.base(x)
        h = torch.matmul(x.float(), self.lora_A).to(self.dtype)  # [..., r]  bf16(A x)
        delta = torch.matmul(h.float(), self.lora_B).to(self.dtype)  # [..., out]  bf16(B h)
        return self.base(x) + delta * self.scale


class Sampler:
    """A sampling copy of a causal LM `lm` (peft LoRA or plain), and the decode loop that samples from it.

    With `autocast_dtype` (bf16: PPO's default), the weights of matmul layers are stored merged and cast
    (bf16(W + s·BA)), and the copy runs under the same autocast; so for a model without LoRA it computes what
    the autocast forward of `lm` computes, without casting weights during sampling. Everything else
    (embeddings, norms, buffers) is shared with `lm`, not copied. Without `autocast_dtype`, only merged LoRA
    layers are copied, in their own dtype, and a model without LoRA is sampled from directly.
    Memory: one `autocast_dtype` copy of the matmul weights, incl. an untied LM head (256 MiB for SmolLM2-135M).
    `sync(lm)` refreshes the copy after an optimiser update; `sampler_for` calls it when the weights changed."""

    def __init__(self, lm: nn.Module, autocast_dtype: torch.dtype | None = None, lora: str = "merged"):
        self.autocast_dtype = autocast_dtype
        self.lora = lora
        self.device = next(lm.parameters()).device
        base = lm.get_base_model() if _is_peft(lm) else lm
        self.owned: dict[str, Callable[[torch.Tensor], object]] = {}  # name -> how `sync` writes it into the copy
        self.written: dict[str, tuple] = {}  # frozen source name -> (data_ptr, version) last written
        self.copy_bytes = 0  # memory of the owned tensors
        # the LoRA layers whose delta stays a low-rank matmul of its own (`SeparateLoraLinear`): under autocast
        # with lora="separate", those with one adapter; the others (and every layer in fp32) are merged
        self.separate = frozenset(
            name for name, module in base.named_modules()
            if lora == "separate" and autocast_dtype is not None and _is_plain_lora_linear(module)
            and len(module.lora_A) == 1)
        self.model = base if autocast_dtype is None and not _is_peft(lm) else self._build_copy(base)
        self.lean = has_llama_layers(self.model)
        self.sync(lm)

    def _build_copy(self, base: nn.Module) -> nn.Module:
        """The model's module tree, built on the meta device, then given tensors: a new one (`owned`) for each
        weight that is cast to the autocast dtype or merged with LoRA (matmul layers become `PackedLinear` where
        oneDNN allows); `base`'s own tensor for the rest (embeddings, norms, buffers)."""
        import copy

        lora_layers = {name for name, module in base.named_modules() if _is_plain_lora_linear(module)}
        with torch.device("meta"):
            model = type(base)(copy.deepcopy(base.config))
        model.eval().requires_grad_(False)
        sources = dict(merged_parameters(base, merge=False, separate=self.separate))
        packs = can_pack(self.device, self.autocast_dtype)
        for name, module in list(model.named_modules()):
            prefix = f"{name}." if name else ""
            cast = self.autocast_dtype is not None and _is_matmul_layer(module)
            if cast and packs:
                packed = PackedLinear(sources.get(f"{prefix}bias"), transposed=not isinstance(module, nn.Linear))
                model.set_submodule(name, self._separate_lora(name, packed, sources))
                self.owned[f"{prefix}weight"] = packed.load_weight
                self.copy_bytes += sources[f"{prefix}weight"].numel() * 2
                if packed.bias is not None:
                    self.owned[f"{prefix}bias"] = packed.bias.copy_
                    self.copy_bytes += packed.bias.numel() * 2
                continue
            for pname, _ in list(module.named_parameters(recurse=False)):
                source = sources[prefix + pname]
                dtype = self.autocast_dtype if cast and source.is_floating_point() else source.dtype
                if name in lora_layers or dtype != source.dtype:  # untied from `base` (and from each other)
                    owned = torch.empty(source.shape, dtype=dtype, device=self.device)
                    module._parameters[pname] = nn.Parameter(owned, requires_grad=False)
                    self.owned[prefix + pname] = owned.copy_
                    self.copy_bytes += owned.numel() * owned.element_size()
                else:
                    module._parameters[pname] = nn.Parameter(source.detach(), requires_grad=False)
            for bname, _ in list(module.named_buffers(recurse=False)):
                module._buffers[bname] = base.get_buffer(prefix + bname)
            if cast:
                model.set_submodule(name, self._separate_lora(name, module, sources))
        return model

    def _separate_lora(self, name: str, layer: nn.Module, sources: dict) -> nn.Module:
        """`layer` (the cast copy of a matmul layer) itself, or wrapped in a `SeparateLoraLinear` whose factors
        `sync` writes, when `name` is one of the separate LoRA layers."""
        if name not in self.separate:
            return layer
        prefix = f"{name}."
        rank, in_features = sources[f"{prefix}lora_A"].shape
        wrapper = SeparateLoraLinear(layer, rank, in_features, sources[f"{prefix}lora_B"].shape[0],
                                     self.autocast_dtype, self.device)
        self.owned[f"{prefix}lora_A"] = functools.partial(wrapper.load_factors, "lora_A")
        self.owned[f"{prefix}lora_B"] = functools.partial(wrapper.load_factors, "lora_B")
        self.owned[f"{prefix}lora_scale"] = wrapper.set_scale
        self.copy_bytes += (wrapper.lora_A.numel() + wrapper.lora_B.numel()) * wrapper.lora_A.element_size()
        return wrapper

    @staticmethod
    def weights_version(lm: nn.Module) -> tuple:
        """Changes whenever a parameter of `lm` is written in place (load_state_dict, most optimisers) or
        replaced; the fused AdamW of trainers/loop.py does not bump it, hence also `_mark_stepped`."""
        return tuple((p.data_ptr(), p._version) for p in lm.parameters())

    @torch.no_grad()
    def sync(self, lm: nn.Module) -> None:
        """Copy the current weights of `lm` (LoRA merged or its factors, cast) into the sampling copy. A frozen
        parameter (LoRA's base W) is written again only when it changed (an in-place write or a new tensor
        moves its (data_ptr, version)); the trained ones, which fused AdamW updates without a version bump,
        every time."""
        if self.owned:
            for name, value in merged_parameters(lm, separate=self.separate):
                if name not in self.owned:
                    continue
                frozen = isinstance(value, nn.Parameter) and not value.requires_grad
                stamp = (value.data_ptr(), value._version) if frozen else None
                if stamp is None or self.written.get(name) != stamp:
                    self.owned[name](value)
                    if stamp is not None:
                        self.written[name] = stamp
        self.version = self.weights_version(lm)
        self.stepped = False

    def is_stale(self, lm: nn.Module) -> bool:
        return bool(self.owned) and (self.stepped or self.version != self.weights_version(lm))

    def _forward(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
        """Logits [B, V] of the last position, by the model's own forward; the new keys/values go into `cache`."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def _prefill(self, query_ids, query_mask, max_new_tokens: int):
        """All prompt tokens in one forward pass into a static cache of P + max_new_tokens columns.
        Returns: (logits [B, V] of the first response token, decode) where decode(tokens [B], t) feeds the t-th
        response token (cache column P + t) and returns the logits [B, V] of the next one."""
        from transformers import StaticCache

        prompt_len = query_ids.shape[1]
        cache = StaticCache(config=self.model.config, max_cache_len=prompt_len + max_new_tokens)
        attention_mask = F.pad(query_mask, (0, max_new_tokens))  # [B, P+T]: 0 until a token is sampled there
        logits = self._forward(query_ids, attention_mask, position_ids_for(query_mask), cache)  # [B, V]
        next_position = position_ids_for(query_mask)[:, -1:] + 1  # [B, 1]: positions skip left padding
        if not self.lean:
            def decode(tokens: torch.Tensor, t: int) -> torch.Tensor:
                attention_mask[:, prompt_len + t] = 1
                return self._forward(tokens[:, None], attention_mask, next_position + t, cache)

            return logits, decode
        dtype = self.autocast_dtype or cache.layers[0].values.dtype
        kv = [(layer.keys.to(dtype), layer.values.to(dtype)) for layer in cache.layers]  # [B, Hkv, P+T, D] each
        mask = torch.zeros(attention_mask.shape, dtype=dtype, device=self.device)  # [B, P+T]
        mask = mask.masked_fill_(attention_mask == 0, float("-inf"))[:, None, None, :]  # [B, 1, 1, P+T]

        def decode(tokens: torch.Tensor, t: int) -> torch.Tensor:
            mask[..., prompt_len + t] = 0.0
            with torch.autocast(self.device.type, enabled=False):  # llama_decode_step sets every dtype itself
                slot = torch.tensor([prompt_len + t], device=self.device)  # [1]
                return llama_decode_step(self.model, tokens[:, None], next_position + t, kv, mask, slot)

        return logits, decode

    @torch.no_grad()
    def sample(self, query_ids: torch.Tensor, query_mask: torch.Tensor, *, temperature: float, max_new_tokens: int,
               eos_id: int, pad_id: int, generator: torch.Generator | None = None):
        """y ~ π(·|x) one token per step for a batch of left-padded prompts (prefill in one forward pass).

        Rows that ended hold pad after their EOS; the loop stops once every row has ended.
        Args: query_ids, query_mask [B, P]. Returns: (response_ids [B, T], logprobs [B, T]) with T ≤ max_new_tokens
        and logprobs = log softmax(logits / τ)[y_t] under this copy (0 after EOS), for diagnostics only: the
        trainers recompute log π_old with their own forward."""
        batch = query_ids.shape[0]
        response_ids = query_ids.new_full((batch, max_new_tokens), pad_id)  # [B, T]
        logprobs = torch.zeros(batch, max_new_tokens, device=query_ids.device)  # [B, T]
        ended = torch.zeros(batch, dtype=torch.bool, device=query_ids.device)  # [B]
        was_training = self.model.training
        self.model.eval()  # HF drops the cache in train mode under gradient checkpointing; dropout is 0 anyway
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            logits, decode = self._prefill(query_ids, query_mask, max_new_tokens)  # [B, V]
            for t in range(max_new_tokens):
                tokens, token_logprobs = sample_tokens(logits, temperature, generator)  # [B], [B]
                tokens = tokens.masked_fill(ended, pad_id)  # [B]
                response_ids[:, t] = tokens
                logprobs[:, t] = token_logprobs.masked_fill(ended, 0.0)
                ended |= tokens == eos_id
                if t + 1 == max_new_tokens or bool(ended.all()):
                    break
                logits = decode(tokens, t)  # [B, V]
        self.model.train(was_training)
        return response_ids[:, : t + 1], logprobs[:, : t + 1]


LLAMA_STYLE_MODEL_TYPES = ("llama", "mistral", "qwen2")


def has_llama_layers(model: nn.Module) -> bool:
    """Whether `llama_decode_step` computes exactly what the model's own forward does: a Llama-style decoder
    (pre-norm attention + MLP blocks, rotary positions, SDPA, no sliding window, no norms on q / k). Other
    supported models decode with their own forward (same results, ~10% slower per step on SmolLM2)."""
    config = model.config
    return (config.model_type in LLAMA_STYLE_MODEL_TYPES and config._attn_implementation in ("sdpa", attention.NAME)
            and getattr(config, "sliding_window", None) is None and not hasattr(model.model.layers[0].self_attn,
                                                                                 "q_norm"))


def llama_decode_step(model: nn.Module, tokens, position_ids, kv: list, mask, slot: torch.Tensor) -> torch.Tensor:
    """One decoding step of a Llama-style model, written out with the model's own modules and rotary function:
    the arithmetic of `model.forward` under the same autocast, without its per-layer dispatch, mask building and
    cache bookkeeping, with K/V stored in the dtype attention reads them in (autocast casts them to bf16 inside
    SDPA anyway) and each layer input cast once for all the projections that read it.
    Args: tokens [B, 1]; position_ids [B, 1]; kv: per layer (keys, values) [B, Hkv, K, D], filled up to `slot`;
    mask [B, 1, 1, K] additive (0 = attend, -inf = padding or not yet sampled); slot [1]: this token's cache
    column (a tensor, so that a compiled step is not specialised to it).
    Returns: logits [B, V]."""
    import sys

    inner = model.model
    dtype = kv[0][0].dtype
    batch = tokens.shape[0]
    hidden = inner.embed_tokens(tokens)  # [B, 1, H]
    cos, sin = inner.rotary_emb(hidden, position_ids)  # [B, 1, D] each
    rotate = sys.modules[type(inner.layers[0].self_attn).__module__].apply_rotary_pos_emb
    for layer, (keys, values) in zip(inner.layers, kv):
        attn, mlp = layer.self_attn, layer.mlp
        x = layer.input_layernorm(hidden).to(dtype)  # [B, 1, H]
        q = attn.q_proj(x).view(batch, 1, -1, attn.head_dim).transpose(1, 2)  # [B, Hq, 1, D]
        k = attn.k_proj(x).view(batch, 1, -1, attn.head_dim).transpose(1, 2)  # [B, Hkv, 1, D]
        q, k = rotate(q, k, cos, sin)
        keys.index_copy_(2, slot, k.to(dtype))
        values.index_copy_(2, slot, attn.v_proj(x).view(batch, 1, -1, attn.head_dim).transpose(1, 2).to(dtype))
        # one query token: its Hq heads as Hkv groups of rows (transformers' pack_gqa), so K/V are not repeated
        q = q.to(dtype).reshape(batch, keys.shape[1], -1, attn.head_dim)  # [B, Hkv, Hq/Hkv, D]
        if attention.use_written_out(values, keys.shape[2]):  # as the trainers' forward computes it
            out = attention.written_out_attention(q, keys, values, mask == 0, attn.scaling)  # [B, Hkv, G, D]
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.scaling)
        hidden = hidden + attn.o_proj(out.reshape(batch, 1, -1))  # [B, 1, H]
        x = layer.post_attention_layernorm(hidden).to(dtype)  # [B, 1, H]
        hidden = hidden + mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))  # [B, 1, H]
    return model.lm_head(inner.norm(hidden))[:, -1]  # [B, V]


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


def sampler_for(lm: nn.Module, lora: str = "merged") -> Sampler:
    """The Sampler of `lm` under the current autocast, built on first use and refreshed (`sync`) when the weights
    of `lm` changed since: an optimiser step on any of its parameters, an in-place write or a replaced tensor.
    So a trainer needs no call of its own after an update. `lora`: "separate" keeps each LoRA delta a low-rank
    matmul of its own under autocast (`SeparateLoraLinear`), "merged" rounds it into the cast weights."""
    global _STEP_HOOK
    if _STEP_HOOK is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _STEP_HOOK = register_optimizer_step_post_hook(_mark_stepped)
    dtype = autocast_dtype_of(lm)
    sampler = _SAMPLERS.get(lm)
    pointers = tuple(p.data_ptr() for p in lm.parameters())
    if (sampler is None or sampler.autocast_dtype != dtype or sampler.lora != lora
            or pointers != tuple(v[0] for v in sampler.version)):
        _SAMPLERS.pop(lm, None)  # free the old copy before allocating the new one
        sampler = _SAMPLERS[lm] = Sampler(lm, dtype, lora)
    elif sampler.is_stale(lm):
        sampler.sync(lm)
    return sampler
