"""DeepSpeed ZeRO-2 and ZeRO-3 over 2 CPU processes (gloo, DeepSpeed's CPU accelerator), through
`examples/accelerate/deepspeed_zero{2,3}_cpu.yaml` as a user launches them: the parameters really are
partitioned, every trainer trains and saves a model plain transformers / peft load, the result equals one
process (offline trainers: the same global batch) or plain data parallelism on the same 2 processes (online
trainers: each process samples from its own seed, so one process draws other samples by design), and a run
killed with SIGKILL after a checkpoint resumes to the uninterrupted run's weights."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_distributed import ACCELERATE, EXAMPLES, free_port, last_metrics, launch, run
from tests.trainers.test_ppo import write_prompts
from tests.trainers.test_rm import write_pairs
from tests.trainers.test_sft import write_demos

pytest.importorskip("deepspeed", reason="make setup installs rlhfkit[deepspeed]")
CONFIG = {stage: str(Path(EXAMPLES[0]).parent / f"deepspeed_zero{stage}_cpu.yaml") for stage in (2, 3)}
REWARD = "def good(prompts, completions):\n    return [float(c.split().count('good')) for c in completions]\n"


def zero(stage: int, *args) -> list[str]:
    return [ACCELERATE, "launch", "--config_file", CONFIG[stage], "--num_processes", "2", "--main_process_port",
            free_port(), "-m", "rlhfkit", *args]


def one(*args) -> list[str]:
    return [sys.executable, "-m", "rlhfkit", *args]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no weights in {folder}"
    return {k: v for f in files for k, v in load_file(str(f)).items()}


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = weights(a), weights(b)
    assert sorted(wa) == sorted(wb)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=atol, rtol=0, msg=name)


OFFLINE = {  # command, its data, the saved model's folder
    "rm": (lambda tmp, tiny: ["--data", write_pairs(tmp / "pairs.jsonl", 64, seed=0), "--base", tiny["bert"]],
           "model"),
    "sft": (lambda tmp, tiny: ["--model", tiny["llama"], "--data", write_demos(tmp / "demos.jsonl", 64),
                               "--no-lora", "--lr", "1e-2"], "policy"),
    "dpo": (lambda tmp, tiny: ["--policy", tiny["llama"], "--data", write_pairs(tmp / "pairs.jsonl", 64, seed=0),
                               "--lr", "1e-2"], "policy"),
}


@pytest.mark.parametrize("command, stage", [("rm", 3), ("sft", 3), ("dpo", 3), ("sft", 2)])
def test_offline_trainers_under_zero_are_sharded_and_match_one_process(command, stage, tiny_llama, tiny_bert,
                                                                         tmp_path):
    """2 processes x 8 examples under ZeRO = one process x 16 (the same global batch and order)."""
    data, saved = OFFLINE[command]
    common = [command, *data(tmp_path, {"llama": tiny_llama, "bert": tiny_bert}), "--epochs", "2", "--dtype",
              "fp32", "--eval-fraction", "0.25"]
    run(one(*common, "--batch-size", "16", "--output", str(tmp_path / "one")))
    proc = run(zero(stage, *common, "--batch-size", "8", "--output", str(tmp_path / "zero")))
    share = 50 if stage == 3 else 100  # ZeRO-3 splits the parameters; ZeRO-2 the gradients and optimiser state
    assert f"DeepSpeed ZeRO-{stage} over 2 process(es)" in proc.stderr and f"({share}%)" in proc.stderr
    a, b = last_metrics(tmp_path / "one" / "metrics.jsonl"), last_metrics(tmp_path / "zero" / "metrics.jsonl")
    assert abs(a["eval_loss"] - b["eval_loss"]) < 1e-5
    # gathered whole and loadable, the same weights up to 1e-4 after 6 AdamW steps at lr 1e-2 (each moves a
    # weight by up to 1e-2): AdamW divides by √v, so a gradient that is ~0 (the RM's score bias cancels in
    # r_c − r_r; LoRA's A at B ≈ 0) turns summation-order noise into visible steps (measured: 4e-5, 4.5e-5)
    assert_same_weights(tmp_path / "one" / saved, tmp_path / "zero" / saved, atol=1e-4)


def online_args(command, tmp_path, tiny_llama, *extra):
    (tmp_path / "reward.py").write_text(REWARD)
    return [command, "--policy", tiny_llama, "--prompts", write_prompts(tmp_path / "prompts.jsonl"),
            "--reward-fn", f"{tmp_path / 'reward.py'}:good", "--steps", "3", "--max-new-tokens", "6", "--dtype",
            "fp32", "--lr", "1e-2", "--engine", "hf", "--save-every", "1", *extra]


ONLINE = {"ppo": ["--batch-size", "4"], "grpo": ["--batch-size", "1", "--group-size", "4"],
          "rloo": ["--batch-size", "1", "--group-size", "4"]}


@pytest.mark.parametrize("command, extra", list(ONLINE.items()))
def test_online_trainers_under_zero3_match_data_parallel(command, extra, tiny_llama, tmp_path):
    """The same 2 processes, the same per-process seeds and prompts: ZeRO-3 (weights split, gathered for each
    forward; generate stepping in sync) trains what DDP trains. `--engine hf` on both: ZeRO-3's split weights
    sample with transformers' generate, so DDP must too for the same draws."""
    args = online_args(command, tmp_path, tiny_llama, *extra)
    run(launch("-m", "rlhfkit", *args, "--output", str(tmp_path / "ddp")))
    proc = run(zero(3, *args, "--output", str(tmp_path / "zero")))
    assert "DeepSpeed ZeRO-3 over 2 process(es)" in proc.stderr and "(50%)" in proc.stderr
    assert_same_weights(tmp_path / "ddp" / "policy", tmp_path / "zero" / "policy", atol=1e-5)
    ddp, z3 = last_metrics(tmp_path / "ddp" / "metrics.jsonl"), last_metrics(tmp_path / "zero" / "metrics.jsonl")
    assert ddp["rollout/score_mean"] == z3["rollout/score_mean"]  # the same samples


def test_full_ppo_under_zero3_keeps_the_frozen_reference_and_reward_model_whole(tiny_llama, tiny_bert, tmp_path):
    """All weights trained (no LoRA, so the reference is a second, frozen copy), a reward *model* and a value
    head: only the trained actor-critic is split; the reference and the RM stay whole on every process (they
    are never prepared) and score what DDP's do, so the run equals DDP's."""
    args = online_args("ppo", tmp_path, tiny_llama, "--batch-size", "4", "--no-lora", "--lr", "1e-3")
    i = args.index("--reward-fn")
    args[i:i + 2] = ["--reward-model", tiny_bert]
    run(launch("-m", "rlhfkit", *args, "--output", str(tmp_path / "ddp")))
    proc = run(zero(3, *args, "--output", str(tmp_path / "zero")))
    assert "DeepSpeed ZeRO-3 over 2 process(es)" in proc.stderr and "(50%)" in proc.stderr
    assert_same_weights(tmp_path / "ddp" / "policy", tmp_path / "zero" / "policy", atol=1e-5)
    ddp, z3 = last_metrics(tmp_path / "ddp" / "metrics.jsonl"), last_metrics(tmp_path / "zero" / "metrics.jsonl")
    assert ddp["rollout/score_mean"] == z3["rollout/score_mean"]
    assert ddp["rollout/kl"] != 0 and abs(ddp["rollout/kl"] - z3["rollout/kl"]) < 1e-5  # the reference's log-probs


def kill_after_checkpoint(cmd: list[str], out: Path, step_key: str, timeout_s: float = 600) -> dict:
    """Start `cmd` (a launcher and its workers, in a session of their own) and SIGKILL the whole group once a
    checkpoint with `step_key` >= 1 exists; return that checkpoint's trainer state."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                state = None
            if state is not None and state[step_key] >= 1:
                assert proc.poll() is None, "the run finished before it could be killed"
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return state
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        raise AssertionError("no checkpoint appeared")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def resume_case(command, tmp_path, tiny_llama, tiny_bert) -> tuple[list[str], str, str, int]:
    """(arguments, the checkpoint's step key, the saved model's folder, the last step) of a 4-epoch or
    4-step run to kill and resume."""
    if command in OFFLINE:
        data, saved = OFFLINE[command]
        return [command, *data(tmp_path, {"llama": tiny_llama, "bert": tiny_bert}), "--epochs", "4",
                "--batch-size", "8", "--dtype", "fp32", "--eval-fraction", "0.25"], "epoch", saved, 4
    args = online_args(command, tmp_path, tiny_llama, *ONLINE[command])
    args[args.index("--steps") + 1] = "4"
    return args, "step", "policy", 4


@pytest.mark.parametrize("command", ["rm", "sft", "dpo", "ppo", "grpo", "rloo"])
def test_zero3_killed_after_a_checkpoint_resumes_to_the_same_weights(command, tiny_llama, tiny_bert, tmp_path):
    """SIGKILL of the launcher and both workers once a checkpoint exists (offline: after an epoch; online:
    after a step), then `--resume`: the same final weights as the uninterrupted ZeRO-3 run, bit for bit."""
    args, step_key, saved, last = resume_case(command, tmp_path, tiny_llama, tiny_bert)
    run(zero(3, *args, "--output", str(tmp_path / "full")))
    killed = kill_after_checkpoint(zero(3, *args, "--output", str(tmp_path / "resumed")), tmp_path / "resumed",
                                   step_key)
    assert killed[step_key] < last and not (tmp_path / "resumed" / saved).exists()
    run(zero(3, *args, "--output", str(tmp_path / "resumed"), "--resume"))
    assert_same_weights(tmp_path / "full" / saved, tmp_path / "resumed" / saved, atol=0)  # exactly
