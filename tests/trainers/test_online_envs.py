"""The online loop with an environment (--env, --max-turns): multi-turn GRPO and PPO on a tiny random Llama.
Step-0 invariants, environment tokens outside every loss, KL and gradient, episode metrics and rewards, exact
resume, the calculator from the command line, refused combinations."""

import json

import pytest
import torch

from rlhfkit import losses
from rlhfkit.config import GRPOConfig, PPOConfig, build
from rlhfkit.errors import ConfigError
from rlhfkit.trainers import critic_free, online
from rlhfkit.trainers.critic_free import train_critic_free
from rlhfkit.trainers.ppo import train_ppo
from tests.trainers.test_critic_free import cf_cfg, rows_of
from tests.trainers.test_ppo import ppo_cfg

ENVS = '''
class Nudge:
    """Says "the cat is good" after every turn; done when a completion holds "good" (reward 1), else reward 0.
    A completion's text also decides how many turns an episode plays."""

    def reset(self, row):
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, messages, completion):
        if "good" in completion.split():
            return None, 1.0, True
        return [{"role": "user", "content": "the cat is good"}], 0.0, False
'''


def env_spec(tmp_path) -> str:
    path = tmp_path / "my_envs.py"
    path.write_text(ENVS)
    return f"{path}:Nudge"


def samples_of(path):
    return [json.loads(x) for x in (path / "samples.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_lr0_multi_turn_run_has_ratio_one_kl_zero_and_no_sampler_gap(algo, tiny_llama, tmp_path):
    """At lr 0 with 3 turns: ratio 1, KL 0, and the trainer's log π_old equals the sampler's on every policy
    token (fp32): an environment token counted in the mask would show as a gap of several nats (the
    sampler's log-prob there is 0). Episode metrics are logged; samples hold the conversation."""
    kw = dict(steps=2, lr=0.0, temperature=0.7, env=env_spec(tmp_path), max_turns=3, sample_every=1)
    if algo == "grpo":
        train_critic_free(cf_cfg("grpo", tiny_llama, tmp_path, num_iterations=2, **kw))  # a log π_old pass
        group, out = "rl", tmp_path / "grpo"
    else:
        train_ppo(ppo_cfg(tiny_llama, tmp_path, **kw))
        group, out = "ppo", tmp_path / "ppo"
    rows = rows_of(out)
    for r in rows:
        assert (r["rollout/kl"], r["rollout/kl_k3"], r[f"{group}/ratio"], r[f"{group}/first_ratio"]) == (
            0.0, 0.0, 1.0, 1.0)
        assert r["rollout/sampler_logprob_gap_max"] < 1e-5
        assert 1.0 <= r["rollout/turns_mean"] <= 3.0 and 0.0 <= r["rollout/multi_turn_rate"] <= 1.0
        assert r["rollout/episode_reward"] == r["rollout/score_mean"] == pytest.approx(r["rollout/reward/env"])
        assert 0.0 < r["rollout/turn_len"] <= 8.0  # max_new_tokens per turn
    assert any(r["rollout/multi_turn_rate"] > 0 for r in rows)  # some episodes did play several turns
    for s in samples_of(out):
        assistant = [m["content"] for m in s["conversation"] if m["role"] == "assistant"]
        assert len(assistant) == s["turns"] and assistant[-1] == s["response"]
        assert s["score"] == float("good" in s["response"].split())


def test_environment_tokens_reach_no_loss_kl_or_gradient(tiny_llama, tmp_path):
    """One multi-turn rollout, GRPO's loss (clipped ratio + β·k3·ρ, TIS weights) and PPO's (clipped policy
    loss, value loss, KL-shaped rewards through GAE): the gradient with respect to the log-probs is exactly
    0 on environment tokens (and not on policy tokens), and garbage written into the old, reference and
    sampler log-probs and values of the environment tokens changes no loss and no KL."""
    cfg = cf_cfg("grpo", tiny_llama, tmp_path, env=env_spec(tmp_path), max_turns=3, kl_coef=0.1,
                 temperature=0.7)
    actor_critic, ref_lm, tokenizer, reward = online.build_models(cfg, with_value=True)
    torch.manual_seed(0)
    roll = online.collect_rollout(actor_critic, ref_lm, tokenizer, reward, ["the cat", "a dog"] * 4,
                                  cfg.generation, make_env=online.load_environment(cfg.env), max_turns=3)
    env_tokens = (roll.mask == 0) & (roll.response_ids != tokenizer.pad_token_id)  # not the padding after
    assert env_tokens.any() and roll.mask.any()
    advantages = torch.linspace(-1.0, 1.0, len(roll.prompts))  # [B]
    logprobs, values, _ = actor_critic(roll.input_ids, roll.attention_mask, roll.query_ids.shape[1],
                                       roll.response_ids, cfg.generation.temperature)
    logprobs = logprobs.detach().requires_grad_()  # the leaf the gradient is taken against [B, T]

    def grpo_loss(r):
        return critic_free.policy_loss(cfg, logprobs, r, advantages, 0.1, online.tis_weights(cfg, r))[0]

    def ppo_loss(r):
        rewards, _ = losses.kl_shaped_rewards(r.scores, r.logprobs, r.ref_logprobs, r.mask, 0.1)
        adv, returns = losses.gae(rewards, r.values, r.mask, 1.0, 0.95)  # [B, T] each
        pg, _ = losses.ppo_policy_loss(logprobs, r.logprobs, adv, r.mask, 0.2, online.tis_weights(cfg, r))
        return pg + losses.ppo_value_loss(values.detach(), r.values, returns, r.mask)[0]

    roll.values = values.detach()
    for loss_of in (grpo_loss, ppo_loss):
        loss = loss_of(roll)
        (grad,) = torch.autograd.grad(loss, logprobs)
        assert (grad[env_tokens] == 0).all() and (grad[roll.mask.bool()] != 0).any()
        garbled = roll.select(torch.arange(len(roll.prompts)))
        for key in ("logprobs", "ref_logprobs", "sample_logprobs", "values"):
            setattr(garbled, key, torch.where(env_tokens, 3.0, getattr(roll, key)))
        assert loss_of(garbled).item() == loss.item()
        kl = online.update_kl_controller(online.OnlineState(kl_ctl=losses.FixedKLController(0.1)), garbled)
        assert torch.equal(kl, online.update_kl_controller(
            online.OnlineState(kl_ctl=losses.FixedKLController(0.1)), roll))


def test_episode_score_is_the_step_rewards_plus_the_reward_functions_on_the_last_message(tiny_llama, tmp_path):
    fn = tmp_path / "chars.py"
    fn.write_text("def chars(prompts, completions):\n    return [len(c) for c in completions]\n")
    cfg = cf_cfg("grpo", tiny_llama, tmp_path, steps=2, env=env_spec(tmp_path), max_turns=3, sample_every=1,
                 reward_fn=[f"{fn}:chars=0.5"])
    train_critic_free(cfg)
    for s in samples_of(tmp_path / "grpo"):
        assert s["score"] == pytest.approx(float("good" in s["response"].split()) + 0.5 * len(s["response"]))
    for r in rows_of(tmp_path / "grpo"):
        assert r["rollout/score_mean"] == pytest.approx(r["rollout/reward/env"] + 0.5 * r[f"rollout/reward/{fn}:chars"])


def test_multi_turn_resume_equals_uninterrupted(tiny_llama, tmp_path):
    kw = dict(env=env_spec(tmp_path), max_turns=3, save_every=2, lr=1e-2)
    train_critic_free(cf_cfg("grpo", tiny_llama, tmp_path / "a", steps=4, **kw))
    train_critic_free(cf_cfg("grpo", tiny_llama, tmp_path / "b", steps=2, **kw))
    train_critic_free(cf_cfg("grpo", tiny_llama, tmp_path / "b", steps=4, resume=True, **kw))
    a, b = rows_of(tmp_path / "a" / "grpo"), rows_of(tmp_path / "b" / "grpo")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("rollout/score_mean", "rollout/turns_mean", "rollout/kl", "rl/policy_loss"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], abs=1e-6), key


def test_grpo_with_the_calculator_runs_from_the_command_line(tiny_llama, tmp_path, capsys):
    """`rlhfkit grpo --env rlhfkit.envs:Calculator --max-turns 3` on rows with an `answer`, no reward model:
    2 steps; the random model never writes <calc>, so every episode is graded on its first answer (0)."""
    from rlhfkit.cli import main

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"the cat {i}", "answer": i}) + "\n" for i in range(4)))
    out = tmp_path / "calc"
    assert main(["grpo", "--policy", tiny_llama, "--env", "rlhfkit.envs:Calculator", "--max-turns", "3",
                 "--prompts", str(rows), "--output", str(out), "--steps", "2", "--batch-size", "2",
                 "--group-size", "2", "--max-new-tokens", "4", "--dtype", "fp32", "--sample-every", "1"]) == 0
    assert "policy saved to" in capsys.readouterr().out
    metrics = rows_of(out)
    assert len(metrics) == 2 and all(r["rollout/reward/env"] == 0.0 and r["rollout/turns_mean"] == 1.0
                                     for r in metrics)
    conversation = samples_of(out)[0]["conversation"]
    assert conversation[0]["role"] == "system" and "<calc>" in conversation[0]["content"]
    # refused before any work, one line each
    for flags, message in [
        (["--max-turns", "3"], "config key 'max_turns': 3 turns need an environment"),
        (["--env", "rlhfkit.envs:Nope"], "config key 'env': 'rlhfkit.envs' has no attribute 'Nope'"),
        (["--env", "Calculator"], "config key 'env': 'Calculator' is not module:Name"),
    ]:
        assert main(["grpo", "--policy", tiny_llama, "--prompts", str(rows), "--output", str(tmp_path / "x"),
                     "--batch-size", "2", "--group-size", "2", *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("cls, overrides, key", [
    (GRPOConfig, {"max_turns": 2}, "max_turns"),
    (PPOConfig, {"max_turns": 2}, "max_turns"),
    (GRPOConfig, {"env": "rlhfkit.envs:Calculator", "max_turns": 2, "overlong_buffer": 8}, "overlong_buffer"),
    (GRPOConfig, {"env": "no colon"}, "env"),
])
def test_bad_env_combinations_are_refused_at_load(cls, overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        build(cls, {"prompts": "p", "output": str(tmp_path), **overrides})


def test_env_combinations_that_work_load(tmp_path):
    """PPO takes an environment (the masks keep GAE on policy tokens), one turn with shaping too, and the
    Dr. GRPO normaliser counts every turn's budget."""
    build(PPOConfig, {"prompts": "p", "output": str(tmp_path), "env": "rlhfkit.envs:Calculator", "max_turns": 3})
    one = build(GRPOConfig, {"prompts": "p", "output": str(tmp_path), "env": "rlhfkit.envs:Calculator",
                             "overlong_buffer": 8})
    assert one.policy_token_budget == 48
    three = build(GRPOConfig, {"prompts": "p", "output": str(tmp_path), "env": "rlhfkit.envs:Calculator",
                               "max_turns": 3, "loss_agg": "seq_mean_token_sum_norm"})
    assert three.policy_token_budget == 3 * 48
