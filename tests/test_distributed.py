"""Scale-out: two CPU processes (gloo) under `accelerate launch` give the same reward model as one process;
the example accelerate configs; FSDP1 refused where accelerate would silently not shard (FSDP2 and DeepSpeed
on CPU processes: tests/test_fsdp2_cpu.py, tests/test_deepspeed.py); saving a
sharded model whole; DDP on two GPUs where there are two.

The multi-process runs here hide every GPU (CUDA_VISIBLE_DEVICES=""): they test the arithmetic across
processes, which needs no device, and two processes on one GPU cannot share it under NCCL."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from rlhfkit.errors import ConfigError
from rlhfkit.trainers import loop
from tests.conftest import requires_gpus
from tests.trainers.test_rm import write_pairs

ACCELERATE = str(Path(sys.executable).parent / "accelerate")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples" / "accelerate").glob("*.yaml"))


def free_port() -> str:
    """A port nobody listens on, so a leftover process on accelerate's default 29500 cannot break the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(*args) -> list[str]:
    return [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", free_port(), *args]


def run(cmd, expect_rc: int = 0, cpu: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"CUDA_VISIBLE_DEVICES": ""} if cpu else {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == expect_rc, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def last_metrics(path):
    return json.loads(Path(path).read_text().splitlines()[-1])


def test_two_processes_match_one(tiny_bert, tmp_path):
    data = write_pairs(tmp_path / "train.jsonl", 64, seed=0)
    common = ["--data", data, "--base", tiny_bert, "--epochs", "4", "--lr", "1e-2", "--eval-fraction", "0.25",
              "--dtype", "fp32"]  # the arithmetic across processes, to fp32 tolerance (bf16 rounds differently)
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


# ------------------------------------------------------------------------------ engines: configs and guards
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_configs_load_and_name_only_known_settings(path):
    """accelerate reads each file; every fsdp_/deepspeed_ setting is one `accelerate launch` knows (it ignores
    unknown nested keys silently)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(path))
    known = {a.dest for a in launch_command_parser()._actions}
    raw = yaml.safe_load(path.read_text())
    for group in ("fsdp_config", "deepspeed_config"):
        assert set(raw.get(group, {})) <= known, (group, set(raw[group]) - known)
    assert config.mixed_precision == "no"  # rlhfkit's --dtype decides
    if raw.get("fsdp_config"):
        assert raw["fsdp_config"]["fsdp_version"] == 2 and not raw["fsdp_config"]["fsdp_cpu_ram_efficient_loading"]
    if raw.get("deepspeed_config", {}).get("zero_stage") == 3:
        assert raw["deepspeed_config"]["zero3_save_16bit_model"] and not raw["deepspeed_config"]["zero3_init_flag"]


def test_fsdp1_on_cpu_processes_is_refused_not_run_unsharded(tiny_bert, tmp_path):
    """accelerate 1.15 runs an FSDP config on CPU processes as plain data parallelism (MULTI_CPU); rlhfkit
    turns FSDP2 on there (tests/test_fsdp2_cpu.py) but not FSDP1: refused, nothing written."""
    config = yaml.safe_load((ROOT / "examples/accelerate/fsdp2.yaml").read_text())
    config["fsdp_config"]["fsdp_version"] = 1
    (tmp_path / "fsdp1.yaml").write_text(yaml.safe_dump(config))
    data = write_pairs(tmp_path / "train.jsonl", 16, seed=0)
    proc = run([ACCELERATE, "launch", "--config_file", str(tmp_path / "fsdp1.yaml"),
                "--num_processes", "2", "--main_process_port", free_port(), "-m", "rlhfkit", "rm", "--data", data,
                "--base", tiny_bert, "--epochs", "1", "--output", str(tmp_path / "out")], expect_rc=1)
    assert "accelerate config 'fsdp_version: 1': FSDP1 needs GPUs; on CPU processes use fsdp_version: 2" in proc.stderr
    assert "Traceback" not in proc.stderr.split("rlhfkit: error")[0].split("\n")[-1]
    assert not (tmp_path / "out" / "model").exists()


def fake_accelerator(**kw):
    state = SimpleNamespace(deepspeed_plugin=kw.pop("deepspeed_plugin", None))
    return SimpleNamespace(state=state, device=torch.device("cpu"), is_main_process=True, **kw)


def test_deepspeed_clipping_must_match_max_grad_norm():
    from accelerate.utils import DistributedType

    plugin = SimpleNamespace(deepspeed_config={"gradient_clipping": 0.5})
    acc = fake_accelerator(deepspeed_plugin=plugin, distributed_type=DistributedType.DEEPSPEED)
    with pytest.raises(ConfigError, match="'optim.max_grad_norm': 1.0, but DeepSpeed clips at 0.5"):
        loop.check_clipping(acc, 1.0)
    loop.check_clipping(acc, 0.5)
    plugin.deepspeed_config["gradient_clipping"] = "auto"  # accelerate fills it with 1.0 in prepare
    loop.check_clipping(acc, 1.0)
    with pytest.raises(ConfigError):
        loop.check_clipping(acc, 0.0)
    loop.check_clipping(fake_accelerator(), 0.0)  # no DeepSpeed: rlhfkit clips


def test_a_sharded_model_is_saved_from_its_gathered_weights(tiny_llama):
    """Under FSDP/DeepSpeed the main process rebuilds the model and loads the gathered state dict (a tied LM
    head may come under one name only); the other processes get None. Plain runs: the unwrapped model."""
    from accelerate.utils import DistributedType

    from rlhfkit.config import DPOConfig, build

    cfg = build(DPOConfig, {"policy": tiny_llama, "data": "unused", "output": "unused", "use_lora": False})
    make = lambda: loop.trainable_policy(tiny_llama, cfg)  # noqa: E731
    trained = make()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    gathered = trained.state_dict()
    gathered.pop("lm.lm_head.weight")  # tied to the embeddings
    acc = fake_accelerator(distributed_type=DistributedType.FSDP, get_state_dict=lambda model: gathered)
    whole = loop.whole_model(acc, trained, make)
    assert whole is not trained
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), trained.state_dict().values()))
    assert whole.lm.lm_head.weight is whole.lm.get_input_embeddings().weight  # still tied
    acc.is_main_process = False
    assert loop.whole_model(acc, trained, make) is None
    plain = fake_accelerator(distributed_type=DistributedType.NO, unwrap_model=lambda model: model)
    assert loop.whole_model(plain, trained, make) is trained


@requires_gpus(2)
def test_ddp_on_two_gpus_trains_the_reward_model(tiny_bert, tmp_path):
    data = write_pairs(tmp_path / "train.jsonl", 64, seed=0)
    run(launch("-m", "rlhfkit", "rm", "--data", data, "--base", tiny_bert, "--epochs", "4", "--lr", "1e-2",
               "--batch-size", "8", "--eval-fraction", "0.25", "--output", str(tmp_path / "two")), cpu=False)
    assert last_metrics(tmp_path / "two" / "metrics.jsonl")["eval_loss"] < 0.6
