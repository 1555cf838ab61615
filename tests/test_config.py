"""Config loading: defaults <- YAML <- flags, unknown keys named, bad values named, resolved config saved."""

import pytest
import yaml

from rlhfkit.cli import make_parser
from rlhfkit.config import PPOConfig, RMConfig, build, from_args, save_config
from rlhfkit.errors import ConfigError


def parse(argv):
    args = make_parser().parse_args(argv)
    args.__dict__.pop("quiet")
    return args


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    cfg_file = tmp_path / "rm.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": "a.jsonl", "output": "out", "epochs": 5, "optim": {"lr": 0.5}}))
    cfg = from_args(RMConfig, parse(["rm", "--config", str(cfg_file), "--epochs", "7"]))
    assert (cfg.epochs, cfg.optim.lr, cfg.batch_size) == (7, 0.5, 16)
    assert cfg.optim.weight_decay == 0.01  # the command's own group default survives


def test_short_and_dotted_names_and_aliases():
    cfg = build(PPOConfig, {"reward_model": "rm", "prompts": "p", "output": "o", "lr": 1e-3, "generation.top_p": 0.5,
                            "lora": False})
    assert (cfg.optim.lr, cfg.generation.top_p, cfg.lora.use_lora) == (1e-3, 0.5, False)


def test_unknown_key_is_named(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("data: a\noutput: b\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'"):
        from_args(RMConfig, parse(["rm", "--config", str(cfg_file)]))


def test_bad_values_and_missing_keys_are_named():
    with pytest.raises(ConfigError, match="'dtype'.*fp16.*fp32, bf16"):
        build(RMConfig, {"data": "a", "output": "b", "dtype": "fp16"})
    with pytest.raises(ConfigError, match="'epochs'.*'many'"):
        build(RMConfig, {"data": "a", "output": "b", "epochs": "many"})
    with pytest.raises(ConfigError, match="missing required config key 'data'"):
        build(RMConfig, {"output": "b"})
    with pytest.raises(ConfigError, match="num_minibatches"):
        build(PPOConfig, {"prompts": "p", "output": "o", "batch_size": 8, "num_minibatches": 3})


def test_saved_config_round_trips(tmp_path):
    cfg = build(PPOConfig, {"reward_model": "rm", "prompts": "p", "output": "o", "kl_coef": 0.3, "steps": 3})
    save_config(cfg, tmp_path / "config.yaml")
    again = build(PPOConfig, {k: v for k, v in _flat(yaml.safe_load((tmp_path / "config.yaml").read_text())).items()})
    assert again == cfg


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out
