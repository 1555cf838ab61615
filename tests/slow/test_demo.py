"""The `--quick` demo end to end on the embedded models: every output exists and parses."""

import json

import pytest
import yaml

from rlhfkit.cli import main

pytestmark = pytest.mark.slow

SUMMARY_KEYS = ("gold_reward_sft", "gold_reward_rlhf", "gold_delta_ci95", "rm_reward_sft", "rm_reward_rlhf",
                "kl_rlhf", "win_rate_gold", "rm_val_accuracy", "wall_seconds")


def test_quick_demo_end_to_end(tmp_path, capsys):
    run = tmp_path / "demo"
    assert main(["demo", "--quick", "--algo", "all", "--output", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert key in summary, key
    low, high = summary["gold_delta_ci95"]
    assert low < high  # a real interval: the bootstrap resampled varied per-prompt gains
    ppo = summary["methods"]["ppo"]  # the headline figures are the evaluation's, not recomputed elsewhere
    assert (summary["kl_rlhf"], summary["win_rate_gold"]) == (ppo["kl"], ppo["win_rate_gold"])
    # every method on the same preferences and evaluation
    assert set(summary["methods"]) == {"sft", "ppo", "dpo", "grpo", "rloo", "reinforce_pp"}
    for name in ("prefs/prefs.jsonl", "prefs/prefs_val.jsonl", "rm/metrics.jsonl", "ppo/metrics.jsonl",
                 "ppo/samples.jsonl", "eval/eval.json"):
        path = run / name
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.suffix == ".jsonl" else [
            json.loads(path.read_text())]
        assert rows, name
    prefs = [json.loads(x) for x in (run / "prefs" / "prefs.jsonl").read_text().splitlines()]
    assert {"prompt", "chosen", "rejected", "gold_chosen", "gold_rejected"} <= set(prefs[0])
    for algo in ("ppo", "grpo"):
        assert "rollout/gold_mean" in json.loads((run / algo / "metrics.jsonl").read_text().splitlines()[-1])
    yaml.safe_load((run / "config.yaml").read_text())
    html = (run / "report.html").read_text()
    assert "data:image/png;base64" in html and "<html" in html.lower()
    for folder in ("rm/model", "ppo/policy", "dpo/policy", "grpo/policy", "rloo/policy", "reinforce_pp/policy"):
        assert (run / folder / "config.json").is_file(), folder

    # a rerun skips finished stages and reproduces the same summary figures
    capsys.readouterr()
    assert main(["demo", "--quick", "--algo", "all", "--output", str(run)]) == 0
    again = json.loads((run / "summary.json").read_text())
    assert again["gold_reward_rlhf"] == summary["gold_reward_rlhf"]
