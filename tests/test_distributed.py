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
    assert abs(one["eval_loss"] - two["eval_loss"]) < 1e-5
    assert one["eval_loss"] < 0.6  # it learned something, so equality is not trivial


SPY = r"""# `rlhfkit ppo` that records, after every PPO step, this process's beta, score statistics and whitened
# advantages (sums over its masked tokens) in spy-<rank>.jsonl
import json, os, sys
from rlhfkit.cli import main
from rlhfkit.trainers import ppo

out, rank = sys.argv[1], os.environ["RANK"]
real_step, whitened = ppo.ppo_step, []


def ppo_step(cfg, state, roll, train, *rest):
    metrics = real_step(cfg, state, roll, train, *rest)
    row = {"kl_coef": state.kl_ctl.value, **vars(state.score_moments), "advantages": whitened[-1]}
    with open(f"{out}/spy-{rank}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return metrics


if hasattr(ppo, "whiten_over_processes"):
    real_whiten = ppo.whiten_over_processes

    def whiten(x, mask, *args, **kwargs):
        y = real_whiten(x, mask, *args, **kwargs)
        whitened.append([(y * mask).sum().item(), (y**2 * mask).sum().item(), mask.sum().item()])
        return y

    ppo.whiten_over_processes = whiten
else:  # before issue 10 each process whitened its own batch
    whitened.append(None)
ppo.ppo_step = ppo_step
sys.exit(main(sys.argv[2:]))
"""


def test_ppo_processes_share_kl_coef_and_score_statistics(tiny_llama, tiny_bert, tmp_path):
    """Each process samples its own prompts; adaptive β, the score normalisation and the advantage whitening
    use the statistics of the batches of both, so the processes stay identical (they drifted apart before)."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["the cat", "a dog", "the sun", "sea"] * 4))
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    run(launch(str(spy), str(tmp_path), "ppo", "--policy", tiny_llama, "--reward-model", tiny_bert,
               "--prompts", str(prompts), "--output", str(tmp_path / "ppo"), "--steps", "3", "--batch-size", "4",
               "--max-new-tokens", "6", "--dtype", "fp32", "--target-kl", "0.01", "--kl-horizon", "100",
               "--lr", "1e-2"))
    rows = [json.loads(x) for x in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (tmp_path / "ppo" / "policy").exists()
    ranks = [[json.loads(x) for x in (tmp_path / f"spy-{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    for a, b in zip(*ranks):
        for key in ("kl_coef", "mean", "var", "count"):
            assert a[key] == b[key], key
    assert ranks[0][-1]["kl_coef"] != 0.1  # β moved
    assert ranks[0][-1]["count"] == 3 * 2 * 4  # 3 steps × 2 processes × 4 scores
    for a, b in zip(*ranks):  # whitened over both batches: zero mean and unit variance together, not apart
        (sum_a, sq_a, n_a), (sum_b, sq_b, n_b) = a["advantages"], b["advantages"]
        assert abs(sum_a + sum_b) < 1e-3 and abs((sq_a + sq_b) / (n_a + n_b - 1) - 1) < 1e-3
        assert abs(sum_a / n_a) > 1e-3  # rank 0 alone is not centred
