"""`rlhfkit frontier --quick` end to end on a `demo --quick` run of the embedded models."""

import json
import math

import pytest

from rlhfkit.cli import main

pytestmark = pytest.mark.slow


def test_quick_frontier_end_to_end(tmp_path):
    run = tmp_path / "demo"
    assert main(["demo", "--quick", "--output", str(run)]) == 0  # PPO only: the frontier needs prefs and RM
    # one online method, DPO and best-of-n on the real models (every method runs on tiny models in
    # tests/test_frontier.py): the slow suite stays within its time budget
    flags = ["frontier", "--quick", "--demo", str(run), "--methods", "dpo,grpo,bon"]
    assert main(flags) == 0
    out = run / "frontier"
    result = json.loads((out / "frontier.json").read_text())
    points = result["points"]
    # 2 β per trained method (the quick preset), best-of-n at n = 1, 2, 4
    assert [(p["method"], p.get("beta", p.get("n"))) for p in points] == [
        ("dpo", 0.05), ("dpo", 1.0), ("grpo", 0.0), ("grpo", 0.1), ("bon", 1), ("bon", 2), ("bon", 4)]
    for p in points:
        for key in ("kl", "sqrt_kl", "gold_reward", "rm_reward", "gold_delta", "rm_delta", "response_len"):
            assert math.isfinite(p[key]), (p["name"], key)
        if p["method"] == "bon":
            assert p["kl"] == pytest.approx(math.log(p["n"]) - (p["n"] - 1) / p["n"])
    for method in ("dpo", "grpo", "bon"):  # fitted, or skipped with the reason
        fit = result["fits"][method]
        assert "skipped" in fit or all(math.isfinite(fit[t][k]) for t in ("gold", "proxy") for k in ("alpha", "beta"))
    ev = json.loads((out / "eval" / "eval.json").read_text())
    assert len(ev["rows"]) == result["n_eval_prompts"] == 4  # every trained point on the same prompts
    assert "data:image/png;base64" in (out / "frontier.html").read_text()
    assert 'href="frontier/frontier.html"' in (run / "report.html").read_text()

    # a rerun skips every finished stage and reproduces frontier.json's points
    assert main(flags) == 0
    assert json.loads((out / "frontier.json").read_text())["points"] == points
