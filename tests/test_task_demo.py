"""`rlhfkit task-demo` end to end on a tiny random model (it learns nothing: the files, the metrics, the
intervals and the report are checked), and its config's load-time checks."""

from __future__ import annotations

import json

import pytest
import yaml

from rlhfkit import config as C
from rlhfkit.cli import main
from rlhfkit.errors import ConfigError


def test_task_demo_pipeline_on_a_tiny_model(tiny_llama, tmp_path, capsys):
    run = tmp_path / "task"
    args = ["task-demo", "--task", "add", "--policy", tiny_llama, "--output", str(run), "--algo", "grpo,rloo",
            "--quick", "--grpo.steps", "2", "--rloo.steps", "2", "--eval-problems", "5",
            "--eval-samples", "3", "--train-problems", "8"]
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "add" and summary["rl_method"] == "grpo" and summary["k"] == 3
    assert (summary["n_train_problems"], summary["n_heldout_problems"]) == (8, 5)
    assert set(summary["methods"]) == {"sft", "grpo", "rloo"}
    for name, m in summary["methods"].items():
        for key in ("pass1", "pass_k", "format_failure", "kl"):
            low, high = m[f"{key}_ci95"]
            assert 0 <= m[key] <= 1 or key == "kl"
            assert low <= m[key] + 1e-12 and m[key] <= high + 1e-12, (name, key)
        assert m["pass1"] <= m["pass_k"] + 1e-12  # some sample correct is at least as likely as one
        assert m["n_problems"] == 5 and m["samples_per_problem"] == 3
    assert summary["methods"]["sft"]["kl"] == 0.0  # the start against itself
    low, high = summary["pass1_delta_ci95"]
    assert low <= summary["pass1_delta"] <= high
    assert summary["pass1_delta"] == pytest.approx(summary["pass1_rl"] - summary["pass1_sft"], abs=1e-12)
    # the training is the command's: its config.yaml reads the train file with the task's reward functions
    grpo_cfg = yaml.safe_load((run / "grpo" / "config.yaml").read_text())
    assert grpo_cfg["prompts"] == str(run / "data" / "train.jsonl")
    assert grpo_cfg["reward_fn"] == ["rlhfkit.tasks:correct", "rlhfkit.tasks:formatted=0"]
    last = json.loads((run / "grpo" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2 and 0 <= last["rollout/reward/rlhfkit.tasks:correct"] <= 1
    heldout = {json.loads(x)["prompt"] for x in (run / "data" / "heldout.jsonl").read_text().splitlines()}
    train = {json.loads(x)["prompt"] for x in (run / "data" / "train.jsonl").read_text().splitlines()}
    assert len(heldout) == 5 and not heldout & train
    ev = json.loads((run / "eval" / "eval.json").read_text())
    assert ev["methods"] == summary["methods"]  # one producer: summary.json copies the evaluation
    assert len(ev["rows"][0]["grpo"]["samples"]) == 3
    html = (run / "report.html").read_text()
    assert "<html" in html and "Held-out accuracy" in html and "data:image/png;base64" in html
    assert "pass@3" in html and "Samples" in html

    # a rerun skips every finished stage and gives the same figures
    capsys.readouterr()
    assert main(args) == 0
    assert json.loads((run / "summary.json").read_text())["methods"] == summary["methods"]


def test_task_demo_config_checks_at_load_time():
    with pytest.raises(ConfigError, match="config key 'task': 'mul'; choose from add, add2"):
        C.build(C.TaskDemoConfig, {"task": "mul"})
    with pytest.raises(ConfigError, match="config key 'algo': 'ppo'"):
        C.build(C.TaskDemoConfig, {"algo": "ppo"})
    with pytest.raises(ConfigError, match="generation.max_new_tokens': 24 differs from grpo"):
        C.build(C.TaskDemoConfig, {"generation.max_new_tokens": 24})
    cfg = C.build(C.TaskDemoConfig, {"generation.max_new_tokens": 24, "grpo.generation.max_new_tokens": 24})
    assert cfg.grpo.generation.max_new_tokens == 24 and cfg.output_dir == "runs/task-add"
    quick = C.build(C.TaskDemoConfig, {"quick": True, "task": "add2"})
    assert quick.grpo.steps == C.TASK_QUICK_PRESET["grpo.steps"] and quick.output_dir == "runs/task-add2"
    # the demo's own defaults for the method groups, nested ones included, with and without the loader
    built, direct = C.build(C.TaskDemoConfig, {}), C.TaskDemoConfig()
    assert built.grpo.generation.max_new_tokens == C.TASK_MAX_NEW_TOKENS
    assert direct.grpo.generation.max_new_tokens == C.TASK_MAX_NEW_TOKENS


def test_the_python_api_trains_on_task_rows_with_the_same_reward_name(tiny_llama, tmp_path):
    import rlhfkit
    from rlhfkit import tasks

    out = tmp_path / "grpo"
    final = rlhfkit.train_grpo(policy=tiny_llama, prompts=tasks.task_rows("add", "train", 4), output=out,
                               reward_fn=[tasks.correct], steps=1, batch_size=2, group_size=2,
                               generation={"max_new_tokens": 4})
    assert 0 <= final["rollout/reward/rlhfkit.tasks:correct"] <= 1  # the term the CLI's spec logs
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["reward_fn"] == ["rlhfkit.tasks:correct"]  # `rlhfkit grpo --config` reruns it
    rows = [json.loads(x) for x in (out / "data" / "prompts.jsonl").read_text().splitlines()]
    assert {"answer", "task"} <= set(rows[0])
