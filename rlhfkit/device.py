"""Where models and tensors live outside accelerate, and the autocast that goes with that device.

The trainers take their device from accelerate (`accelerator.device`); the commands that run no trainer
(`eval`, `score`, the demo's preference collection and evaluation) take it from `default_device()`, and every
autocast follows the device its model is on. Without CUDA everything stays on the CPU as before.
"""

from __future__ import annotations

import contextlib
import os

import torch


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
