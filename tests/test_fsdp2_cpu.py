"""FSDP2 (torch's `fully_shard`, through accelerate) over 2 CPU processes on a gloo mesh, launched with
`examples/accelerate/fsdp2.yaml` as on GPUs: accelerate 1.15 itself would run that config as plain data
parallelism on CPU processes; rlhfkit sets its state to FSDP (`loop.use_fsdp2_on_cpu`). The parameters are
DTensors split over the processes, every trainer trains and saves a model plain transformers / peft load, the
result equals one process (offline) or DDP (online), and a run killed with SIGKILL after a checkpoint (the
sharded torch.distributed.checkpoint one) resumes to the uninterrupted run's weights."""

from pathlib import Path

import pytest

from tests.test_deepspeed import (
    OFFLINE,
    ONLINE,
    assert_same_weights,
    kill_after_checkpoint,
    one,
    online_args,
    resume_case,
)
from tests.test_distributed import ACCELERATE, EXAMPLES, free_port, last_metrics, launch, run

FSDP2 = str(Path(EXAMPLES[0]).parent / "fsdp2.yaml")


def fsdp2(*args) -> list[str]:
    return [ACCELERATE, "launch", "--config_file", FSDP2, "--num_processes", "2", "--main_process_port",
            free_port(), "-m", "rlhfkit", *args]


@pytest.mark.parametrize("command", ["rm", "sft", "dpo"])
def test_offline_trainers_under_fsdp2_on_cpu_are_sharded_and_match_one_process(command, tiny_llama, tiny_bert,
                                                                                tmp_path):
    """2 processes x 8 examples under FSDP2 = one process x 16 (the same global batch and order)."""
    data, saved = OFFLINE[command]
    common = [command, *data(tmp_path, {"llama": tiny_llama, "bert": tiny_bert}), "--epochs", "2", "--dtype",
              "fp32", "--eval-fraction", "0.25"]
    run(one(*common, "--batch-size", "16", "--output", str(tmp_path / "one")))
    proc = run(fsdp2(*common, "--batch-size", "8", "--output", str(tmp_path / "fsdp")))
    assert "FSDP over 2 process(es)" in proc.stderr and "(50%)" in proc.stderr, proc.stderr[-2000:]
    a, b = last_metrics(tmp_path / "one" / "metrics.jsonl"), last_metrics(tmp_path / "fsdp" / "metrics.jsonl")
    assert abs(a["eval_loss"] - b["eval_loss"]) < 1e-5
    assert_same_weights(tmp_path / "one" / saved, tmp_path / "fsdp" / saved, atol=1e-4)  # as under ZeRO


@pytest.mark.parametrize("command", ["ppo", "grpo"])
def test_online_trainers_under_fsdp2_on_cpu_match_data_parallel(command, tiny_llama, tmp_path):
    args = online_args(command, tmp_path, tiny_llama, *ONLINE[command])
    run(launch("-m", "rlhfkit", *args, "--output", str(tmp_path / "ddp")))
    proc = run(fsdp2(*args, "--output", str(tmp_path / "fsdp")))
    assert "FSDP over 2 process(es)" in proc.stderr and "(50%)" in proc.stderr, proc.stderr[-2000:]
    assert_same_weights(tmp_path / "ddp" / "policy", tmp_path / "fsdp" / "policy", atol=1e-5)
    ddp, fs = last_metrics(tmp_path / "ddp" / "metrics.jsonl"), last_metrics(tmp_path / "fsdp" / "metrics.jsonl")
    assert ddp["rollout/score_mean"] == fs["rollout/score_mean"]


@pytest.mark.parametrize("command", ["sft", "ppo"])
def test_fsdp2_on_cpu_killed_after_a_checkpoint_resumes_to_the_same_weights(command, tiny_llama, tiny_bert,
                                                                            tmp_path):
    args, step_key, saved, last = resume_case(command, tmp_path, tiny_llama, tiny_bert)
    run(fsdp2(*args, "--output", str(tmp_path / "full")))
    killed = kill_after_checkpoint(fsdp2(*args, "--output", str(tmp_path / "resumed")), tmp_path / "resumed",
                                   step_key)
    assert killed[step_key] < last and not (tmp_path / "resumed" / saved).exists()
    run(fsdp2(*args, "--output", str(tmp_path / "resumed"), "--resume"))
    assert_same_weights(tmp_path / "full" / saved, tmp_path / "resumed" / saved, atol=0)  # exactly
