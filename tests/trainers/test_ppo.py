"""PPO on a tiny random Llama: step-0 invariants, learning a simple reward, exact resume."""

import json

import pytest
import torch

from rlhfkit.config import PPOConfig, build
from rlhfkit.rollout import collect_rollout
from rlhfkit.trainers.ppo import build_models, prompt_batch, train_ppo


class WordReward:
    """Reward = number of times `word` occurs in the response (a 'reward a specific token' task)."""

    def __init__(self, word="good"):
        self.word = word

    def score(self, prompts, responses):
        return [float(r.split().count(self.word)) for r in responses]


def write_prompts(path, n=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    words = "the cat dog sun moon sea tree book".split()
    path.write_text("".join(json.dumps({"prompt": f"{words[i % 8]} {words[(i * 3) % 8]}"}) + "\n" for i in range(n)))
    return str(path)


def ppo_cfg(tiny_llama, tmp_path, **kw):
    base = {"policy": tiny_llama, "prompts": write_prompts(tmp_path / "prompts.jsonl"), "output": str(tmp_path / "ppo"),
            "steps": 4, "batch_size": 8, "max_new_tokens": 8, "ppo_epochs": 2, "num_minibatches": 2,
            "dtype": "fp32", "temperature": 1.0, "top_p": 1.0, "seed": 0}
    base.update(kw)
    return build(PPOConfig, base)


@pytest.mark.parametrize("use_lora", [True, False])
def test_step0_ratio_is_one_and_kl_zero(tiny_llama, tmp_path, use_lora):
    cfg = ppo_cfg(tiny_llama, tmp_path, use_lora=use_lora)
    torch.manual_seed(0)
    actor_critic, ref_lm, tokenizer, _ = build_models(cfg, WordReward())
    roll = collect_rollout(actor_critic, ref_lm, tokenizer, WordReward(), prompt_batch(["a cat", "the dog sun"] * 4, 0, 8, 0),
                           cfg.generation)
    actor_critic.train()
    logprobs, values, _ = actor_critic(roll.input_ids, roll.attention_mask, roll.query_ids.shape[1],
                                       roll.response_ids, cfg.generation.temperature)
    ratio = torch.exp(logprobs - roll.logprobs)
    assert torch.allclose(ratio[roll.mask.bool()], torch.ones(()), atol=1e-5)
    assert torch.allclose(roll.logprobs, roll.ref_logprobs, atol=1e-5)  # KL = 0 before any update
    assert torch.all(values == 0)  # zero-initialised value head
    assert (roll.logprobs <= 0).all()


def run_rows(tiny_llama, tmp_path, **kw):
    cfg = ppo_cfg(tiny_llama, tmp_path, steps=12, lr=3e-2, use_lora=False, normalize_scores=False, **kw)
    train_ppo(cfg, reward_model=WordReward())
    return [json.loads(x) for x in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]


def test_ppo_raises_simple_reward_with_bounded_kl(tiny_llama, tmp_path):
    rows = run_rows(tiny_llama, tmp_path / "low_beta", kl_coef=0.05)
    first, last = rows[0]["rollout/score_mean"], sum(r["rollout/score_mean"] for r in rows[-3:]) / 3
    assert last > first + 1.0, (first, last)
    assert all(abs(r["ppo/first_ratio"] - 1) < 1e-4 for r in rows)  # old log-probs = training forward
    assert rows[0]["rollout/kl"] == pytest.approx(0.0, abs=1e-4)
    # a larger β holds the policy closer to the reference: the KL penalty does its job
    strict = run_rows(tiny_llama, tmp_path / "high_beta", kl_coef=1.0)
    assert strict[-1]["rollout/kl"] < rows[-1]["rollout/kl"] / 2
    for key in ("step", "step_time_s", "rollout/kl_k3", "ppo/clipfrac", "ppo/approx_kl", "ppo/entropy",
                "ppo/explained_variance", "ppo/kl_coef", "time/generation_s", "time/scoring_s", "time/training_s",
                "tokens_per_s", "rollout/non_score_reward", "rollout/reward_total", "ppo/value_loss"):
        assert key in rows[-1], key
    assert (tmp_path / "low_beta" / "ppo" / "policy" / "config.json").exists()


def test_resume_equals_uninterrupted(tiny_llama, tmp_path):
    (tmp_path / "a").mkdir()
    full = ppo_cfg(tiny_llama, tmp_path / "a", steps=4, save_every=2, lr=1e-2)
    train_ppo(full, reward_model=WordReward())
    (tmp_path / "b").mkdir()
    half = ppo_cfg(tiny_llama, tmp_path / "b", steps=2, save_every=2, lr=1e-2)
    train_ppo(half, reward_model=WordReward())
    rest = ppo_cfg(tiny_llama, tmp_path / "b", steps=4, save_every=2, lr=1e-2, resume=True)
    train_ppo(rest, reward_model=WordReward())
    a = [json.loads(x) for x in (tmp_path / "a" / "ppo" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("rollout/score_mean", "rollout/kl", "ppo/policy_loss", "ppo/value_loss"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], abs=1e-6), key


@pytest.mark.parametrize("use_lora", [True, False])
def test_gradient_checkpointing_gives_the_same_run(tiny_llama, tmp_path, use_lora):
    """Recomputed activations change memory, not the numbers: the same losses, KL and scores step by step."""
    probe = ppo_cfg(tiny_llama, tmp_path / "probe", use_lora=use_lora, gradient_checkpointing=True)
    lm = build_models(probe, WordReward())[0].lm
    layers = (lm.get_base_model() if use_lora else lm).model.layers
    assert all(layer.gradient_checkpointing for layer in layers)  # it is on ...
    runs = {}
    for ckpt in (False, True):  # ... and changes nothing but memory
        cfg = ppo_cfg(tiny_llama, tmp_path / f"ckpt{ckpt}", steps=6, lr=3e-2, use_lora=use_lora,
                      gradient_checkpointing=ckpt)
        train_ppo(cfg, reward_model=WordReward())
        rows = [json.loads(x) for x in (tmp_path / f"ckpt{ckpt}" / "ppo" / "metrics.jsonl").read_text().splitlines()]
        runs[ckpt] = [r[k] for r in rows if "ppo/policy_loss" in r
                      for k in ("ppo/policy_loss", "ppo/value_loss", "rollout/kl", "rollout/score_mean")]
    assert len(runs[True]) == 6 * 4
    assert any(abs(v) > 1e-3 for v in runs[True][-8:])  # it learned something, so equality is not trivial
    assert runs[True] == pytest.approx(runs[False], abs=1e-5)
