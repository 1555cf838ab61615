"""DPO on a tiny random Llama: cached reference = fresh reference, step-0 invariants, learning a clear
preference, every loss type, exact resume, CLI errors."""

import json
import math
import random
from functools import partial

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.config import DPOConfig, build
from rlhfkit.data.collate import collate_preferences, encode_completions
from rlhfkit.data.readers import load_preferences
from rlhfkit.models.load import apply_lora, load_causal_lm, load_tokenizer
from rlhfkit.models.policy import Policy, sequence_logprobs
from rlhfkit.trainers import dpo, loop

FILLER = "the cat dog sun moon sea tree book".split()


def write_pairs(path, n, seed):
    """chosen = filler + "good", rejected = the same filler + "bad"."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            filler = " ".join(rng.sample(FILLER, 3))
            f.write(json.dumps({"prompt": " ".join(rng.sample(FILLER, 2)), "chosen": f"{filler} good",
                                "rejected": f"{filler} bad"}) + "\n")
    return str(path)


def dpo_cfg(tiny_llama, tmp_path, name="dpo", **kw):
    base = {"policy": tiny_llama, "data": write_pairs(tmp_path / "train.jsonl", 48, seed=0),
            "eval_data": write_pairs(tmp_path / "eval.jsonl", 16, seed=1), "output": str(tmp_path / name),
            "epochs": 1, "batch_size": 8, "lr": 1e-2, "log_every": 1}
    return build(DPOConfig, {**base, **kw})


def rows(cfg):
    return [json.loads(x) for x in open(f"{cfg.output}/metrics.jsonl")]


@torch.no_grad()
def fresh_reference(model_path, pairs):
    """Summed response log-probs of the untouched model, one pair at a time (no padding at all)."""
    tok, policy = load_tokenizer(model_path), Policy(load_causal_lm(model_path))
    encode = partial(encode_completions, tok)
    out = [sequence_logprobs(policy, collate_preferences(encode, [p]))[0] for p in pairs]
    return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])  # chosen [N], rejected [N]


def cached_reference(cfg, policy):
    """The trainer's reference log-probs, computed on the accelerator's device (a GPU if there is one)."""
    tok = load_tokenizer(cfg.policy)
    train, _ = load_preferences(cfg.data)
    held_out, _ = load_preferences(cfg.eval_data)
    encode = partial(encode_completions, tok, max_length=cfg.max_length)
    accelerator = loop.make_accelerator()
    ref = dpo.reference_logps(cfg, policy.to(accelerator.device), train, held_out, encode, accelerator)
    assert all(v.device == accelerator.device for v in ref.values())  # where the training batches are
    return {k: v.cpu() for k, v in ref.items()}, train, held_out


def test_cached_reference_equals_fresh_and_is_reused(tiny_llama, tmp_path, monkeypatch):
    cfg = dpo_cfg(tiny_llama, tmp_path)
    lm = apply_lora(load_causal_lm(tiny_llama), cfg.lora, "CAUSAL_LM")
    for name, p in lm.named_parameters():  # adapters that change the outputs: the cache must ignore them
        if "lora_B" in name:
            p.data.fill_(0.5)
    ref, train, held_out = cached_reference(cfg, Policy(lm))
    # batched and padded on the accelerator's device vs one pair at a time on the CPU: fp32 rounding only
    # (CUDA's attention kernels sum in another order: 1e-4 there)
    atol = 1e-4 if torch.cuda.is_available() else 1e-5
    for split, pairs in (("train", train), ("eval", held_out)):
        chosen, rejected = fresh_reference(tiny_llama, pairs)
        assert torch.allclose(ref[f"{split}_chosen"], chosen, atol=atol)
        assert torch.allclose(ref[f"{split}_rejected"], rejected, atol=atol)

    def boom(*args, **kwargs):
        raise AssertionError("reference recomputed although the cache matches")

    monkeypatch.setattr(dpo, "compute_reference_logps", boom)
    again, _, _ = cached_reference(cfg, Policy(lm))
    assert all(torch.equal(again[k], ref[k]) for k in ref)
    with pytest.raises(AssertionError, match="recomputed"):  # another tokenisation setting: another key
        cached_reference(dpo_cfg(tiny_llama, tmp_path, max_length=128), Policy(lm))
    with open(cfg.data, "a") as f:  # other data: another key
        f.write(json.dumps({"prompt": "sea", "chosen": "good", "rejected": "bad"}) + "\n")
    with pytest.raises(AssertionError, match="recomputed"):
        cached_reference(cfg, Policy(lm))


@pytest.mark.parametrize("use_lora", [True, False])
def test_step0_rewards_are_zero_and_sigmoid_loss_is_log2(tiny_llama, tmp_path, use_lora):
    cfg = dpo_cfg(tiny_llama, tmp_path, use_lora=use_lora)
    dpo.train_dpo(cfg)
    first = rows(cfg)[0]  # measured on the first batch, before the first update
    assert first["step"] == 1
    assert first["dpo/chosen_reward"] == pytest.approx(0.0, abs=1e-6)
    assert first["dpo/rejected_reward"] == pytest.approx(0.0, abs=1e-6)
    assert first["dpo/loss"] == pytest.approx(math.log(2), abs=1e-6)  # −log σ(0)


def test_dpo_raises_held_out_reward_accuracy(tiny_llama, tmp_path):
    cfg = dpo_cfg(tiny_llama, tmp_path, epochs=2)
    final = dpo.train_dpo(cfg)
    # "good" vs "bad" after the same filler: a clear preference that generalises to unseen prompts
    assert final["eval_reward_accuracy"] >= 0.9
    assert final["eval_reward_margin"] > 0.05
    assert final["eval_loss"] < math.log(2) - 0.03
    assert final["eval_chosen_reward"] > 0 > final["eval_rejected_reward"]
    metrics = rows(cfg)
    for key in ("dpo/loss", "dpo/reward_accuracy", "dpo/chosen_reward", "dpo/rejected_reward",
                "dpo/reward_margin", "dpo/chosen_logps", "dpo/rejected_logps", "dpo/grad_norm",
                "step_time_s"):
        assert key in metrics[0], key
    assert [r["epoch"] for r in metrics if "epoch" in r] == [1, 2]
    out = tmp_path / "dpo"
    for name in ("policy/adapter_config.json", "summary.json", "config.yaml", "checkpoint/model.safetensors",
                 "checkpoint/trainer_state.json"):
        assert (out / name).exists(), name
    assert len(list(out.glob("ref_logps-*.safetensors"))) == 1
    # the saved LoRA policy loads as a plain causal LM and prefers "good" like the trained one
    tok, lm = load_tokenizer(out / "policy"), load_causal_lm(out / "policy")
    batch = encode_completions(tok, ["the cat", "the cat"], ["sun sea tree good", "sun sea tree bad"])
    with torch.no_grad():
        good, bad = sequence_logprobs(Policy(lm), batch)[0]
    assert good > bad


# step-0 loss by hand, logits = 0: sigmoid −log σ(0) = ln 2 (also with label smoothing),
# ipo (0 − 1/(2β))² = 25 at β = 0.1, hinge relu(1 − 0) = 1; SimPO has no reference, so no fixed value
@pytest.mark.parametrize("loss,extra,step0", [("sigmoid", {"label_smoothing": 0.1}, math.log(2)),
                                              ("ipo", {}, 25.0), ("hinge", {}, 1.0), ("simpo", {}, None)])
def test_every_loss_type_runs(tiny_llama, tmp_path, loss, extra, step0):
    cfg = dpo_cfg(tiny_llama, tmp_path, loss=loss, **extra)
    final = dpo.train_dpo(cfg)
    first = rows(cfg)[0]
    if step0 is not None:
        assert first["dpo/loss"] == pytest.approx(step0, abs=1e-5)
    assert all(math.isfinite(v) for k, v in final.items() if k.startswith("eval_"))
    assert final["eval_loss"] < rows(cfg)[0]["dpo/loss"]  # it moved in the right direction
    assert bool(list((tmp_path / "dpo").glob("ref_logps-*"))) == (loss != "simpo")  # SimPO needs no reference


class Interrupted(Exception):
    pass


def test_resume_equals_uninterrupted(tiny_llama, tmp_path, monkeypatch):
    full = dpo_cfg(tiny_llama, tmp_path, "full", epochs=2)
    dpo.train_dpo(full)

    real_evaluate, calls = dpo.evaluate, []

    def evaluate_then_crash(*args, **kwargs):  # crash in epoch 2, after epoch 1's checkpoint
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(dpo, "evaluate", evaluate_then_crash)
    with pytest.raises(Interrupted):
        dpo.train_dpo(dpo_cfg(tiny_llama, tmp_path, "resumed", epochs=2))
    monkeypatch.setattr(dpo, "evaluate", real_evaluate)
    monkeypatch.setattr(dpo, "compute_reference_logps", None)  # the resumed run reuses the cache
    real_step, batches = dpo.dpo_step, []
    monkeypatch.setattr(dpo, "dpo_step", lambda *a: batches.append(1) or real_step(*a))
    resumed = dpo_cfg(tiny_llama, tmp_path, "resumed", epochs=2, resume=True)
    dpo.train_dpo(resumed)
    assert len(batches) == 6  # epoch 2 only: 48 pairs / 8
    a, b = rows(full), rows(resumed)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert len(a) == 2 * (6 + 1)  # 48 pairs / 8 = 6 step rows + 1 epoch row, per epoch
    for ra, rb in zip(a, b):
        for key in ra:
            if key not in ("step_time_s",):
                assert ra[key] == pytest.approx(rb[key], abs=1e-6), key


def test_dpo_cli(tiny_llama, tmp_path, capsys):
    data = write_pairs(tmp_path / "train.jsonl", 16, seed=0)
    assert main(["dpo", "--policy", tiny_llama, "--data", data, "--output", str(tmp_path / "o"),
                 "--epochs", "1", "--loss", "hinge", "--beta", "0.2", "--eval-fraction", "0.25", "--no-lora",
                 "--merge-lora"]) == 0
    assert "held-out reward accuracy" in capsys.readouterr().out
    for name in ("loss.png", "reward_accuracy.png", "rewards.png"):  # drawn by the command, not the trainer
        assert (tmp_path / "o" / name).stat().st_size > 1000, name
    assert (tmp_path / "o" / "policy" / "model.safetensors").exists()  # no LoRA: a full model folder

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
                   '{"prompt": "a", "chosen": "", "rejected": "c"}\n')
    assert main(["dpo", "--policy", tiny_llama, "--data", str(bad), "--output", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "chosen" in err and "Traceback" not in err

    assert main(["dpo", "--policy", tiny_llama, "--data", data, "--output", str(tmp_path / "x"),
                 "--loss", "ipo", "--label-smoothing", "0.1"]) == 2
    assert "label_smoothing" in capsys.readouterr().err


def test_step0_check_tolerance_follows_the_dtype(caplog):
    """0.2 nats of drift is bf16 rounding of a differently batched reference pass, but a stale cache in fp32."""
    from rlhfkit.trainers.dpo import check_step0

    metrics = {"dpo/chosen_reward": 0.02, "dpo/rejected_reward": -0.01}  # β 0.1: 0.2 nats
    with caplog.at_level("WARNING", logger="rlhfkit.trainers.dpo"):
        check_step0(metrics, 0.1, "bf16")
        assert not caplog.records
        check_step0(metrics, 0.1, "fp32")
    assert len(caplog.records) == 1 and "0.200 nats" in caplog.records[0].getMessage()


def test_dpo_cli_trains_on_hh_rows(tiny_llama, tmp_path, capsys):
    """`rlhfkit dpo` reads Anthropic HH rows (multi-turn conversations as text, no prompt field) as they are."""
    rng = random.Random(0)
    rows = []
    for _ in range(16):
        turns = [f"\n\n{role}: {' '.join(rng.sample(FILLER, 2))}" for role in ("Human", "Assistant", "Human")]
        shared, reply = "".join(turns), " ".join(rng.sample(FILLER, 3))
        rows.append({"chosen": f"{shared}\n\nAssistant: {reply} good",
                     "rejected": f"{shared}\n\nAssistant: {reply} bad"})
    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(["dpo", "--policy", tiny_llama, "--data", str(data), "--output", str(tmp_path / "o"),
                 "--epochs", "1", "--eval-fraction", "0.25", "--max-length", "64"]) == 0
    assert "held-out reward accuracy" in capsys.readouterr().out
    assert (tmp_path / "o" / "policy").is_dir()
