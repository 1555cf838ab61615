"""Every command's --help is generated from its config dataclass and documents every option."""

import dataclasses

import pytest

from rlhfkit import config as C
from rlhfkit import config_loading
from rlhfkit.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_every_leaf_option(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    cls = COMMANDS[command][0]
    for key, _, field in config_loading._leaf_fields(cls):
        assert f"--{key.replace('_', '-')}" in text, key
        assert field.metadata.get("help"), f"{key} has no help text"
    assert dataclasses.is_dataclass(cls)


def test_lora_alias_only_where_unambiguous():
    assert config_loading._aliases(C.PPOConfig) == {"lora": "lora.use_lora"}
    assert "lora" not in config_loading._aliases(C.DemoConfig)  # ppo.lora and dpo.lora: spell the group


def test_help_shows_each_commands_own_group_defaults(capsys):
    """DPO overrides optim.lr (1e-4) and the demo's PPO group overrides steps; --help must show those values."""
    import argparse

    for cls, flag, expected in ((C.DPOConfig, "optim.lr", "0.0001"), (C.SFTConfig, "optim.lr", "2e-05"),
                                (C.DemoConfig, "ppo.steps", "50")):
        parser = argparse.ArgumentParser()
        config_loading.add_arguments(parser, cls)
        action = next(a for a in parser._actions if a.dest == flag)
        assert action.help.endswith(f"(default: {expected})"), (cls.__name__, action.help)
