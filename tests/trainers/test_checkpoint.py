"""Checkpoints: only the trainable weights, plain data only (a pickle that would run code is refused before it
runs), and a resume that cannot be exact fails loudly instead of carrying on."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from rlhfkit.cli import main
from tests.trainers.test_loop import write_demos


class WritesMarker:
    """Unpickling this object calls open(marker, "w"): code from the checkpoint folder would have run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def sft_args(tiny_llama, data, out, *extra):
    return ["sft", "--model", tiny_llama, "--data", data, "--output", str(out), "--epochs", "1",
            "--batch-size", "8", "--dtype", "fp32", "--lr", "1e-2", *extra]


@pytest.fixture(scope="module")
def lora_run(tiny_llama, tmp_path_factory):
    """A finished 1-epoch LoRA SFT run: (its folder, its data)."""
    tmp = tmp_path_factory.mktemp("lora_run")
    data = write_demos(tmp / "train.jsonl", 16)
    assert main(sft_args(tiny_llama, data, tmp / "run", "--lora")) == 0
    return tmp / "run", data


def resume_in_place(tiny_llama, lora_run, tmp_path, capsys):
    """`--resume` a 2-epoch run from the copy of `lora_run` in tmp_path/run; returns (exit status, stderr)."""
    capsys.readouterr()
    args = sft_args(tiny_llama, lora_run[1], tmp_path / "run", "--lora", "--resume", "--epochs", "2")
    return main(args), capsys.readouterr().err


def test_a_lora_checkpoint_holds_only_the_adapters(lora_run):
    ckpt = lora_run[0] / "checkpoint"
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys), keys[:3]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state == {"epoch": 1, "step": 2, "skipped_steps": 0, "num_processes": 1}


@pytest.mark.parametrize("name", ["random_states_0.pkl", "optimizer.bin", "scheduler.bin", "state.pt"])
def test_a_pickle_that_would_run_code_is_refused(tiny_llama, lora_run, tmp_path, capsys, name):
    marker = tmp_path / "marker"
    shutil.copytree(lora_run[0], tmp_path / "run", symlinks=True)
    # state.pt: the layout before issue 10 (read with weights_only=False)
    torch.save({"state": WritesMarker(marker)}, tmp_path / "run" / "checkpoint" / name)
    status, err = resume_in_place(tiny_llama, lora_run, tmp_path, capsys)
    assert status == 2 and not marker.exists()
    assert name in err and "not plain data" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_rng_state_accelerate_cannot_restore_is_refused(tiny_llama, lora_run, tmp_path, capsys):
    """accelerate catches every error while restoring the RNG and only logs it; the resume must stop."""
    shutil.copytree(lora_run[0], tmp_path / "run", symlinks=True)
    torch.save({"step": 0}, tmp_path / "run" / "checkpoint" / "random_states_0.pkl")  # plain, but no RNG
    status, err = resume_in_place(tiny_llama, lora_run, tmp_path, capsys)
    assert status == 2 and "RNG state did not load" in err


def test_other_trainable_parameters_are_refused(tiny_llama, lora_run, tmp_path, capsys):
    shutil.copytree(lora_run[0], tmp_path / "run", symlinks=True)
    capsys.readouterr()
    status = main(sft_args(tiny_llama, lora_run[1], tmp_path / "run", "--no-lora", "--resume"))
    err = capsys.readouterr().err
    assert status == 2 and "does not match the model's trainable parameters" in err
