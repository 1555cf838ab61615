"""GRPO / RLOO / REINFORCE++ on a tiny random Llama: step-0 invariants, groups, learning, exact resume."""

import json

import pytest
import torch

from rlhfkit.config import GRPOConfig, ReinforcePPConfig, RLOOConfig, build
from rlhfkit.errors import ConfigError
from rlhfkit.rollout import Rollout
from rlhfkit.trainers import critic_free
from rlhfkit.trainers.critic_free import train_critic_free
from tests.trainers.test_ppo import WordReward, write_prompts

CONFIGS = {"grpo": GRPOConfig, "rloo": RLOOConfig, "reinforce_pp": ReinforcePPConfig}


def cf_cfg(algo, tiny_llama, tmp_path, **kw):
    base = {"policy": tiny_llama, "prompts": write_prompts(tmp_path / "prompts.jsonl"), "output": str(tmp_path / algo),
            "steps": 3, "batch_size": 2, "group_size": 4, "max_new_tokens": 8, "dtype": "fp32", "temperature": 1.0,
            "seed": 0}
    base.update(kw)
    return build(CONFIGS[algo], base)


def rows_of(path):
    return [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algo", ["grpo", "rloo", "reinforce_pp"])
def test_lr0_run_has_ratio_one_and_kl_zero(algo, tiny_llama, tmp_path):
    """At lr 0 the training forward computes the rollout's log-probs (ratio 1) and the policy is the reference.
    The updates see the rows shuffled, and SDPA's fp32 CPU kernel does not give a row the same bits at every
    batch position (measured on an AMD EPYC: 4.8e-7 nats on 1-3 tokens of 64, the attention output the first
    to differ), so the updates' numbers are held to fp32 rounding, not to equality; a wrong temperature or
    position id moves them far more (tests/models/test_positions.py, tests/test_sampling.py)."""
    cfg = cf_cfg(algo, tiny_llama, tmp_path, steps=2, lr=0.0, temperature=0.7, num_iterations=2)
    train_critic_free(cfg, reward_model=WordReward())
    for r in rows_of(tmp_path / algo):
        assert (r["rollout/kl"], r["rollout/kl_k3"], r["rl/clipfrac"]) == (0.0, 0.0, 0.0)  # same batch: exact
        assert abs(r["rl/ratio"] - 1) < 1e-6 and abs(r["rl/first_ratio"] - 1) < 1e-6
        assert 0 <= r["rl/approx_kl"] < 1e-12  # ½·mean(Δ²) with |Δ| at fp32 rounding (~5e-7)


def test_each_prompt_gets_k_completions_in_one_batch(tiny_llama, tmp_path, monkeypatch):
    seen = []
    real = critic_free.critic_free_step

    def spy(cfg, state, roll, *rest):
        seen.append([p for p in roll.prompts])
        return real(cfg, state, roll, *rest)

    monkeypatch.setattr(critic_free, "critic_free_step", spy)
    train_critic_free(cf_cfg("grpo", tiny_llama, tmp_path, steps=1, batch_size=3, group_size=4),
                      reward_model=WordReward())
    (prompts,) = seen
    assert len(prompts) == 12 and len(set(prompts)) == 3
    assert all(len(set(prompts[i:i + 4])) == 1 for i in range(0, 12, 4))  # groups are consecutive


def fake_rollout(scores, logprobs, ref_logprobs, mask):
    b, t = mask.shape
    return Rollout(prompts=["p"] * b, query_ids=torch.zeros(b, 1, dtype=torch.long), query_mask=torch.ones(b, 1),
                   response_ids=torch.zeros(b, t, dtype=torch.long), mask=mask, responses=[""] * b,
                   ended=torch.ones(b, dtype=torch.bool), scores=scores, logprobs=logprobs, ref_logprobs=ref_logprobs)


def test_rloo_advantages_put_the_k1_kl_inside_the_leave_one_out_baseline(tiny_llama, tmp_path):
    """Hand-computed: k = 2, scores (1, 3), Σ_t k1 = (0.5, 0), β = 0.2 -> r' = (0.9, 3.0); A = (−2.1, 2.1)."""
    from rlhfkit.losses import FixedKLController
    from rlhfkit.trainers.online import OnlineState

    cfg = cf_cfg("rloo", tiny_llama, tmp_path, group_size=2, batch_size=1, kl_coef=0.2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    roll = fake_rollout(torch.tensor([1.0, 3.0]), torch.tensor([[-1.0, -1.0], [-2.0, -9.0]]),
                        torch.tensor([[-1.25, -1.25], [-2.0, -1.0]]), mask)
    adv, rewards = critic_free.advantages_for(cfg, OnlineState(kl_ctl=FixedKLController(0.2)), roll)
    assert adv.tolist() == pytest.approx([-2.1, 2.1])
    assert rewards.tolist() == pytest.approx([0.9, 3.0])  # the r' that zero_spread_groups reads


def test_zero_spread_groups_counts_the_rewards_the_advantages_see(tiny_llama, tmp_path):
    """Missing-EOS penalty 0.5. Groups (k = 2) of raw scores (1, 1), (1, 0.5), (2, 2), the unended response
    second, first, second: rewards (1, 0.5), (0.5, 0.5), (2, 1.5). Only the middle group has no spread
    (its advantages are 0): 1/3; the raw scores would say 2/3."""
    from rlhfkit.losses import FixedKLController
    from rlhfkit.trainers.online import OnlineState

    cfg = cf_cfg("grpo", tiny_llama, tmp_path, group_size=2, batch_size=3, missing_eos_penalty=0.5)
    mask, logprobs = torch.ones(6, 2), torch.full((6, 2), -1.0)
    roll = fake_rollout(torch.tensor([1.0, 1.0, 1.0, 0.5, 2.0, 2.0]), logprobs, logprobs.clone(), mask)
    roll.ended, roll.sample_logprobs = torch.tensor([True, False, False, True, True, False]), logprobs.clone()
    seen = []
    metrics = critic_free.critic_free_step(cfg, OnlineState(kl_ctl=FixedKLController(0.0)), roll,
                                           lambda mb, adv, beta: seen.append(adv) or {"rl/ratio": 1.0})
    assert metrics["rollout/zero_spread_groups"] == pytest.approx(1 / 3)
    (advantages,) = seen
    assert (advantages.abs() > 0).sum() == 4  # the middle group's two are the zeros (in shuffled order)


def test_reinforce_pp_advantages_are_whitened_reward_to_go(tiny_llama, tmp_path):
    """r_t = −β k1_t, + score at the last token; A = whiten(Σ_{u≥t} r_u) over the masked tokens."""
    from rlhfkit.losses import FixedKLController
    from rlhfkit.trainers.online import OnlineState

    cfg = cf_cfg("reinforce_pp", tiny_llama, tmp_path, group_size=2, batch_size=1, kl_coef=0.5)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    roll = fake_rollout(torch.tensor([1.0, 3.0]), torch.tensor([[-1.0, -1.0], [-2.0, -9.0]]),
                        torch.tensor([[-2.0, -1.0], [-2.0, -1.0]]), mask)
    adv, rewards = critic_free.advantages_for(cfg, OnlineState(kl_ctl=FixedKLController(0.5)), roll)
    assert rewards.tolist() == pytest.approx([0.5, 3.0])  # s − β Σ_t k1_t, the return at the first token
    # row 0: r = (−0.5, 1) -> returns (0.5, 1); row 1: r = (3) -> returns (3); tokens 0.5, 1, 3
    tokens = torch.tensor([0.5, 1.0, 3.0])
    white = (tokens - tokens.mean()) / tokens.var().sqrt()
    assert adv[mask.bool()].tolist() == pytest.approx(white.tolist(), abs=1e-5)
    assert adv[1, 1] == 0


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_learns_a_simple_reward(algo, tiny_llama, tmp_path):
    cfg = cf_cfg(algo, tiny_llama, tmp_path, steps=12, batch_size=4, lr=3e-2, use_lora=False, kl_coef=0.01)
    train_critic_free(cfg, reward_model=WordReward("good", "great", "nice", "happy"))
    rows = rows_of(tmp_path / algo)
    first, last = rows[0]["rollout/score_mean"], sum(r["rollout/score_mean"] for r in rows[-3:]) / 3
    assert last > first + 1.0, (first, last)
    assert all(0 <= r["rollout/zero_spread_groups"] <= 1 for r in rows)
    assert (tmp_path / algo / "policy" / "config.json").exists()


def test_grpo_kl_loss_holds_the_policy_closer(tiny_llama, tmp_path):
    kl = {}
    for beta in (0.0, 1.0):
        cfg = cf_cfg("grpo", tiny_llama, tmp_path / str(beta), steps=10, batch_size=4, lr=3e-2, use_lora=False,
                     kl_coef=beta)
        train_critic_free(cfg, reward_model=WordReward("good", "great", "nice", "happy"))
        kl[beta] = rows_of(tmp_path / str(beta) / "grpo")[-1]["rollout/kl"]
    assert kl[1.0] < kl[0.0] / 2, kl


@pytest.mark.parametrize("accum", [1, 2])
def test_one_update_takes_log_pi_old_from_its_own_forward(accum, tiny_llama, tmp_path, monkeypatch):
    """GRPO with one update per batch and a KL loss skips the no-grad log π_old pass; the run is the one
    with the pass (same losses, KL metrics, ratio 1 and final weights), micro-batched or not."""
    from rlhfkit.trainers import online

    asked = []
    real_collect = online.collect_rollout
    monkeypatch.setattr(online, "collect_rollout",
                        lambda *a, **k: asked.append(k["old_logprobs"]) or real_collect(*a, **k))
    rows, weights = {}, {}
    for forced in (False, True):
        if forced:
            monkeypatch.setattr(critic_free, "needs_old_pass", lambda cfg: True)
        out = tmp_path / str(forced)
        cfg = cf_cfg("grpo", tiny_llama, out, steps=3, lr=1e-2, kl_coef=0.1, grad_accum_steps=accum)
        train_critic_free(cfg, reward_model=WordReward())
        rows[forced] = rows_of(out / "grpo")
        weights[forced] = (out / "grpo" / "policy").rglob("*.safetensors")
    assert asked == [False] * 3 + [True] * 3
    for key in ("rollout/score_mean", "rollout/kl", "rollout/kl_k3", "rl/policy_loss", "rl/kl_loss", "rl/ratio"):
        assert [r[key] for r in rows[False]] == pytest.approx([r[key] for r in rows[True]], abs=1e-5), key
    assert all(r["rl/ratio"] == 1.0 for r in rows[False]) and rows[False][-1]["rollout/kl"] > 0
    # first_ratio compares the update's forward with a no-grad pass: without that pass it is 1 by construction
    assert not any("rl/first_ratio" in r for r in rows[False]) and all("rl/first_ratio" in r for r in rows[True])
    from safetensors.torch import load_file

    (a,), (b,) = map(list, weights.values())
    for name, tensor in load_file(a).items():
        torch.testing.assert_close(tensor, load_file(b)[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("overrides, needed", [
    ({}, False), ({"num_iterations": 2}, True), ({"num_minibatches": 2}, True),
    ({"kl_in": "reward", "kl_estimator": "k1"}, True)])
def test_which_configs_need_the_old_pass(overrides, needed, tiny_llama, tmp_path):
    assert critic_free.needs_old_pass(cf_cfg("grpo", tiny_llama, tmp_path, **overrides)) is needed
    assert critic_free.needs_old_pass(cf_cfg("reinforce_pp", tiny_llama, tmp_path))


# Responses of 8, 7, 8, 6 | 1, 2, 1, 3 tokens: the halves (two micro-batches, or two processes) hold 29 and 7
# tokens but 4 sequences each, so weighting them by tokens where the loss is a mean over sequences moves the update
LENGTHS = [8, 7, 8, 6, 1, 2, 1, 3]
ADVANTAGES = torch.tensor([1.0, -0.5, 0.8, -1.2, 1.5, -1.0, 0.3, -0.7])
COMBINATIONS = [(ratio, agg) for ratio in ("token", "sequence")
                for agg in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")]
COMBINATIONS.append(("gspo", "token_mean"))  # GSPO's loss is a mean over sequences, whatever loss_agg says


def fixed_batch(vocab_size: int) -> Rollout:
    """8 prompts of 3 tokens and responses of LENGTHS tokens (random words, fixed seed), no log π_old yet."""
    g = torch.Generator().manual_seed(0)
    b, t = len(LENGTHS), max(LENGTHS)
    first_word = 6  # conftest's vocabulary: 6 special tokens, then words
    mask = (torch.arange(t)[None] < torch.tensor(LENGTHS)[:, None]).float()  # [B, T]
    return Rollout(prompts=["p"] * b, query_ids=torch.randint(first_word, vocab_size, (b, 3), generator=g),
                   query_mask=torch.ones(b, 3, dtype=torch.long),
                   response_ids=torch.randint(first_word, vocab_size, (b, t), generator=g), mask=mask,
                   responses=[""] * b, ended=torch.tensor(LENGTHS) < t, ref_logprobs=torch.zeros(b, t))


def update_of(tiny_llama, tmp_path, ratio, loss_agg, accum=1, rows=slice(None)) -> dict[str, torch.Tensor]:
    """Two optimiser steps of `make_train_fn` (RLOO's KL-in-reward config with `ratio` and `loss_agg`, full
    fine-tuning, fp32, lr 1e-2) on rows `rows` of `fixed_batch` with ADVANTAGES, each in `accum` micro-batches;
    the second step reuses the first's log π_old (as num_iterations 2). Returns {name: trained − initial}."""
    from rlhfkit.losses import FixedKLController
    from rlhfkit.models.load import load_tokenizer
    from rlhfkit.trainers import loop, online

    cfg = build(RLOOConfig, {"policy": tiny_llama, "prompts": "unused", "output": str(tmp_path), "dtype": "fp32",
                             "batch_size": 2, "group_size": 4, "max_new_tokens": max(LENGTHS), "ratio": ratio,
                             "loss_agg": loss_agg, "grad_accum_steps": accum, "use_lora": False, "lr": 1e-2,
                             "tis_cap": None})  # a hand-made batch: no sampler log-probs to weight by
    accelerator = loop.make_accelerator("fp32")
    tokenizer = load_tokenizer(tiny_llama, padding_side="left")
    model = online.build_actor_critic(cfg, tokenizer, with_value=False)
    optimizer, scheduler = loop.make_optimizer(model, cfg.optim, 2)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    initial = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    learner = loop.Learner(accelerator, model, optimizer, scheduler, cfg.optim.max_grad_norm)
    train = critic_free.make_train_fn(cfg, learner, online.OnlineState(kl_ctl=FixedKLController(cfg.kl_coef)))
    batch = fixed_batch(len(tokenizer)).select(torch.arange(len(LENGTHS))[rows])
    for _ in range(2):
        train(batch, ADVANTAGES[rows], cfg.kl_coef)  # the first call fills batch.logprobs
    trained = accelerator.unwrap_model(model).state_dict()
    return {k: trained[k].detach() - v for k, v in initial.items()}


@pytest.mark.parametrize("ratio, loss_agg", COMBINATIONS)
def test_accumulated_micro_batches_make_the_minibatch_update(ratio, loss_agg, tiny_llama, tmp_path):
    """Two micro-batches (29 and 7 tokens, 4 sequences each) make the update of the 8 sequences at once, for
    every ratio and loss_agg: each weighs what its loss averages over, tokens only for a per-token ratio with
    token_mean (the sequence ratio's loss is a mean over sequences whatever loss_agg says). Weighting RLOO's
    sequence loss by tokens moved the weights by 2e-2 here."""
    one = update_of(tiny_llama, tmp_path / "one", ratio, loss_agg, accum=1)
    two = update_of(tiny_llama, tmp_path / "two", ratio, loss_agg, accum=2)
    assert max(d.abs().max().item() for d in one.values()) > 5e-3  # the update is not trivially small
    for name, delta in one.items():
        torch.testing.assert_close(two[name], delta, atol=5e-6, rtol=0, msg=name)


def test_resume_equals_uninterrupted(tiny_llama, tmp_path):
    full = cf_cfg("grpo", tiny_llama, tmp_path / "a", steps=4, save_every=2, lr=1e-2)
    train_critic_free(full, reward_model=WordReward())
    half = cf_cfg("grpo", tiny_llama, tmp_path / "b", steps=2, save_every=2, lr=1e-2)
    train_critic_free(half, reward_model=WordReward())
    rest = cf_cfg("grpo", tiny_llama, tmp_path / "b", steps=4, save_every=2, lr=1e-2, resume=True)
    train_critic_free(rest, reward_model=WordReward())
    a, b = rows_of(tmp_path / "a" / "grpo"), rows_of(tmp_path / "b" / "grpo")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("rollout/score_mean", "rollout/kl", "rl/policy_loss"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], abs=1e-6), key


@pytest.mark.parametrize("overrides, key", [
    ({"group_size": 1}, "group_size"),
    ({"advantage": "dr_grpo", "scale": "group"}, "scale"),
    ({"kl_estimator": "k1"}, "kl_estimator"),
    ({"kl_in": "reward", "kl_estimator": "k3_ratio"}, "kl_estimator"),
    ({"ratio": "sequence"}, "ratio"),
    ({"ratio": "sequence", "kl_in": "reward", "kl_estimator": "k1", "clip_range_high": 0.28}, "clip_range_high"),
    ({"top_p": 0.9}, "generation.top_p"),
    ({"batch_size": 3, "group_size": 2, "num_minibatches": 4}, "num_minibatches"),
    ({"policy_loss": "cispo", "ratio": "gspo"}, "policy_loss"),
    ({"policy_loss": "cispo", "ratio": "sequence", "kl_in": "reward", "kl_estimator": "k1"}, "policy_loss"),
    ({"ratio": "gspo", "advantage": "reinforce_pp", "kl_in": "reward", "kl_estimator": "k1"}, "ratio"),
    ({"overlong_buffer": 49}, "overlong_buffer"),  # max_new_tokens 48
    ({"overlong_penalty": 0.5}, "overlong_penalty"),
    ({"dynamic_sampling": True, "advantage": "reinforce_pp", "kl_in": "reward", "kl_estimator": "k1"},
     "dynamic_sampling"),
    ({"dynamic_sampling_rounds": 2}, "dynamic_sampling_rounds"),
])
def test_bad_combinations_are_refused_at_load(overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        build(GRPOConfig, {"prompts": "p", "output": str(tmp_path), **overrides})


def test_each_reward_term_is_logged_weight_zero_included(tiny_llama, tmp_path):
    """`--reward-fn f.py:chars --reward-fn f.py:words=0`: the score is the characters alone, and each term's
    unweighted batch mean is logged as `rollout/reward/<name>` (1 prompt × 4 completions, all in samples)."""
    fn = tmp_path / "terms.py"
    fn.write_text("def chars(prompts, completions):\n    return [len(c) for c in completions]\n\n\n"
                  "def words(prompts, completions):\n    return [len(c.split()) + 1 for c in completions]\n")
    cfg = cf_cfg("grpo", tiny_llama, tmp_path, steps=2, batch_size=1, group_size=4, sample_every=1,
                 reward_fn=[f"{fn}:chars", f"{fn}:words=0"])
    train_critic_free(cfg)
    samples = [json.loads(x) for x in (tmp_path / "grpo" / "samples.jsonl").read_text().splitlines()]
    for r in rows_of(tmp_path / "grpo"):
        responses = [s["response"] for s in samples if s["step"] == r["step"]]
        assert len(responses) == 4
        chars = sum(len(x) for x in responses) / 4
        assert r[f"rollout/reward/{fn}:chars"] == pytest.approx(chars) == r["rollout/score_mean"]
        assert r[f"rollout/reward/{fn}:words"] == pytest.approx(sum(len(x.split()) + 1 for x in responses) / 4)


WORKER = r"""# On each of 2 processes: `update_of` on this process's half of the batch for every combination
# (rank 0 saves deltas-<ratio>-<loss_agg>.pt), then one GRPO step on a single prompt recording this process's
# sampled ids (responses-<rank>.json) and its trainable weights as built, before `prepare` (init-<rank>.json).
import json, os, sys
from pathlib import Path

import torch

from rlhfkit.config import GRPOConfig, build
from rlhfkit.trainers import online
from rlhfkit.trainers.critic_free import train_critic_free
from tests.trainers.test_critic_free import COMBINATIONS, WordReward, update_of

llama, out, prompts, rank = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(os.environ["RANK"])
for ratio, loss_agg in COMBINATIONS:
    delta = update_of(llama, out / f"run-{rank}", ratio, loss_agg, rows=slice(4 * rank, 4 * rank + 4))
    if rank == 0:
        torch.save(delta, out / f"deltas-{ratio}-{loss_agg}.pt")
real_build, real_collect = online.build_actor_critic, online.collect_rollout


def build_spy(*args, **kwargs):
    model = real_build(*args, **kwargs)
    sums = [p.detach().double().sum().item() for p in model.parameters() if p.requires_grad]
    (out / f"init-{rank}.json").write_text(json.dumps(sums))
    return model


def collect_spy(*args, **kwargs):
    roll = real_collect(*args, **kwargs)
    (out / f"responses-{rank}.json").write_text(json.dumps(roll.response_ids.tolist()))
    return roll


online.build_actor_critic, online.collect_rollout = build_spy, collect_spy
cfg = build(GRPOConfig, {"policy": llama, "prompts": prompts, "output": str(out / "grpo"), "steps": 1,
                         "batch_size": 1, "group_size": 4, "max_new_tokens": 6, "dtype": "fp32", "seed": 0})
train_critic_free(cfg, reward_model=WordReward())
"""


def test_two_processes_update_as_one_and_sample_apart(tiny_llama, tmp_path, monkeypatch):
    """`accelerate launch`, 2 CPU processes (gloo). Halves of 29 and 7 tokens make the update one process makes
    on the whole batch, for every ratio × loss_agg (RLOO's sequence loss weighted by tokens did not). Both
    processes sampling the same prompt draw different responses (seed + rank·100003; they drew the same), from
    the same initial weights (LoRA's random A included: built under the shared seed)."""
    from tests.test_distributed import ROOT, launch, run

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "the cat"}) + "\n")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the worker imports this module
    run(launch(str(worker), tiny_llama, str(tmp_path), str(prompts)))
    for ratio, loss_agg in COMBINATIONS:
        one = update_of(tiny_llama, tmp_path / "one", ratio, loss_agg)
        two = torch.load(tmp_path / f"deltas-{ratio}-{loss_agg}.pt")
        for name, delta in one.items():
            torch.testing.assert_close(two[name], delta, atol=5e-6, rtol=0, msg=f"{ratio} {loss_agg} {name}")
    init = [json.loads((tmp_path / f"init-{r}.json").read_text()) for r in (0, 1)]
    assert init[0] == init[1]
    responses = [json.loads((tmp_path / f"responses-{r}.json").read_text()) for r in (0, 1)]
    assert responses[0] != responses[1]


@pytest.mark.parametrize("command", ["grpo", "rloo", "reinforce-pp"])
def test_command_runs_end_to_end_with_a_reward_model(command, tiny_llama, tiny_bert, tmp_path, capsys):
    from rlhfkit.cli import main

    out = tmp_path / command
    assert main([command, "--policy", tiny_llama, "--reward-model", tiny_bert, "--prompts",
                 write_prompts(tmp_path / "prompts.jsonl"), "--output", str(out), "--steps", "2", "--batch-size",
                 "2", "--group-size", "2", "--max-new-tokens", "4", "--dtype", "fp32"]) == 0
    assert "policy saved to" in capsys.readouterr().out
    assert len(rows_of(out)) == 2 and (out / "policy" / "adapter_config.json").is_file()


def test_a_python_reward_function_replaces_the_reward_model(tiny_llama, tmp_path):
    """`--reward-fn file.py:fn` (no RM): the scores logged are the function's (here: the response length in
    characters, weighted 0.5)."""
    from rlhfkit.cli import main

    fn = tmp_path / "my_reward.py"
    fn.write_text("def chars(prompts, completions):\n    return [len(c) for c in completions]\n")
    out = tmp_path / "fn"
    assert main(["grpo", "--policy", tiny_llama, "--reward-fn", f"{fn}:chars=0.5", "--prompts",
                 write_prompts(tmp_path / "prompts.jsonl"), "--output", str(out), "--steps", "1", "--batch-size",
                 "2", "--group-size", "2", "--max-new-tokens", "4", "--dtype", "fp32"]) == 0
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert all(s["score"] == 0.5 * len(s["response"]) for s in samples)
    assert main(["grpo", "--policy", tiny_llama, "--reward-fn", "nosuchmodule_xyz:f", "--prompts", "p",
                 "--output", str(out)]) == 2


def test_verifiable_options_that_fit_together_load(tmp_path):
    """GSPO takes ε_high and a KL loss; CISPO any loss_agg; the overlong buffer may be the whole budget."""
    for overrides in ({"ratio": "gspo", "clip_range": 3e-4, "clip_range_high": 4e-4},
                      {"policy_loss": "cispo", "clip_range_high": 4.0, "loss_agg": "seq_mean_token_sum_norm"},
                      {"overlong_buffer": 48, "overlong_penalty": 0.5, "dynamic_sampling": True,
                       "dynamic_sampling_rounds": 2}):
        build(GRPOConfig, {"prompts": "p", "output": str(tmp_path), **overrides})


# --- verifiable rewards: row fields for reward functions, GSPO, CISPO, DAPO's shaping and sampling -------

ANSWER_MODULE = '''import json, zlib

LOG = {log!r}


def correct(prompts, completions, answer):  # a verifiable check: the row's answer vs the completion
    with open(LOG, "a") as f:
        f.write(json.dumps({{"prompts": prompts, "answer": answer}}) + "\\n")
    return [float(c == a) for c, a in zip(completions, answer)]


def plain(prompts, completions):  # two arguments: keeps working, gets no columns
    return [float(len(c.split())) for c in completions]


def by_answer(prompts, completions, **columns):  # a flat reward for the "flat" rows, a spread for the others
    return [1.0 if a == "flat" else float(zlib.crc32(c.encode()) % 997) for c, a in zip(completions,
                                                                                      columns["answer"])]
'''


def answer_rows(tmp_path, n=8):
    """n prompts, each with an `answer` (flat for even rows) and a `meta` object; the reward module."""
    rows = [{"prompt": f"the cat {i}", "answer": "flat" if i % 2 == 0 else f"ans{i}", "meta": {"i": i}}
            for i in range(n)]
    prompts = tmp_path / "answers.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    module = tmp_path / "checks.py"
    module.write_text(ANSWER_MODULE.format(log=str(tmp_path / "calls.jsonl")))
    return str(prompts), str(module), {r["prompt"]: r for r in rows}


def test_reward_functions_get_each_rows_fields_aligned_with_its_k_completions(tiny_llama, tmp_path):
    """`answer` reaches `correct(prompts, completions, answer)` as a list aligned with the completions: each
    prompt's value repeated for its k = 3 completions; `plain(prompts, completions)` still scores; samples
    record the row's fields."""
    prompts, module, rows = answer_rows(tmp_path)
    cfg = cf_cfg("grpo", tiny_llama, tmp_path, prompts=prompts, steps=2, batch_size=2, group_size=3,
                 sample_every=1, reward_fn=[f"{module}:correct", f"{module}:plain"])
    train_critic_free(cfg)
    calls = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 2
    for call in calls:
        assert len(call["prompts"]) == len(call["answer"]) == 6
        assert call["answer"] == [rows[p]["answer"] for p in call["prompts"]]
        assert all(len(set(call["prompts"][i:i + 3])) == 1 for i in (0, 3))  # a group's k copies together
    assert all(f"rollout/reward/{module}:plain" in r for r in rows_of(tmp_path / "grpo"))
    samples = [json.loads(x) for x in (tmp_path / "grpo" / "samples.jsonl").read_text().splitlines()]
    assert all(s["columns"] == {k: v for k, v in rows[s["prompt"]].items() if k != "prompt"} for s in samples)


def test_a_bad_prompt_row_for_reward_functions_is_a_one_line_error(tiny_llama, tmp_path, capsys):
    from rlhfkit.cli import main

    _, module, _ = answer_rows(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b", "answer": "2"}\n{"prompt": "c"}\n')
    assert main(["grpo", "--policy", tiny_llama, "--reward-fn", f"{module}:plain", "--prompts", str(bad),
                 "--output", str(tmp_path / "out"), "--batch-size", "2", "--group-size", "2"]) == 2
    err = capsys.readouterr().err
    assert err == (f"rlhfkit grpo: error: {bad}:3: field 'answer' is missing; the first row (line 1) has it "
                   "and every row must give the same columns (a reward function gets one value per "
                   "completion)\n")


def spy_steps(monkeypatch) -> list[Rollout]:
    """The rollout each critic-free step trains on."""
    seen, real = [], critic_free.critic_free_step
    monkeypatch.setattr(critic_free, "critic_free_step",
                        lambda cfg, state, roll, *rest: seen.append(roll) or real(cfg, state, roll, *rest))
    return seen


def test_dynamic_sampling_trains_only_on_groups_with_a_reward_spread(tiny_llama, tmp_path, monkeypatch):
    """Half the rows score flat (every completion 1.0): without dynamic sampling some trained groups have zero
    spread; with it, those groups are dropped and more prompts drawn until each batch holds 2 groups with a
    spread (rollout/zero_spread_groups 0, rollout/groups_sampled > 2 on some step), each group whole."""
    prompts, module, rows = answer_rows(tmp_path)
    base = dict(prompts=prompts, steps=3, batch_size=2, group_size=3, reward_fn=[f"{module}:by_answer"])
    train_critic_free(cf_cfg("grpo", tiny_llama, tmp_path / "off", **base))
    assert max(r["rollout/zero_spread_groups"] for r in rows_of(tmp_path / "off" / "grpo")) > 0
    seen = spy_steps(monkeypatch)
    train_critic_free(cf_cfg("grpo", tiny_llama, tmp_path / "on", dynamic_sampling=True, **base))
    metrics = rows_of(tmp_path / "on" / "grpo")
    assert [r["rollout/zero_spread_groups"] for r in metrics] == [0.0] * 3
    assert [r["rollout/groups_short"] for r in metrics] == [0.0] * 3
    assert max(r["rollout/groups_sampled"] for r in metrics) > 2
    assert sum(r["rollout/sampling_rounds"] for r in metrics) > 0
    for roll in seen:
        assert len(roll.prompts) == 6 and all(c["answer"] != "flat" for c in roll.columns)
        assert all(len(set(roll.prompts[i:i + 3])) == 1 for i in (0, 3))
        assert [rows[p]["answer"] for p in roll.prompts] == [c["answer"] for c in roll.columns]
        assert roll.scores.view(2, 3).std(dim=1).min() > 0


def test_dynamic_sampling_completes_a_short_batch_with_dropped_groups(tiny_llama, tmp_path, monkeypatch):
    """Every row flat: no round finds a spread; after the last extra round the batch is the first groups drawn
    (rollout/groups_short = batch_size), and training goes on."""
    prompts, module, rows = answer_rows(tmp_path)
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps({**r, "answer": "flat"}) + "\n" for r in rows.values()))
    seen = spy_steps(monkeypatch)
    train_critic_free(cf_cfg("grpo", tiny_llama, tmp_path, prompts=str(flat), steps=1, batch_size=2,
                             group_size=3, reward_fn=[f"{module}:by_answer"], dynamic_sampling=True,
                             dynamic_sampling_rounds=2))
    (r,) = rows_of(tmp_path / "grpo")
    drawn = (r["rollout/groups_short"], r["rollout/sampling_rounds"], r["rollout/groups_sampled"])
    assert drawn == (2.0, 2.0, 6.0)  # 1 + 2 rounds of 2 groups, none with a spread
    assert r["rollout/zero_spread_groups"] == 1.0 and len(seen[0].prompts) == 6


def test_dynamic_sampling_resume_equals_uninterrupted(tiny_llama, tmp_path):
    """The prompt batches drawn (more than one a step) are in the checkpoint: a resumed run draws the same."""
    prompts, module, _ = answer_rows(tmp_path)
    base = dict(prompts=prompts, batch_size=2, group_size=3, reward_fn=[f"{module}:by_answer"],
                dynamic_sampling=True, save_every=2, lr=1e-2)
    train_critic_free(cf_cfg("grpo", tiny_llama, tmp_path / "a", steps=4, **base))
    train_critic_free(cf_cfg("grpo", tiny_llama, tmp_path / "b", steps=2, **base))
    train_critic_free(cf_cfg("grpo", tiny_llama, tmp_path / "b", steps=4, resume=True, **base))
    a, b = rows_of(tmp_path / "a" / "grpo"), rows_of(tmp_path / "b" / "grpo")
    # extra rounds before the checkpoint: a resume that drew from the step number would draw other prompts
    assert [r["step"] for r in b] == [1, 2, 3, 4] and sum(r["rollout/sampling_rounds"] for r in a[:2]) > 0
    for key in ("rollout/groups_sampled", "rollout/score_mean", "rollout/kl", "rl/policy_loss"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], abs=1e-6), key


def test_shaped_scores_add_the_overlong_term_and_the_missing_eos_penalty(tiny_llama, tmp_path):
    """L_max 8, buffer 4 (penalty from 4 tokens), factor 2, missing-EOS penalty 0.5: lengths 3, 6, 8 (the last
    without EOS): R_len = 0, (4 − 6)/4 = −0.5, (4 − 8)/4 = −1 → s = 1 + 0, 1 − 2·0.5, 1 − 2·1 − 0.5."""
    cfg = cf_cfg("grpo", tiny_llama, tmp_path, group_size=3, batch_size=1, overlong_buffer=4,
                 overlong_penalty=2.0, missing_eos_penalty=0.5)
    mask = (torch.arange(8)[None] < torch.tensor([3, 6, 8])[:, None]).float()
    roll = fake_rollout(torch.ones(3), torch.zeros(3, 8), torch.zeros(3, 8), mask)
    roll.ended = torch.tensor([True, True, False])
    assert critic_free.shaped_scores(cfg, roll).tolist() == pytest.approx([1.0, 0.0, -1.5])


def test_overlong_shaping_is_logged_and_reaches_the_advantages(tiny_llama, tmp_path, monkeypatch):
    """--overlong-buffer 8 = max_new_tokens: R_len = −|y|/8 for every response, logged unweighted as
    rollout/reward/overlong; with a constant reward it alone spreads the groups."""
    seen = spy_steps(monkeypatch)
    cfg = cf_cfg("grpo", tiny_llama, tmp_path, steps=2, overlong_buffer=8, overlong_penalty=0.5)
    train_critic_free(cfg, reward_model=WordReward("never-sampled"))
    for roll, r in zip(seen, rows_of(tmp_path / "grpo")):
        lengths = roll.mask.sum(1).tolist()
        assert r["rollout/reward/overlong"] == pytest.approx(sum(-n / 8 for n in lengths) / len(lengths))
        spread = [len(set(lengths[i:i + 4])) > 1 for i in range(0, len(lengths), 4)]
        assert r["rollout/zero_spread_groups"] == pytest.approx(1 - sum(spread) / len(spread))


@pytest.mark.parametrize("overrides", [{"ratio": "gspo"}, {"policy_loss": "cispo"},
                                       {"ratio": "gspo", "kl_in": "reward", "kl_estimator": "k1"}])
def test_gspo_and_cispo_at_lr0_have_ratio_one_and_no_clipping(overrides, tiny_llama, tmp_path):
    cfg = cf_cfg("grpo", tiny_llama, tmp_path, steps=2, lr=0.0, temperature=0.7, num_iterations=2,
                 clip_range=3e-4, clip_range_high=4e-4, **overrides)
    train_critic_free(cfg, reward_model=WordReward())
    for r in rows_of(tmp_path / "grpo"):
        assert (r["rollout/kl"], r["rl/ratio"], r["rl/first_ratio"], r["rl/clipfrac"]) == (0.0, 1.0, 1.0, 0.0)


@pytest.mark.parametrize("overrides", [{"ratio": "gspo", "clip_range": 3e-4, "clip_range_high": 4e-4},
                                       {"policy_loss": "cispo", "clip_range": 3e-4, "clip_range_high": 4e-4}])
def test_gspo_and_cispo_clip_on_the_second_pass_and_learn(overrides, tiny_llama, tmp_path):
    """Two passes per batch with GSPO's ε (3e-4 / 4e-4): the second pass clips (whole sequences for GSPO,
    importance weights for CISPO, whose clipped tokens keep their gradient); both learn the word reward."""
    cfg = cf_cfg("grpo", tiny_llama, tmp_path, steps=12, batch_size=4, lr=3e-2, use_lora=False, kl_coef=0.01,
                 num_iterations=2, **overrides)
    train_critic_free(cfg, reward_model=WordReward("good", "great", "nice", "happy"))
    rows = rows_of(tmp_path / "grpo")
    assert all(r["rl/first_ratio"] == pytest.approx(1.0, abs=1e-6) for r in rows)
    assert max(r["rl/clipfrac"] for r in rows) > 0.1
    first, last = rows[0]["rollout/score_mean"], sum(r["rollout/score_mean"] for r in rows[-3:]) / 3
    assert last > first + 1.0, (first, last)


def test_dynamic_sampling_on_two_processes_runs_the_same_rounds(tiny_llama, tmp_path):
    """`accelerate launch`, 2 CPU processes, one prompt each per step: one process may find a spread while the
    other draws again; the rounds are decided together (a gathered flag), so both finish, and every trained
    group has a spread."""
    from tests.test_distributed import launch, run

    prompts, module, _ = answer_rows(tmp_path)
    out = tmp_path / "two"
    run(launch("-m", "rlhfkit", "grpo", "--policy", tiny_llama, "--reward-fn", f"{module}:by_answer",
               "--prompts", prompts, "--output", str(out), "--steps", "3", "--batch-size", "1",
               "--group-size", "3", "--max-new-tokens", "6", "--dtype", "fp32", "--dynamic-sampling"))
    metrics = rows_of(out)
    assert [r["rollout/zero_spread_groups"] for r in metrics] == [0.0] * 3
    assert sum(r["rollout/sampling_rounds"] for r in metrics) > 0
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["prompt_batches"] == 3 + sum(r["rollout/sampling_rounds"] for r in metrics)
