"""Two CPU processes (gloo) under `accelerate launch` give the same reward model as one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.trainers.test_rm import write_pairs

ACCELERATE = str(Path(sys.executable).parent / "accelerate")


def free_port() -> str:
    """A port nobody listens on, so a leftover process on accelerate's default 29500 cannot break the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(*args) -> list[str]:
    return [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", free_port(), *args]


def run(cmd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def last_metrics(path):
    return json.loads(Path(path).read_text().splitlines()[-1])


def test_two_processes_match_one(tiny_bert, tmp_path):
    data = write_pairs(tmp_path / "train.jsonl", 64, seed=0)
    common = ["--data", data, "--base", tiny_bert, "--epochs", "4", "--lr", "1e-2", "--eval-fraction", "0.25"]
    run([sys.executable, "-m", "rlhfkit", "rm", *common, "--batch-size", "16", "--output", str(tmp_path / "one")])
    # 2 processes x 8 pairs = the same global batch of 16, the same shuffled order, gradients averaged by DDP
    run(launch("-m", "rlhfkit", "rm", *common,
         "--batch-size", "8", "--output", str(tmp_path / "two")))
    one, two = last_metrics(tmp_path / "one" / "metrics.jsonl"), last_metrics(tmp_path / "two" / "metrics.jsonl")
    assert abs(one["eval/loss"] - two["eval/loss"]) < 1e-5
    assert one["eval/loss"] < 0.6  # it learned something, so equality is not trivial


def test_ppo_runs_on_two_processes(tiny_llama, tiny_bert, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["the cat", "a dog", "the sun", "sea"] * 4))
    run(launch("-m", "rlhfkit", "ppo", "--policy", tiny_llama,
         "--reward-model", tiny_bert, "--prompts", str(prompts), "--output", str(tmp_path / "ppo"), "--steps", "2",
         "--batch-size", "4", "--max-new-tokens", "6", "--dtype", "fp32"))
    rows = [json.loads(x) for x in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert (tmp_path / "ppo" / "policy").exists()
