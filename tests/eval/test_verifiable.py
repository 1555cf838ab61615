"""rlhfkit.eval.verifiable: a problem's figures from its graded samples, and the per-method statistics."""

from __future__ import annotations

import pytest

from rlhfkit.eval.verifiable import grade_problem, summarize_task


def _sample(response: str, kl: float = 0.0, length: int = 3, ended: bool = True) -> dict:
    return {"response": response, "kl": kl, "response_len": length, "ended": ended}


def test_grade_problem_counts_correct_wrong_and_format_failures():
    row = {"prompt": "What is 3 + 4?", "answer": "7", "task": "add"}
    samples = [_sample("7", 0.5, 1), _sample("It is 8.", 1.5, 4), _sample("no idea", 1.0, 2, ended=False),
               _sample("3 + 4 = 7", 1.0, 5)]
    got = grade_problem([row] * 4, samples)
    # 2 of 4 correct; pass@4 = 1 (one correct is enough); 1 of 4 without a number
    assert (got["n_correct"], got["n"], got["pass1"], got["pass_k"]) == (2, 4, 0.5, 1.0)
    assert got["format_failure"] == 0.25 and got["eos_rate"] == 0.75
    assert got["kl"] == pytest.approx(1.0, abs=1e-12) and got["response_len"] == pytest.approx(3.0, abs=1e-12)
    assert [s["correct"] for s in got["samples"]] == [True, False, False, True]
    assert [s["parsed"] for s in got["samples"]] == ["7", "8", None, "7"]


def _entry(pass1: float, format_failure: float = 0.0, kl: float = 0.0) -> dict:
    return {"pass1": pass1, "pass_k": float(pass1 > 0), "format_failure": format_failure, "kl": kl,
            "response_len": 4.0, "eos_rate": 1.0}


def test_summarize_task_means_intervals_and_paired_deltas():
    # 4 problems: sft pass@1 [0, 0.25, 0.5, 0.25] (mean 0.25), rl [0.75, 1, 0.5, 0.75] (mean 0.75)
    sft, rl = [0.0, 0.25, 0.5, 0.25], [0.75, 1.0, 0.5, 0.75]
    rows = [{"sft": _entry(a, 0.5), "rl": _entry(b, 0.0, kl=2.0)} for a, b in zip(sft, rl)]
    methods = summarize_task({"policies": ["sft", "rl"], "rows": rows, "samples_per_problem": 4}, "sft")
    assert methods["sft"]["pass1"] == pytest.approx(0.25, abs=1e-12)
    assert methods["rl"]["pass1"] == pytest.approx(0.75, abs=1e-12)
    assert methods["rl"]["pass1_delta"] == pytest.approx(0.5, abs=1e-12)  # paired: mean of [.75, .75, 0, .5]
    low, high = methods["rl"]["pass1_delta_ci95"]
    assert 0.0 <= low < 0.5 < high <= 0.75  # the differences lie in [0, 0.75]
    assert methods["rl"]["format_failure_delta"] == pytest.approx(-0.5, abs=1e-12)
    assert methods["sft"]["pass_k"] == 0.75 and methods["rl"]["pass_k"] == 1.0
    assert methods["rl"]["kl"] == 2.0 and methods["rl"]["kl_ci95"] == [2.0, 2.0]
    assert "pass1_delta" not in methods["sft"]  # the baseline has no difference from itself
    assert methods["sft"]["n_problems"] == 4 and methods["sft"]["samples_per_problem"] == 4
