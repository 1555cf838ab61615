"""scripts/gpu_check.sh dry-runs on a CPU: what needs CUDA is skipped with its reason, the rest runs on tiny
models and the rows land in the results JSON (so CI keeps the GPU check working)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(tmp_path, *args, timeout=600):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "gpu_check.json"
    cmd = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--work", str(tmp_path),
           "--out", str(out)]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {(r["step"], r["name"]): r for r in json.loads(out.read_text())["rows"]}
    return rows, proc.stdout


def test_dry_run_skips_what_needs_cuda_and_builds_the_models(tmp_path):
    rows, table = dry_run(
        tmp_path, "--only", "tests,smoke,bench", "--engines", "fsdp,zero3", "--tokenizer", "built"
    )
    assert rows[("models", "tiny")]["status"] == "ok"
    assert "built offline" in rows[("models", "tiny")]["note"]
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "policy-tiny")
    assert len(tokenizer) == AutoConfig.from_pretrained(tmp_path / "rm-tiny").vocab_size == 49152  # SmolLM2's
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    skipped = {k: r["note"] for k, r in rows.items() if k[0] != "models"}
    assert len(skipped) == 1 + 6 + 1  # tests, 3 trainers x 2 engines, bench
    assert all(rows[k]["status"] == "skipped" and "needs CUDA" in note for k, note in skipped.items())
    assert "smoke   dpo fsdp               skipped" in table


@pytest.mark.slow
def test_full_dry_run_trains_saves_and_resumes_on_the_cpu(tmp_path):
    """Every CPU-capable step: rm, dpo and ppo run, save and resume one epoch/step further; eval and demo."""
    rows, _ = dry_run(tmp_path, "--engines", "plain", timeout=900)
    for trainer in ("rm", "dpo", "ppo"):
        row = rows[("smoke", f"{trainer} plain")]
        assert row["status"] == "ok", row
        assert row["figures"]["after_resume"] == row["figures"]["before_resume"] + 1
    assert rows[("eval", "rlhfkit eval")]["status"] == "ok"
    assert rows[("demo", "demo --quick")]["status"] == "ok"
