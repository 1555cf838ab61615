"""Reward-model training on a tiny random BERT: a clear synthetic preference is learned in seconds."""

import json
import random

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.config import RMConfig, build
from rlhfkit.models.reward import RewardModel, get_reward
from rlhfkit.trainers import rm as rm_trainer
from rlhfkit.trainers.rm import train_reward_model

POSITIVE = "good great happy nice love fine".split()
NEGATIVE = "bad terrible sad awful hate".split()
FILLER = "the cat dog sun moon sea tree book code data".split()


def write_pairs(path, n, seed):
    """chosen has a positive word, rejected a negative one; both share random filler."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            filler = rng.sample(FILLER, 3)
            f.write(json.dumps({
                "prompt": " ".join(rng.sample(FILLER, 2)),
                "chosen": " ".join(filler + [rng.choice(POSITIVE)]),
                "rejected": " ".join(filler + [rng.choice(NEGATIVE)]),
            }) + "\n")
    return str(path)


def test_rm_learns_clear_preference(tiny_bert, tmp_path):
    train = write_pairs(tmp_path / "train.jsonl", 192, seed=0)
    held_out = write_pairs(tmp_path / "eval.jsonl", 64, seed=1)
    cfg = build(RMConfig, {"data": train, "eval_data": held_out, "base": tiny_bert, "output": str(tmp_path / "rm"),
                           "epochs": 4, "batch_size": 16, "lr": 3e-3, "max_length": 32})
    final = train_reward_model(cfg)
    assert final["eval_accuracy"] > 0.9
    out = tmp_path / "rm"
    for name in ("metrics.jsonl", "config.yaml", "summary.json", "checkpoint/trainer_state.json",
                 "model/config.json", "model/model.safetensors", "model/rlhfkit_rm.json"):
        assert (out / name).exists(), name
    assert not list(out.glob("*.png"))  # the trainer writes metrics; the CLI draws them
    rows = epoch_rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    for key in ("eval_loss", "eval_accuracy", "eval_reward_mean", "eval_reward_std", "train/accuracy"):
        assert key in rows[-1], key

    # the saved model scores like the trained one, via both public entry points
    rm = RewardModel.from_pretrained(out)
    good, bad = rm.score(["the cat", "the cat"], ["the sun is good", "the sun is terrible"])
    assert good > bad
    assert get_reward(rm.model, rm.tokenizer, "the cat", "the sun is good") == pytest.approx(good, abs=1e-5)


def epoch_rows(out):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "epoch" in r]


def test_score_cli(tiny_bert, tmp_path, capsys):
    train = write_pairs(tmp_path / "train.jsonl", 128, seed=0)
    assert main(["rm", "--data", train, "--base", tiny_bert, "--output", str(tmp_path / "rm"), "--epochs", "2",
                 "--lr", "3e-3", "--seed", "1"]) == 0
    assert "held-out accuracy 1.000" in capsys.readouterr().out  # the `eval_accuracy` of the last epoch
    for name in ("loss.png", "accuracy.png"):  # the seed's two plots, drawn by the command
        assert (tmp_path / "rm" / name).stat().st_size > 1000, name
    assert main(["score", "--model", str(tmp_path / "rm"), "--prompt", "the cat", "--response", "good"]) == 0
    float(capsys.readouterr().out.strip().splitlines()[-1])  # the number alone on the last line
    assert main(["score", "--model", str(tmp_path / "rm"), "--data", train, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 128 and result["accuracy"] > 0.9  # on its own training pairs


def test_only_rank_0_prints_the_final_line(tiny_bert, tmp_path, capsys, monkeypatch):
    """Under `accelerate launch` every rank runs the command; the result is printed once, by rank 0."""
    train = write_pairs(tmp_path / "train.jsonl", 16, seed=0)
    assert main(["rm", "--data", train, "--base", tiny_bert, "--output", str(tmp_path / "rm"), "--epochs", "1"]) == 0
    score = ["score", "--model", str(tmp_path / "rm"), "--prompt", "the cat", "--response", "good"]
    capsys.readouterr()
    for rank, prints in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        assert main(score) == 0
        assert bool(capsys.readouterr().out.strip()) is prints, rank


def test_rm_bad_data_exits_2_with_location(tiny_bert, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "", "rejected": "c"}\n')
    assert main(["rm", "--data", str(bad), "--base", tiny_bert, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "chosen" in err and "Traceback" not in err


def test_rm_same_seed_same_result(tiny_bert, tmp_path):
    train = write_pairs(tmp_path / "train.jsonl", 64, seed=0)
    finals = [
        train_reward_model(build(RMConfig, {"data": train, "base": tiny_bert, "output": str(tmp_path / f"rm{i}"),
                                            "epochs": 1, "lr": 1e-3, "seed": 3}))
        for i in range(2)
    ]
    assert finals[0]["train/loss"] == finals[1]["train/loss"]


def rm_cfg(tiny_bert, tmp_path, name, **kw):
    base = {"data": write_pairs(tmp_path / "train.jsonl", 64, seed=0), "base": tiny_bert, "epochs": 2,
            "output": str(tmp_path / name), "batch_size": 8, "lr": 3e-3, "log_every": 1, "seed": 1}
    return build(RMConfig, {**base, **kw})


def all_rows(cfg):
    return [json.loads(x) for x in open(f"{cfg.output}/metrics.jsonl")]


def saved_weights(cfg):
    from safetensors.torch import load_file

    return load_file(f"{cfg.output}/model/model.safetensors")


class Interrupted(Exception):
    pass


def test_rm_resume_equals_uninterrupted(tiny_bert, tmp_path, monkeypatch):
    full = rm_cfg(tiny_bert, tmp_path, "full")
    train_reward_model(full)
    real_evaluate, calls = rm_trainer.evaluate, []

    def evaluate_then_crash(*args, **kwargs):  # crash in epoch 2, after epoch 1's checkpoint
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(rm_trainer, "evaluate", evaluate_then_crash)
    with pytest.raises(Interrupted):
        train_reward_model(rm_cfg(tiny_bert, tmp_path, "resumed"))
    monkeypatch.setattr(rm_trainer, "evaluate", real_evaluate)
    resumed = rm_cfg(tiny_bert, tmp_path, "resumed", resume=True)
    train_reward_model(resumed)
    a, b = all_rows(full), all_rows(resumed)
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) == 2 * (8 + 1)  # 58 pairs: 8 batches
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k != "step_time_s"} == \
            {k: v for k, v in rb.items() if k != "step_time_s"}
    wa, wb = saved_weights(full), saved_weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_rm_skips_a_non_finite_batch(tiny_bert, tmp_path, monkeypatch):
    real_step, calls = rm_trainer.rm_step, []

    def nan_on_third_batch(*args, **kwargs):
        loss, metrics = real_step(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), metrics) if len(calls) == 3 else (loss, metrics)

    monkeypatch.setattr(rm_trainer, "rm_step", nan_on_third_batch)
    cfg = rm_cfg(tiny_bert, tmp_path, "nan", epochs=1)
    final = train_reward_model(cfg)
    assert final["skipped_steps"] == 1
    rows = [r for r in all_rows(cfg) if "epoch" not in r]
    assert rows[2]["rm/grad_norm"] is None  # NaN in metrics.jsonl: no update from that batch
    assert rows[2]["rm/lr"] == rows[3]["rm/lr"] != rows[1]["rm/lr"]  # nor a schedule step (linear decay)
    assert all(torch.isfinite(w).all() for w in saved_weights(cfg).values())
    assert final["eval_loss"] < 0.69  # and it kept learning from the other batches


def write_hh_pairs(path, n, seed):
    """Anthropic HH rows (whole conversations as text, no prompt field): two turns of filler, then the last
    reply ends with a positive word in chosen and a negative one in rejected."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            history = [" ".join(rng.sample(FILLER, 2)) for _ in range(3)]  # human, assistant, human
            roles = ("Human", "Assistant", "Human")
            shared = "".join(f"\n\n{role}: {text}" for role, text in zip(roles, history))
            reply = " ".join(rng.sample(FILLER, 3))
            f.write(json.dumps({"chosen": f"{shared}\n\nAssistant: {reply} {rng.choice(POSITIVE)}",
                                "rejected": f"{shared}\n\nAssistant: {reply} {rng.choice(NEGATIVE)}"}) + "\n")
    return str(path)


def test_rm_cli_trains_on_hh_rows(tiny_bert, tmp_path, capsys):
    """`rlhfkit rm` reads HH rows as they are (the prompt is the shared conversation) and learns from them."""
    train = write_hh_pairs(tmp_path / "hh.jsonl", 128, seed=0)
    assert main(["rm", "--data", train, "--base", tiny_bert, "--output", str(tmp_path / "rm"),
                 "--epochs", "2", "--lr", "3e-3", "--seed", "1"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    assert main(["score", "--model", str(tmp_path / "rm"), "--data", train, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 128 and result["accuracy"] > 0.9  # every row kept; the reply's last word learned
