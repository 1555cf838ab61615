"""`rlhfkit task-demo --quick` on the embedded model: it runs, the figures are sane, the report is written.

No gain is asserted: the quick setting (8 steps, 16 problems x 4 samples) gained +28.1 points [+14.1, +42.2]
on seed 0, +18.8 [+6.2, +32.8] on seed 2, but +7.8 [-6.2, +23.4] on seed 1 (docs/benchmarks/demo.md), so
its interval is not reliably above 0; the full setting's gain is measured there on 3 seeds."""

import json

import pytest

from rlhfkit.cli import main

pytestmark = pytest.mark.slow


def test_quick_task_demo_on_the_embedded_model(tmp_path):
    run = tmp_path / "task"
    assert main(["task-demo", "--quick", "--output", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    sft, grpo = summary["methods"]["sft"], summary["methods"]["grpo"]
    assert 0.05 <= sft["pass1"] <= 0.7  # the default task is neither solved nor hopeless before RL
    for m in (sft, grpo):
        assert m["n_problems"] == 16 and m["samples_per_problem"] == 4
        low, high = m["pass1_ci95"]
        assert 0 <= low <= m["pass1"] <= high <= 1 and m["pass1"] <= m["pass_k"]
        assert 0 <= m["format_failure"] <= 1 and 0 < m["response_len"] <= 16
    assert sft["kl"] == 0.0 and -0.5 < grpo["kl"] < 5  # it moved, not far (k1 can dip below 0 slightly)
    low, high = summary["pass1_delta_ci95"]
    assert low <= summary["pass1_delta"] <= high
    last = json.loads((run / "grpo" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 8 and 0 <= last["rollout/reward/rlhfkit.tasks:correct"] <= 1
    html = (run / "report.html").read_text()
    assert "Held-out accuracy" in html and "data:image/png;base64" in html
