"""kill -9 in the middle of a run, then --resume: the final policy is bit-identical to an uninterrupted run's
(CPU, fixed seed). The killed run is a subprocess, as a user (or a preempted job) runs it; the others run the
same command in this process (one thread everywhere, so every run does the same arithmetic)."""

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from rlhfkit.cli import main
from tests.trainers.test_dpo import write_pairs
from tests.trainers.test_ppo import write_prompts

TIMING_KEYS = ("step_time_s", "tokens_per_s")


def command(*args):
    return [sys.executable, "-m", "rlhfkit", *args]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(args):
    """`rlhfkit *args` in this process, on one thread like the subprocess (OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(list(args)) == 0
    finally:
        torch.set_num_threads(threads)


def checkpoint_state(out):
    """trainer_state.json of the checkpoint the `checkpoint` link points at, or None (none yet, or the link
    switched to a newer version while it was being read)."""
    try:
        return json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def kill_after(cmd, out, written, timeout_s=120):
    """Start `cmd`, SIGKILL it as soon as `written(trainer_state)` holds; return the state it died at."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            state = checkpoint_state(out)
            if state is not None and written(state):
                assert proc.poll() is None, "the run finished before it could be killed"
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(timeout=30) == -signal.SIGKILL
                return state
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.02)
        raise AssertionError("no checkpoint appeared")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def rows_without_timings(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and not k.startswith("time/")} for r in rows]


def assert_same_policy(a, b):
    wa, wb = load_file(str(a / "policy" / "adapter_model.safetensors")), load_file(
        str(b / "policy" / "adapter_model.safetensors"))
    assert sorted(wa) == sorted(wb) and wa
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # bit-identical


def test_ppo_killed_after_a_checkpoint_resumes_exactly(tiny_llama, tiny_bert, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    args = ["ppo", "--policy", tiny_llama, "--reward-model", tiny_bert, "--prompts", prompts, "--steps", "6",
            "--batch-size", "8", "--max-new-tokens", "6", "--dtype", "fp32", "--save-every", "1",
            "--lr", "1e-2", "--seed", "3", "--sample-every", "1"]
    run([*args, "--output", str(tmp_path / "full")])
    killed = kill_after(command(*args, "--output", str(tmp_path / "resumed")), tmp_path / "resumed",
                        lambda state: state["step"] >= 1)
    assert killed["step"] < 6 and not (tmp_path / "resumed" / "policy").exists()
    run([*args, "--output", str(tmp_path / "resumed"), "--resume"])
    assert_same_policy(tmp_path / "full", tmp_path / "resumed")
    assert rows_without_timings(tmp_path / "full") == rows_without_timings(tmp_path / "resumed")
    samples = [json.loads(x)["step"] for x in open(tmp_path / "resumed" / "samples.jsonl")]
    assert samples == sorted(samples) and len(samples) == 6 * 4  # none twice: the killed run's extra are gone


def test_dpo_killed_after_an_epoch_resumes_exactly(tiny_llama, tmp_path):
    data = write_pairs(tmp_path / "train.jsonl", 32, seed=0)
    args = ["dpo", "--policy", tiny_llama, "--data", data, "--epochs", "4", "--batch-size", "8",
            "--lr", "1e-2", "--dtype", "fp32", "--eval-fraction", "0.25", "--log-every", "1"]
    run([*args, "--output", str(tmp_path / "full")])
    killed = kill_after(command(*args, "--output", str(tmp_path / "resumed")), tmp_path / "resumed",
                        lambda state: state["epoch"] >= 1)
    assert killed["epoch"] < 4 and not (tmp_path / "resumed" / "policy").exists()
    run([*args, "--output", str(tmp_path / "resumed"), "--resume"])
    assert_same_policy(tmp_path / "full", tmp_path / "resumed")
    assert rows_without_timings(tmp_path / "full") == rows_without_timings(tmp_path / "resumed")
