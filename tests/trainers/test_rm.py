"""Reward-model training on a tiny random BERT: a clear synthetic preference is learned in seconds."""

import json
import random

import pytest

from rlhfkit.cli import main
from rlhfkit.config import RMConfig, build
from rlhfkit.models.reward import RewardModel, get_reward
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
    assert final["eval/accuracy"] > 0.9
    out = tmp_path / "rm"
    for name in ("metrics.jsonl", "loss.png", "accuracy.png", "config.yaml", "model/config.json",
                 "model/model.safetensors", "model/rlhfkit_rm.json"):
        assert (out / name).exists(), name
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]

    # the saved model scores like the trained one, via both public entry points
    rm = RewardModel.from_pretrained(out)
    good, bad = rm.score(["the cat", "the cat"], ["the sun is good", "the sun is terrible"])
    assert good > bad
    assert get_reward(rm.model, rm.tokenizer, "the cat", "the sun is good") == pytest.approx(good, abs=1e-5)


def test_score_cli(tiny_bert, tmp_path, capsys):
    train = write_pairs(tmp_path / "train.jsonl", 128, seed=0)
    assert main(["rm", "--data", train, "--base", tiny_bert, "--output", str(tmp_path / "rm"), "--epochs", "2",
                 "--lr", "3e-3", "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["score", "--model", str(tmp_path / "rm"), "--prompt", "the cat", "--response", "good"]) == 0
    float(capsys.readouterr().out.strip().splitlines()[-1])  # the number alone on the last line
    assert main(["score", "--model", str(tmp_path / "rm"), "--data", train, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 128 and 0.0 <= result["accuracy"] <= 1.0


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
