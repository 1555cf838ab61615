"""The Python API (rlhfkit.api): one function per command, the same checks, run and output folder as the CLI."""

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

import rlhfkit
from rlhfkit.cli import main
from rlhfkit.errors import ConfigError
from tests.trainers.test_ppo import write_prompts
from tests.trainers.test_rm import write_pairs
from tests.trainers.test_sft import write_demos

CONFIGS = ["SFTConfig", "RMConfig", "PPOConfig", "GRPOConfig", "RLOOConfig", "ReinforcePPConfig", "DPOConfig",
           "EvalConfig"]
FUNCTIONS = ["train_sft", "train_reward_model", "train_ppo", "train_grpo", "train_rloo", "train_reinforce_pp",
             "train_dpo", "evaluate"]


def count_good(prompts, completions):
    """A module-level reward function: config.yaml's `tests.test_api:count_good` imports back to it."""
    return [float(c.split().count("good")) for c in completions]


def read_rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_every_public_name_imports():
    assert set(rlhfkit.__all__) == {*CONFIGS, *FUNCTIONS, "RewardModel", "get_reward", "__version__"}
    for name in CONFIGS:
        assert dataclasses.is_dataclass(getattr(rlhfkit, name)), name
    for name in FUNCTIONS:
        fn = getattr(rlhfkit, name)
        assert callable(fn) and "Returns:" in fn.__doc__, name
    from rlhfkit.models.reward import RewardModel, get_reward

    assert (rlhfkit.RewardModel, rlhfkit.get_reward) == (RewardModel, get_reward)
    with pytest.raises(AttributeError, match="no attribute 'train_everything'"):
        rlhfkit.train_everything  # noqa: B018


def test_import_rlhfkit_its_configs_and_help_import_no_torch():
    code = ("import contextlib, io, sys, rlhfkit\n"
            "rlhfkit.SFTConfig, rlhfkit.PPOConfig(prompts='p', output='o'), rlhfkit.train_sft, rlhfkit.evaluate\n"
            "from rlhfkit.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("command, fn, flags, keys, message", [
    ("sft", "train_sft", ["--epochs", "0"], {"epochs": 0}, "config key 'epochs': 0 must be >= 1"),
    ("sft", "train_sft", ["--optim.warmup-ratio", "2"], {"optim": {"warmup_ratio": 2}},
     "config key 'optim.warmup_ratio': 2.0 must be <= 1"),
    ("dpo", "train_dpo", ["--loss", "ipo", "--label-smoothing", "0.1"], {"loss": "ipo", "label_smoothing": 0.1},
     "config key 'label_smoothing': 0.1 only applies to --loss sigmoid, not ipo"),
    ("grpo", "train_grpo", ["--group-size", "1"], {"group_size": 1},
     "config key 'group_size': the grpo baseline needs k >= 2 completions per prompt, got 1"),
])
def test_a_bad_value_raises_the_clis_one_line_error_before_any_work(tmp_path, capsys, command, fn, flags, keys,
                                                                   message):
    data_key = "prompts" if command == "grpo" else "data"
    out = tmp_path / "out"
    assert main([command, f"--{data_key}", "rows.jsonl", "--output", str(out), *flags]) == 2
    err = capsys.readouterr().err
    with pytest.raises(ConfigError) as info:
        getattr(rlhfkit, fn)(**{data_key: [{"prompt": "p"}], "output": out, **keys})  # rows: none are written
    assert err == f"rlhfkit {command}: error: {info.value}\n"
    assert str(info.value) == message
    assert not out.exists()


def test_unknown_keys_and_wrong_configs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="^unknown config key 'epoch' for `SFTConfig`$"):
        rlhfkit.train_sft(data="d.jsonl", output=tmp_path, epoch=1)
    with pytest.raises(ConfigError, match="^missing required config key 'output'"):
        rlhfkit.train_sft(data=[{"prompt": "p", "response": "r"}])
    with pytest.raises(ConfigError, match="^expected a DPOConfig"):
        rlhfkit.train_dpo(rlhfkit.SFTConfig(data="d", output="o"))
    with pytest.raises(ConfigError, match="^config key 'data': row 1 is a str, not a dict of fields$"):
        rlhfkit.train_sft(data=[{"prompt": "p", "response": "r"}, "oops"], output=tmp_path / "o")


def test_sft_through_the_api_writes_what_the_cli_writes(tiny_llama, tmp_path, monkeypatch):
    """The same settings through the API and the CLI: the same files, config.yaml (dtype auto resolved) and
    metrics."""
    monkeypatch.setenv("RLHFKIT_NATIVE_BF16", "0")  # `auto` -> fp32 on every machine
    data, held_out = write_demos(tmp_path / "train.jsonl", 32), write_demos(tmp_path / "eval.jsonl", 8, seed=1)
    flags = ["--model", tiny_llama, "--data", data, "--eval-data", held_out, "--epochs", "1", "--lr", "1e-2",
             "--log-every", "1"]
    assert main(["sft", *flags, "--output", str(tmp_path / "cli")]) == 0
    final = rlhfkit.train_sft(model=tiny_llama, data=tmp_path / "train.jsonl", eval_data=held_out, epochs=1,
                              optim={"lr": 1e-2}, log_every=1, output=tmp_path / "api")
    cli, api = tmp_path / "cli", tmp_path / "api"
    assert {p.name for p in api.iterdir()} == {p.name for p in cli.iterdir()} >= {
        "config.yaml", "metrics.jsonl", "policy", "loss.png"}
    cli_cfg, api_cfg = (yaml.safe_load((d / "config.yaml").read_text()) for d in (cli, api))
    assert api_cfg == {**cli_cfg, "output": str(api)} and api_cfg["dtype"] == "fp32"
    assert final == json.loads((api / "summary.json").read_text())
    assert final["eval_loss"] == pytest.approx(read_rows(cli / "metrics.jsonl")[-1]["eval_loss"], abs=1e-6)


def test_rm_from_a_config_object_with_rows_in_memory_and_resume(tiny_bert, tmp_path):
    pairs = read_rows(Path(write_pairs(tmp_path / "pairs.jsonl", 64, seed=0)))
    cfg = rlhfkit.RMConfig(base=tiny_bert, output=str(tmp_path / "rm"), epochs=1, dtype="fp32")
    first = rlhfkit.train_reward_model(cfg, data=pairs, lr=3e-3)
    out = tmp_path / "rm"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"] == str(out / "data" / "train.jsonl") and read_rows(out / "data" / "train.jsonl") == pairs
    assert 0 <= first["eval_accuracy"] <= 1 and (out / "model").is_dir() and (out / "accuracy.png").exists()
    again = rlhfkit.train_reward_model(cfg, data=pairs, lr=3e-3, epochs=2, resume=True)  # one more epoch
    epochs = [r["epoch"] for r in read_rows(out / "metrics.jsonl") if "eval_accuracy" in r]
    assert epochs == [1, 2] and again["epoch"] == 2


def test_dpo_from_a_datasets_dataset_with_dotted_and_nested_keys(tiny_llama, tmp_path):
    from tests.trainers.test_dpo import write_pairs as write_dpo_pairs

    rows = read_rows(Path(write_dpo_pairs(tmp_path / "pairs.jsonl", 16, seed=0)))
    final = rlhfkit.train_dpo(policy=tiny_llama, data=datasets.Dataset.from_list(rows), output=tmp_path / "dpo",
                              epochs=1, eval_fraction=0.25, lora={"use_lora": False}, dtype="fp32",
                              **{"optim.lr": 1e-2})
    out = tmp_path / "dpo"
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["lora"]["use_lora"], saved["optim"]["lr"]) == (False, 1e-2)
    assert read_rows(out / "data" / "train.jsonl") == rows
    assert "eval_reward_accuracy" in final and (out / "reward_accuracy.png").exists()
    assert (out / "policy" / "model.safetensors").exists()  # no LoRA: a whole model


def test_grpo_with_python_callables_as_rewards(tiny_llama, tmp_path, caplog):
    """A module-level function and a lambda (with a weight) score the rollouts; config.yaml names both, and
    says, with a warning, that the lambda's name does not import back."""
    calls = []

    def counted(prompts, completions):
        calls.append(len(completions))
        return [0.5] * len(completions)

    prompts = ["the cat", "a dog", [{"role": "user", "content": "the sun"}], "the moon"]
    with caplog.at_level(logging.WARNING, logger="rlhfkit.api"):
        final = rlhfkit.train_grpo(policy=tiny_llama, prompts=prompts, reward_fn=[count_good, (counted, 2)],
                                   output=tmp_path / "grpo", steps=2, batch_size=2, group_size=2,
                                   max_new_tokens=4, dtype="fp32")
    out = tmp_path / "grpo"
    name = f"{__name__}:test_grpo_with_python_callables_as_rewards.<locals>.counted"
    assert yaml.safe_load((out / "config.yaml").read_text())["reward_fn"] == [f"{__name__}:count_good",
                                                                           f"{name}=2.0"]
    assert calls == [4, 4]  # 2 prompts x 2 completions, one call per step
    assert final[f"rollout/reward/{name}"] == 0.5 and f"rollout/reward/{__name__}:count_good" in final
    (warning,) = [r.getMessage() for r in caplog.records if "does not import back" in r.getMessage()]
    assert warning.startswith(f"reward fn {name}: config.yaml records this name")
    assert read_rows(out / "data" / "prompts.jsonl")[2] == {"prompt": [{"role": "user", "content": "the sun"}]}
    assert (out / "policy").is_dir()


def test_ppo_with_a_reward_spec_string_and_a_prompt_file(tiny_llama, tmp_path):
    final = rlhfkit.train_ppo(policy=tiny_llama, prompts=write_prompts(tmp_path / "prompts.jsonl", 8),
                              reward_fns=f"{__name__}:count_good=0.5", output=tmp_path / "ppo", steps=1,
                              batch_size=4, max_new_tokens=4, dtype="fp32")
    assert yaml.safe_load((tmp_path / "ppo" / "config.yaml").read_text())["reward_fn"] == [
        f"{__name__}:count_good=0.5"]
    assert "ppo/policy_loss" in final and (tmp_path / "ppo" / "policy").is_dir()


def test_evaluate_two_policies_on_prompts_in_memory(tiny_llama, tmp_path):
    summary = rlhfkit.evaluate(policy={"base": tiny_llama, "again": tiny_llama}, prompts=["the cat", "a dog"],
                               output=tmp_path / "eval", samples_per_prompt=1, max_new_tokens=4, dtype="fp32")
    assert set(summary["methods"]) == {"base", "again"} and summary["n_eval_prompts"] == 2
    assert (tmp_path / "eval" / "report.html").exists()
    assert yaml.safe_load((tmp_path / "eval" / "config.yaml").read_text())["policy"] == [
        f"base={tiny_llama}", f"again={tiny_llama}"]
