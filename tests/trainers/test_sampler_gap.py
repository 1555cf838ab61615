"""The sampler's gap to the trainer in the critic-free trainers (GRPO's one-update shortcut included, where
log π_old is the update's own forward) and truncated importance sampling per token and per sequence."""

import pytest

import rlhfkit.engine
from rlhfkit.trainers.critic_free import train_critic_free
from tests.trainers.test_critic_free import cf_cfg, rows_of
from tests.trainers.test_ppo import WordReward


@pytest.mark.parametrize("algo, extra", [("grpo", {}), ("grpo", {"num_iterations": 2}), ("rloo", {}),
                                         ("reinforce_pp", {})])
def test_gap_is_logged_and_tis_weights_are_one_for_an_exact_sampler(algo, extra, tiny_llama, tmp_path):
    cfg = cf_cfg(algo, tiny_llama, tmp_path, steps=2, lr=1e-2, temperature=0.7, tis_cap=2.0, **extra)
    train_critic_free(cfg, reward_model=WordReward())
    for r in rows_of(tmp_path / algo):
        assert abs(r["rollout/sampler_kl"]) < 1e-5 and r["rollout/sampler_logprob_gap_max"] < 1e-4
        assert r["rl/tis_weight"] == pytest.approx(1.0, abs=1e-3) and r["rl/tis_truncated"] == 0.0


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_a_perturbed_sampler_is_seen_and_reweighted(algo, tiny_llama, tmp_path, monkeypatch):
    """A sampler that draws at τ/4 (and reports those log-probs): per-token weights (GRPO) and per-sequence
    weights (RLOO's sequence ratio, a product over the tokens: below 1 here) move off 1; some tokens reach the
    cap."""
    honest = rlhfkit.engine.sample_tokens
    monkeypatch.setattr(rlhfkit.engine, "sample_tokens",
                        lambda logits, temperature, generator=None: honest(logits, temperature / 4, generator))
    cfg = cf_cfg(algo, tiny_llama, tmp_path, steps=2, lr=1e-2, temperature=0.7, tis_cap=1.5)
    train_critic_free(cfg, reward_model=WordReward())
    for r in rows_of(tmp_path / algo):
        assert r["rollout/sampler_kl"] > 1e-2
        assert abs(r["rl/tis_weight"] - 1) > 1e-2
        if algo == "grpo":
            assert r["rl/tis_truncated"] > 0  # measured 0.21, 0.38 of the tokens at the cap
        else:
            assert r["rl/tis_weight"] < 0.9  # measured 0.03, 0.59: sequences the sharp sampler preferred
