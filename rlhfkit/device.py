"""Where models and tensors live outside accelerate, and the autocast that goes with that device.

The trainers take their device from accelerate (`accelerator.device`); the commands that run no trainer
(`eval`, `score`, the demo's preference collection and evaluation) take it from `default_device()`, and every
autocast follows the device its model is on. Without CUDA everything stays on the CPU as before.
`dtype: auto` (every command's default) picks bf16 autocast where bf16 matmuls are native, fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    """This process's GPU when CUDA is available, else the CPU.

    Under `accelerate launch`/torchrun each process owns cuda:LOCAL_RANK, the device its Accelerator picks;
    a plain process gets cuda:0. Hide the GPUs (CUDA_VISIBLE_DEVICES="") to run on the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of `model`'s first parameter (inputs go there)."""
    return next(model.parameters()).device


def autocast(device: torch.device | str, dtype: torch.dtype = torch.bfloat16, enabled: bool = True):
    """`torch.autocast` for the type of `device` (cpu, cuda, ...) in `dtype`, or a context that changes
    nothing when not `enabled` (an enclosing autocast then stays in force)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


# --------------------------------------------------------------------------- precision that follows the hardware
# Set to 0 or 1 to override what `native_bf16` detects (e.g. 0 on a CPU with AMX to measure the path a CPU
# without native bf16 takes); read at every call.
NATIVE_BF16_ENV = "RLHFKIT_NATIVE_BF16"
_LOGGED_CHOICES: set[tuple[str, str]] = set()


def native_bf16(device: torch.device | str | None = None) -> tuple[bool, str]:
    """Whether bf16 matmuls are native on `device` (default: `default_device()`), and why, in words.

    CUDA: `torch.cuda.is_bf16_supported()`. x86 CPUs: avx512_bf16 or AMX tiles (measured on a Xeon with AMX:
    bf16 matmuls ~2.4x faster than fp32; on an AVX-512 Xeon without avx512_bf16: 2x slower, the demo ~1 h
    instead of ~8 min). Other CPUs (ARM, ...): no; bf16 there is unmeasured, so `auto` keeps fp32.
    `RLHFKIT_NATIVE_BF16=0|1` overrides the detection."""
    override = os.environ.get(NATIVE_BF16_ENV)
    if override is not None:
        if override not in ("0", "1"):
            from rlhfkit.errors import ConfigError

            raise ConfigError(f"environment variable {NATIVE_BF16_ENV}={override!r}: use 0 or 1 (or unset it)")
        return override == "1", f"{NATIVE_BF16_ENV}={override}"
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, f"{torch.cuda.get_device_name(device)} {'supports' if ok else 'does not support'} bf16"
    if device.type == "cpu":
        flags = [name for name, has in (("avx512_bf16", torch.cpu._is_avx512_bf16_supported()),
                                        ("amx", torch.cpu._is_amx_tile_supported())) if has]
        if flags:
            return True, f"this CPU has {' and '.join(flags)}"
        return False, "this CPU has neither avx512_bf16 nor AMX (bf16 matmuls would be emulated, ~2x slower)"
    return False, f"bf16 is unmeasured on {device.type}"


def auto_dtype(device: torch.device | str | None = None) -> str:
    """What `dtype: auto` means here: "bf16" (autocast, fp32 master weights) where bf16 matmuls are native,
    else "fp32"."""
    return "bf16" if native_bf16(device)[0] else "fp32"


def resolve_dtypes(cfg):
    """`cfg` with every `dtype: auto` (nested groups too: the demo's ppo.dtype, dpo.dtype, ...) replaced by
    `auto_dtype()`, so the run, its config.yaml and a resume all read the precision that ran. Logs the choice
    once per process. A config without `auto` comes back as it is."""
    import dataclasses

    changes = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "dtype" and value == "auto":
            changes["dtype"] = auto_dtype()
            why = native_bf16()[1]
            if (changes["dtype"], why) not in _LOGGED_CHOICES:
                _LOGGED_CHOICES.add((changes["dtype"], why))
                log.info("dtype auto -> %s (%s)", changes["dtype"], why)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            resolved = resolve_dtypes(value)
            if resolved is not value:
                changes[f.name] = resolved
    return dataclasses.replace(cfg, **changes) if changes else cfg
