"""Config loading: defaults <- YAML <- flags, unknown keys named, bad values named, resolved config saved."""

import re

import pytest
import yaml

from rlhfkit.cli import make_parser
from rlhfkit.config import (
    QUICK_PRESET,
    DemoConfig,
    EvalConfig,
    PPOConfig,
    RMConfig,
    build,
    from_args,
    save_config,
)
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
    cfg = build(PPOConfig, {"reward_model": "rm", "prompts": "p", "output": "o", "lr": 1e-3,
                            "generation.temperature": 0.5, "lora": False})
    assert (cfg.optim.lr, cfg.generation.temperature, cfg.lora.use_lora) == (1e-3, 0.5, False)


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


# --- every dataclass is built through its constructor: nested checks run at load ----------------------------


def test_nested_group_checks_run_at_load_naming_the_full_key():
    with pytest.raises(ConfigError, match=r"config key 'ppo.num_minibatches': 3 does not divide the 8 rollouts"):
        build(DemoConfig, {"ppo.num_minibatches": 3})
    with pytest.raises(ConfigError, match=r"config key 'dpo.label_smoothing': 0.2 only applies to --loss sigmoid"):
        build(DemoConfig, {"dpo.loss": "ipo", "dpo.label_smoothing": 0.2})


def test_group_defaults_of_each_command_survive_construction():
    cfg = build(DemoConfig, {"dpo.beta": 0.2, "ppo.optim.weight_decay": 0.5})
    assert (cfg.dpo.beta, cfg.dpo.optim.lr) == (0.2, 1e-4)  # DPO's own optim.lr
    assert (cfg.ppo.steps, cfg.ppo.optim.lr, cfg.ppo.optim.scheduler, cfg.ppo.lora.use_lora) == (
        50, 1e-4, "constant", True)  # the demo's ppo.steps over PPO's own optim and lora defaults
    assert cfg.ppo.optim.weight_decay == 0.5
    assert build(DemoConfig, {}) == DemoConfig()


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_quick_is_a_preset_under_yaml_and_flags(tmp_path):
    cfg = from_args(DemoConfig, parse(["demo", "--quick", "--ppo.steps", "5"]))
    assert cfg.ppo.steps == 5  # an explicit flag wins over the preset
    for key, value in QUICK_PRESET.items():
        if key != "ppo.steps":
            assert _get(cfg, key) == value, key
    cfg_file = tmp_path / "demo.yaml"
    cfg_file.write_text("quick: true\nrm_epochs: 3\neval_prompts: 20\n")
    cfg = from_args(DemoConfig, parse(["demo", "--config", str(cfg_file), "--eval-prompts", "9"]))
    assert (cfg.rm_epochs, cfg.eval_prompts, cfg.rm_prompts) == (3, 9, QUICK_PRESET["rm_prompts"])
    assert build(DemoConfig, {"quick": False}).ppo.steps == 50
    # checked once, after the preset: --quick makes PPO's batch 4, which 3 minibatches do not divide
    with pytest.raises(ConfigError, match="'ppo.num_minibatches': 3 does not divide the 4 rollouts"):
        from_args(DemoConfig, parse(["demo", "--quick", "--ppo.num-minibatches", "3"]))


def test_saved_quick_config_round_trips(tmp_path):
    cfg = build(DemoConfig, {"quick": True, "ppo.steps": 4})
    save_config(cfg, tmp_path / "config.yaml")
    assert build(DemoConfig, _flat(yaml.safe_load((tmp_path / "config.yaml").read_text()))) == cfg


@pytest.mark.parametrize("key, value, message", [
    ("num_minibatches", 0, "'num_minibatches': 0 must be >= 1"),  # was a ZeroDivisionError
    ("steps", float("inf"), "'steps': inf is not a valid int"),  # was an OverflowError
    ("steps", 2.5, "'steps': 2.5 is not a valid int"),
    ("steps", True, "'steps': True is not a valid int"),  # bool is an int to Python
    ("kl_coef", "nan", "'kl_coef': 'nan' is not a finite number"),
    ("gamma", 1.5, "'gamma': 1.5 must be <= 1"),
    ("policy", ["a", "b"], "'policy': ['a', 'b'] is not a valid str"),  # was silently "['a', 'b']"
    ("optim", 3, "config key 'optim' is a group"),
])
def test_bad_values_fail_at_load_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build(PPOConfig, {"prompts": "p", "output": "o", key: value})


def test_required_keys_are_a_commands_own():
    with pytest.raises(ConfigError, match="missing required config key 'output'"):
        build(PPOConfig, {"prompts": "p"})
    assert build(DemoConfig, {}).ppo.prompts is None  # the demo fills its groups' prompts/output itself


def test_invalid_yaml_is_one_line(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("data: [1,\n  2\noutput: x\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        from_args(RMConfig, parse(["rm", "--config", str(cfg_file)]))
    assert "\n" not in str(info.value)


def test_eval_policies_are_checked_at_load():
    base = {"prompts": "p", "output": "o"}
    with pytest.raises(ConfigError, match="'policy': eval needs at least one --policy"):
        build(EvalConfig, base)
    with pytest.raises(ConfigError, match="'policy': name 'x' used twice"):
        build(EvalConfig, {**base, "policy": ["x=a", "runs/x"]})
    assert build(EvalConfig, {**base, "policy": ["sft=a=b", "runs/ppo/"]}).named_policies == {
        "sft": "a=b", "ppo": "runs/ppo/"}


def test_ppo_refuses_more_micro_batches_than_a_minibatch_holds():
    # batch 8 / 2 minibatches = 4 sequences: 5 micro-batches cannot split them, refused at load
    with pytest.raises(ConfigError, match="'optim.grad_accum_steps': 5 micro-batches cannot split a minibatch of 4"):
        build(PPOConfig, {"prompts": "p.jsonl", "output": "o", "grad_accum_steps": 5})
    assert build(PPOConfig, {"prompts": "p.jsonl", "output": "o", "grad_accum_steps": 4}).optim.grad_accum_steps == 4
