"""Every command's --help is generated from its config dataclass and documents every option."""


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


NEWCOMER_ORDER = ["env", "demo", "task-demo", "sft", "rm", "score", "ppo", "grpo", "rloo", "reinforce-pp", "dpo",
                  "eval", "bon", "frontier"]


def test_top_level_help_lists_the_commands_one_line_each_in_a_newcomers_order(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # a plain terminal: no line may wrap
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: rlhfkit [-h] [--version] [-q] COMMAND ...\n")
    listed = text.split("\ncommands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[0] for line in listed] == NEWCOMER_ORDER == list(COMMANDS)
    for line, (name, (_, _, help_text)) in zip(listed, COMMANDS.items()):
        assert line == f"  {name:<14}{help_text}" and len(line) <= 80, line  # the whole help, on its line
    assert max(map(len, text.splitlines())) <= 80


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


@pytest.fixture
def demo_runs(monkeypatch):
    """Replace the demo's run function by a recorder: a config that passes loading would start the work."""
    ran = []
    monkeypatch.setitem(COMMANDS, "demo", (C.DemoConfig, ran.append, "demo"))
    return ran


@pytest.mark.parametrize("flags, key", [
    (["--ppo.num-minibatches", "3"], "ppo.num_minibatches"),
    (["--dpo.loss", "ipo", "--dpo.label-smoothing", "0.2"], "dpo.label_smoothing"),
    (["--quick", "--ppo.num-minibatches", "3"], "ppo.num_minibatches"),
    (["--ppo.generation.top-p", "0.9"], "ppo.generation.top_p"),
])
def test_bad_demo_config_fails_at_load_before_any_work(flags, key, tmp_path, demo_runs, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--output", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rlhfkit demo: error: config key '{key}'") and err.count("\n") == 1, err
    assert "Traceback" not in err and not demo_runs and not out.exists()


def test_good_demo_config_reaches_the_run_with_the_preset(tmp_path, demo_runs):
    assert main(["demo", "--quick", "--output", str(tmp_path / "run"), "--ppo.steps", "3"]) == 0
    (cfg,) = demo_runs
    assert (cfg.ppo.steps, cfg.ppo.batch_size, cfg.rm_prompts) == (3, 4, 12)
