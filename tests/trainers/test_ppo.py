"""PPO on a tiny random Llama: step-0 invariants, learning a simple reward, exact resume."""

import json

import pytest
import torch

from rlhfkit.config import PPOConfig, build
from rlhfkit.rollout import collect_rollout
from rlhfkit.trainers.online import prompt_batch
from rlhfkit.trainers.ppo import build_models, train_ppo
from tests.models.test_policy import count_grad_forwards


class WordReward:
    """Reward = number of words of the response that are among `words` (a 'reward specific tokens' task)."""

    def __init__(self, *words):
        self.words = set(words or ("good",))

    def score(self, prompts, responses):
        return [float(sum(w in self.words for w in r.split())) for r in responses]


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
    # τ = 0.7, not 1: a log-prob pass that forgot the temperature would still agree at τ = 1
    cfg = ppo_cfg(tiny_llama, tmp_path, use_lora=use_lora, temperature=0.7)
    torch.manual_seed(0)
    actor_critic, ref_lm, tokenizer, _ = build_models(cfg, WordReward())
    roll = collect_rollout(actor_critic, ref_lm, tokenizer, WordReward(), prompt_batch(["a cat", "the dog sun"] * 4, 0, 8, 0),
                           cfg.generation)
    assert actor_critic.training  # the training forward below is the one the trainer runs
    logprobs, values, _ = actor_critic(roll.input_ids, roll.attention_mask, roll.query_ids.shape[1],
                                       roll.response_ids, cfg.generation.temperature)
    assert torch.equal(logprobs, roll.logprobs)  # ratio exactly 1
    assert torch.equal(roll.logprobs, roll.ref_logprobs)  # KL exactly 0 before any update
    assert torch.all(values == 0)  # zero-initialised value head


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("use_lora", [True, False])
def test_lr0_run_has_kl_exactly_zero_and_ratio_exactly_one(tiny_llama, tmp_path, dtype, use_lora):
    """The whole loop at lr 0, bf16 autocast included: the reference computes exactly what the policy does
    (a bf16 copy of the reference gave a step-1 KL of −1.2e-4 on this model), at τ = 0.7. The rollout's KL
    (policy and reference on the same batch) is exactly 0; the updates see shuffled rows, and SDPA's fp32 CPU
    kernel does not give a row the same bits at every batch position (4.8e-7 nats on a few tokens, AMD EPYC),
    so the ratio and approx_kl are held to fp32 rounding there."""
    cfg = ppo_cfg(tiny_llama, tmp_path, steps=2, lr=0.0, use_lora=use_lora, dtype=dtype, temperature=0.7)
    train_ppo(cfg, reward_model=WordReward())
    rows = [json.loads(x) for x in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert (r["rollout/kl"], r["rollout/kl_k3"], r["ppo/clipfrac"]) == (0.0, 0.0, 0.0)  # same batch: exact
        assert abs(r["ppo/ratio"] - 1) < 1e-6 and abs(r["ppo/first_ratio"] - 1) < 1e-6
        assert 0 <= r["ppo/approx_kl"] < 1e-12  # ½·mean(Δ²) with |Δ| at fp32 rounding (~5e-7)


def run_rows(tiny_llama, tmp_path, **kw):
    cfg = ppo_cfg(tiny_llama, tmp_path, steps=12, lr=3e-2, use_lora=False, normalize_scores=False, **kw)
    # four rewarded words: sampling the full softmax (no top-k 50) meets one word too rarely to learn from
    train_ppo(cfg, reward_model=WordReward("good", "great", "nice", "happy"))
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
def test_gradient_checkpointing_recomputes_every_layer(tiny_llama, tmp_path, monkeypatch, use_lora):
    """One PPO step = ppo_epochs × num_minibatches = 4 training forwards per layer; checkpointing recomputes
    each in the backward pass (8). The rollout's passes run without autograd and are not counted."""
    from rlhfkit.trainers import ppo

    real, counts = ppo.build_models, {}

    def counted(*args):
        models = real(*args)
        counts["per_layer"] = count_grad_forwards(models[0].lm)
        return models

    monkeypatch.setattr(ppo, "build_models", counted)
    for checkpointing, runs_per_update in ((False, 1), (True, 2)):
        cfg = ppo_cfg(tiny_llama, tmp_path / f"ckpt{checkpointing}", steps=1, use_lora=use_lora,
                      gradient_checkpointing=checkpointing)
        train_ppo(cfg, reward_model=WordReward())
        assert counts["per_layer"] == [4 * runs_per_update] * 2, checkpointing  # two layers


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


def eos_heavy_llama(path):
    """A tiny Llama whose EOS logit is scaled up (tied embeddings): responses end at varied lengths."""
    from safetensors.torch import load_file, save_file

    from tests.conftest import save_tiny_llama

    save_tiny_llama(path, seed=1)
    weights = load_file(str(path / "model.safetensors"))
    eos = json.loads((path / "config.json").read_text())["eos_token_id"]
    weights["model.embed_tokens.weight"][eos] *= 30
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return str(path)


def test_accumulation_equals_one_minibatch(tmp_path, monkeypatch):
    """One rollout of 8, one minibatch, 2 PPO epochs (2 AdamW steps): 2 micro-batches of 4 weighted by their
    tokens give the weights of one minibatch of 8."""
    from safetensors.torch import load_file

    from rlhfkit.trainers import loop

    policy = eos_heavy_llama(tmp_path / "llama")
    real, counts = loop.accumulate_step, []

    def spy(learner, micro_batches, loss_fn, count_fn):
        counts.append([count_fn(mb) for mb in micro_batches])
        return real(learner, micro_batches, loss_fn, count_fn)

    monkeypatch.setattr(loop, "accumulate_step", spy)
    weights = {}
    for accum in (1, 2):
        cfg = ppo_cfg(policy, tmp_path / f"accum{accum}", steps=1, num_minibatches=1, lr=1e-2, use_lora=False,
                      **{"optim.grad_accum_steps": accum})
        train_ppo(cfg, reward_model=WordReward("sun"))
        weights[accum] = load_file(str(tmp_path / f"accum{accum}" / "ppo" / "policy" / "model.safetensors"))
    assert [len(c) for c in counts] == [1, 1, 2, 2]
    assert any(c[0] != c[1] for c in counts[2:])  # unequal token counts: a mean of means would be wrong
    # measured 4e-7 (AdamW's √v can amplify fp32 rounding on near-zero gradients, see test_loop); weighting
    # each micro-batch's mean by 1/2 instead of by its tokens moved the weights by 0.04
    assert max((weights[1][k] - weights[2][k]).abs().max().item() for k in weights[1]) < 1e-4
    assert max((weights[1][k] - load_file(str(tmp_path / "llama" / "model.safetensors"))[k]).abs().max().item()
               for k in weights[1]) > 1e-3  # it trained


def read_rows(tmp_path):
    return [json.loads(x) for x in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_the_samplers_gap_to_the_trainer_is_logged_every_step(engine, tiny_llama, tmp_path):
    """fp32: the engine (and generate) compute what the trainer's forward computes, so the gap is ~0 and
    TIS weights are 1: --tis-cap changes nothing there."""
    cfg = ppo_cfg(tiny_llama, tmp_path, steps=2, lr=1e-2, temperature=0.7, engine=engine, tis_cap=2.0)
    train_ppo(cfg, reward_model=WordReward())
    for r in read_rows(tmp_path):
        assert abs(r["rollout/sampler_kl"]) < 1e-5 and 0 <= r["rollout/sampler_kl_k3"] < 1e-6
        assert r["rollout/sampler_logprob_gap_max"] < 1e-4
        assert r["ppo/tis_weight"] == pytest.approx(1.0, abs=1e-4) and r["ppo/tis_truncated"] == 0.0


def test_a_perturbed_sampler_shows_in_the_gap_and_tis_reweights_it(tiny_llama, tmp_path, monkeypatch):
    """A deliberately wrong sampler (it draws at τ/4 and reports the log-probs it drew from) is what a
    mismatched engine looks like: rollout/sampler_kl sees it and TIS weights π_old/μ move off 1."""
    import rlhfkit.engine

    honest = rlhfkit.engine.sample_tokens
    monkeypatch.setattr(rlhfkit.engine, "sample_tokens",
                        lambda logits, temperature, generator=None: honest(logits, temperature / 4, generator))
    train_ppo(ppo_cfg(tiny_llama, tmp_path, steps=2, lr=1e-2, temperature=0.7, tis_cap=1.5),
              reward_model=WordReward())
    for r in read_rows(tmp_path):
        assert r["rollout/sampler_kl"] > 1e-2 and r["rollout/sampler_logprob_gap_max"] > 0.1
        assert abs(r["ppo/tis_weight"] - 1) > 1e-2 and r["ppo/tis_truncated"] > 0
