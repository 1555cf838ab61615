"""Checkpoints that survive kill -9 and never run code from the folder they read.

A checkpoint is accelerate's `save_state` (model, optimiser, schedule and every process's RNG, CUDA included;
FSDP/DeepSpeed models save themselves, sharded) plus `trainer_state.json` (step, epoch, β, score statistics:
plain numbers; not `register_for_checkpointing`, whose objects accelerate unpickles with weights_only=False).
It is written into a fresh versioned folder that the `checkpoint` symlink switches to in one step
(rlhfkit.atomic): a kill at any moment leaves the previous complete checkpoint.

Only the trainable parameters are saved (LoRA adapters and heads, or every weight in full fine-tuning), so a
LoRA checkpoint is not the whole base model. Loading refuses, with a one-line error, any pickle that does not
load with torch.load(weights_only=True), before accelerate reads it (accelerate ignores a failure to restore
the RNG, and resuming without it would not be exact). That check covers the files in the checkpoint folder
itself, which is all there is in plain and DDP runs. Under FSDP and DeepSpeed the engines read their own
sub-folders, with unrestricted unpickling (torch.distributed.checkpoint's `.metadata`, DeepSpeed's
torch.load(weights_only=False)): resume those only from checkpoints you wrote.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections import OrderedDict
from pathlib import Path

import torch

from rlhfkit.atomic import versioned_dir, write_text
from rlhfkit.errors import RlhfkitError

TRAINER_STATE = "trainer_state.json"
PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")


def register_trainable_weights(accelerator) -> None:
    """Make `accelerator.save_state` write only the trainable parameters of each prepared model, under their
    unwrapped names, and `load_state` read them back after checking that exactly those names are there.
    (FSDP/DeepSpeed models are saved and loaded by their engines, whole, and never reach these hooks.)"""

    def save_hook(models, weights, output_dir):
        for i in range(len(weights)):  # `weights` holds the state dicts accelerate is about to write
            weights[i] = trainable_state(accelerator.unwrap_model(models[i]))

    def load_hook(models, input_dir):
        for i, model in enumerate(models):
            load_trainable_state(accelerator.unwrap_model(model), _weights_file(input_dir, i))
        models.clear()  # loaded: accelerate's own, strict loading would ask for the frozen weights too

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def trainable_state(model: torch.nn.Module) -> OrderedDict:
    """{name: tensor} of the parameters that train (tied weights once)."""
    return OrderedDict((k, p.detach().contiguous()) for k, p in model.named_parameters() if p.requires_grad)


def load_trainable_state(model: torch.nn.Module, path: Path) -> None:
    """Load `path` (safetensors) into the trainable parameters of `model`: all of them, and nothing else."""
    from safetensors.torch import load_file

    weights = load_file(str(path))
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(trainable - set(weights)), sorted(set(weights) - trainable)
    if missing or unexpected:
        raise RlhfkitError(
            f"{path}: does not match the model's trainable parameters ({len(missing)} missing, e.g. "
            f"{missing[:1]}; {len(unexpected)} unexpected, e.g. {unexpected[:1]}): resume with the settings "
            "that wrote it (--lora, --value-model, model)")
    model.load_state_dict(weights, strict=False)


def save_checkpoint(ckpt: Path, accelerator, trainer_state: dict) -> None:
    """Write a checkpoint into a new versioned folder and switch the symlink `ckpt` to it.

    Every process must call this: each writes its own RNG state and sharded models gather their weights;
    the main process writes the rest, then switches the link once every process has finished."""
    from accelerate.utils import broadcast_object_list

    with contextlib.ExitStack() as stack:
        folder = [str(stack.enter_context(versioned_dir(ckpt)))] if accelerator.is_main_process else [None]
        folder = Path(broadcast_object_list(folder)[0])  # every process writes into the main process's folder
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            state = {**trainer_state, "num_processes": accelerator.num_processes}
            write_text(folder / TRAINER_STATE, json.dumps(state, indent=1))
        accelerator.wait_for_everyone()  # all files are in before the switch (leaving the `with`)


def load_checkpoint(ckpt: Path, accelerator) -> dict:
    """Restore weights, optimiser, schedule and this process's RNG from `ckpt`; return the trainer state.

    Raises RlhfkitError (one line) for a pickle that is not plain data, a checkpoint written by another number
    of processes, or an RNG state that did not load."""
    from accelerate.utils import RNG_STATE_NAME

    folder = Path(ckpt).resolve()
    state = read_trainer_state(folder)
    if state.get("num_processes") != accelerator.num_processes:
        raise RlhfkitError(f"{folder}: written by {state.get('num_processes')} processes; resume with as "
                           f"many (this run has {accelerator.num_processes}) or start without --resume")
    for path in sorted(folder.iterdir()):
        if path.suffix in PICKLE_SUFFIXES:
            load_plain_pickle(path)  # refuses code before accelerate (or anyone) unpickles the file
    rng_file = folder / f"{RNG_STATE_NAME}_{accelerator.process_index}.pkl"
    if not rng_file.is_file():
        raise RlhfkitError(f"{rng_file}: missing; a checkpoint holds the RNG state of every process")
    rng = load_plain_pickle(rng_file)
    accelerator.load_state(str(folder))
    # accelerate catches every error while restoring the RNG and carries on: check that it did restore it
    expected = rng.get("torch_manual_seed") if isinstance(rng, dict) else None
    if not (isinstance(expected, torch.Tensor) and torch.equal(torch.get_rng_state(), expected)
            and random.getstate() == rng.get("random_state")):
        raise RlhfkitError(f"{rng_file}: the RNG state did not load, so the resumed run would not be exact")
    return state


def load_plain_pickle(path: Path):
    """torch.load(weights_only=True), numpy arrays of an RNG state allowed (accelerate's list): tensors,
    numbers, strings and containers load; any other object is refused before it is built."""
    from accelerate.utils import load

    try:
        return load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except Exception as e:  # unpickling errors have no common type: each becomes one line for the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RlhfkitError(f"{path}: refusing to load a checkpoint file that is not plain data (tensors, "
                           f"numbers, strings): {reason}") from None


def read_trainer_state(folder: Path) -> dict:
    """The trainer's own state (`trainer_state.json`): a JSON object, nothing executable."""
    path = folder / TRAINER_STATE
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RlhfkitError(f"{path}: cannot read the trainer state ({type(e).__name__}): "
                           "not an rlhfkit checkpoint, or an older layout; start without --resume") from None
    if not isinstance(state, dict):
        raise RlhfkitError(f"{path}: expected a JSON object, found {type(state).__name__}")
    return state


def _weights_file(folder: str | Path, index: int) -> Path:
    """accelerate's file name for the weights of its `index`-th prepared model."""
    return Path(folder) / ("model.safetensors" if index == 0 else f"model_{index}.safetensors")


def _is_zip(path: Path) -> bool:
    """torch.save's zip format can be memory-mapped (checking a large optimiser state reads little)."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"
