"""rlhfkit.device and the code that follows a model's device outside the trainers (reward model, evaluation).

Without a GPU, a wrong device shows up with the meta device: a model moved there holds no data, and a spy on
its forward sees which device its inputs were sent to."""

import warnings

import pytest
import torch

from rlhfkit import device as rdevice
from rlhfkit.device import autocast, default_device, model_device
from rlhfkit.eval import compare
from rlhfkit.models.reward import RewardModel


def test_default_device_is_this_processs_gpu_else_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert default_device() == torch.device("cuda", 0)  # a plain process
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert default_device() == torch.device("cuda", 3)  # process 3 of `accelerate launch` on this machine


def test_autocast_is_torchs_for_the_devices_type():
    x = torch.ones(2, 2)
    with autocast(torch.device("cpu")):
        assert (x @ x).dtype == torch.bfloat16  # bf16 by default
    with autocast("cpu", dtype=torch.float16):
        assert torch.get_autocast_dtype("cpu") == torch.float16
    assert (x @ x).dtype == torch.float32  # and off again outside
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available, disabling autocast" on a CPU machine
        ctx = autocast(torch.device("cuda", 1))
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda"  # the type, whatever the index


def test_disabled_autocast_leaves_an_enclosing_one_in_force():
    x = torch.ones(2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with autocast("cpu", enabled=False):
            # torch.autocast(enabled=False) would turn the outer one off here and give fp32
            assert (x @ x).dtype == torch.bfloat16


class Stop(Exception):
    """Raised by a forward spy once it has seen the inputs (a meta model cannot compute further)."""


def spy_inputs(model: torch.nn.Module) -> list:
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs["input_ids"].device)
        raise Stop

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_reward_model_loads_onto_a_device_and_sends_its_inputs_there(tiny_bert):
    assert model_device(RewardModel.from_pretrained(tiny_bert).model) == default_device()
    rm = RewardModel.from_pretrained(tiny_bert, device="meta")
    assert model_device(rm.model).type == "meta"
    seen = spy_inputs(rm.model)
    with pytest.raises(Stop):
        rm.score(["the cat"], ["good"])
    assert seen == [torch.device("meta")]  # the tokenizer's CPU tensors were moved to the model


def test_eval_sampling_autocasts_on_the_policys_device(tiny_llama, monkeypatch):
    from rlhfkit.config import GenerationConfig
    from rlhfkit.models.load import load_causal_lm, load_tokenizer

    calls = []

    def spy(device, **kwargs):
        calls.append((device, kwargs))
        return rdevice.autocast(device, **kwargs)

    monkeypatch.setattr(compare, "autocast", spy)
    lm = load_causal_lm(tiny_llama).eval()
    tokenizer = load_tokenizer(tiny_llama, padding_side="left")
    rows = compare.sample_policy(lm, lm, tokenizer, ["the cat", "a dog"], GenerationConfig(max_new_tokens=3),
                                 batch_size=2, bf16=True)
    assert len(rows) == 2 and calls == [(torch.device("cpu"), {"enabled": True})]
