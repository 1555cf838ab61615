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


# --------------------------------------------------------------------------- dtype auto
def test_native_bf16_follows_the_cpu_flags(monkeypatch):
    monkeypatch.delenv(rdevice.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert rdevice.native_bf16("cpu")[0] is False and rdevice.auto_dtype("cpu") == "fp32"  # AVX-512 Xeon, no bf16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    native, why = rdevice.native_bf16("cpu")
    assert native and "amx" in why and rdevice.auto_dtype("cpu") == "bf16"
    assert rdevice.native_bf16("meta")[0] is False  # a device type nobody measured: fp32


def test_the_environment_variable_overrides_the_detection(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setenv(rdevice.NATIVE_BF16_ENV, "0")
    assert rdevice.auto_dtype("cpu") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setenv(rdevice.NATIVE_BF16_ENV, "1")
    assert rdevice.auto_dtype("cpu") == "bf16"
    from rlhfkit.errors import ConfigError

    monkeypatch.setenv(rdevice.NATIVE_BF16_ENV, "yes")
    with pytest.raises(ConfigError, match="RLHFKIT_NATIVE_BF16='yes': use 0 or 1"):
        rdevice.auto_dtype("cpu")


@pytest.mark.parametrize("native, expected", [("0", "fp32"), ("1", "bf16")])
def test_resolve_dtypes_replaces_every_auto_nested_groups_too(native, expected, monkeypatch):
    from rlhfkit.config import DemoConfig, PPOConfig

    monkeypatch.setenv(rdevice.NATIVE_BF16_ENV, native)
    demo = rdevice.resolve_dtypes(DemoConfig())
    assert {demo.ppo.dtype, demo.dpo.dtype, demo.grpo.dtype, demo.rloo.dtype, demo.reinforce_pp.dtype} == {expected}
    explicit = PPOConfig(prompts="p", output="o", dtype="fp32")
    assert rdevice.resolve_dtypes(explicit) is explicit  # an explicit choice is kept as it is


def test_every_command_with_a_dtype_defaults_to_auto():
    import dataclasses

    from rlhfkit.cli import COMMANDS
    from rlhfkit.config_loading import _leaf_fields

    dtypes = {name: [f.default for key, _, f in _leaf_fields(cls) if key.split(".")[-1] == "dtype"]
              for name, (cls, _, _) in COMMANDS.items()}
    assert all(d == "auto" for values in dtypes.values() for d in values), dtypes
    assert {n for n, v in dtypes.items() if v} >= {"sft", "rm", "ppo", "grpo", "rloo", "reinforce-pp", "dpo",
                                                     "eval", "bon", "demo"}
    assert dataclasses.is_dataclass(COMMANDS["env"][0])


def test_rlhfkit_env_reports_the_machine_and_the_choice(monkeypatch, capsys):
    import json

    from rlhfkit.cli import main

    monkeypatch.setenv(rdevice.NATIVE_BF16_ENV, "0")
    assert main(["env", "--json", "--no-timing"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dtype_auto"] == "fp32" and report["native_bf16"] is False
    assert report["engine_packed_bf16"] is False  # fp32: the engine's packed bf16 path is not used
    assert {"torch", "transformers", "accelerate", "peft", "deepspeed"} <= set(report["versions"])
    assert {"avx512", "avx512_bf16", "amx", "avx512_vnni"} <= set(report["cpu_flags"])
    assert "matmul" not in report
    from rlhfkit.environment import format_report, matmul_timings

    rows = matmul_timings(torch.device("cpu"))  # a few seconds: the timing `rlhfkit env` prints
    assert len(rows) == 2 and all(r["fp32_ms"] > 0 and r["bf16_ms"] > 0 for r in rows)
    text = format_report({**report, "matmul": rows})
    assert "dtype auto -> fp32" in text and "bf16 runs at" in text
