"""PPO's bookkeeping by hand, without a model: the missing-EOS penalty, score statistics and the β update,
through `ppo_step` on a hand-made Rollout with a fake `train` callable."""

import numpy as np
import pytest
import torch

from rlhfkit import losses
from rlhfkit.config import PPOConfig, build
from rlhfkit.rollout import Rollout
from rlhfkit.trainers import ppo
from rlhfkit.trainers.online import OnlineState, RunningMoments
from rlhfkit.trainers.ppo import ppo_step

GARBAGE = 1e3  # log-probs at masked positions: they must never reach a result
EOS, PAD = 2, 0


def make_cfg(**kw):
    base = {"prompts": "p.jsonl", "output": "o", "batch_size": 4, "num_minibatches": 2, "ppo_epochs": 1,
            "normalize_scores": False, "score_clip": None, "whiten_rewards": False, "kl_coef": 0.1}
    return build(PPOConfig, {**base, **kw})


def make_rollout(scores, d):
    """B = 4 responses, T = 3. The prompts contain EOS (as a chat template's <|im_end|> does); the responses:
    row 0 "9 EOS" (ended), rows 1-3 without EOS. `d` [B, T] = log π_old − log π_ref on the masked tokens."""
    response_ids = torch.tensor([[9, EOS, PAD], [9, 9, 9], [9, 9, 9], [9, 9, 9]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    ref_logprobs = torch.full((4, 3), -2.0)
    logprobs = torch.where(mask.bool(), ref_logprobs + torch.tensor(d), GARBAGE)
    return Rollout(
        prompts=["a", "b", "c", "d"], query_ids=torch.tensor([[1, 7, EOS, 1]] * 4),
        query_mask=torch.ones(4, 4, dtype=torch.long), response_ids=response_ids, mask=mask,
        responses=["x", "x x x", "x x x", "x x x"], ended=torch.tensor([True, False, False, False]),
        scores=torch.tensor(scores), logprobs=logprobs, ref_logprobs=ref_logprobs, values=torch.zeros(4, 3),
        sample_logprobs=torch.where(mask.bool(), logprobs, 0.0),  # an exact sampler: log μ = log π_old
    )


def fake_train(minibatches):
    def train(mb, advantages, returns):
        minibatches.append(len(mb.prompts))
        return {"ppo/ratio": 1.0, "ppo/policy_loss": 0.0}

    return train


def spy_on_kl_shaped_rewards(monkeypatch):
    calls = []
    real = losses.kl_shaped_rewards

    def spy(scores, logprobs, ref_logprobs, mask, kl_coef, kind="k1"):
        calls.append({"scores": scores.clone(), "kl_coef": kl_coef})
        return real(scores, logprobs, ref_logprobs, mask, kl_coef, kind)

    monkeypatch.setattr(ppo.losses, "kl_shaped_rewards", spy)
    return calls


def test_missing_eos_penalty_hits_only_responses_without_eos(monkeypatch):
    calls = spy_on_kl_shaped_rewards(monkeypatch)
    roll = make_rollout([1.0, 2.0, 3.0, 4.0], [[0.0] * 3] * 4)  # KL 0: the reward is the score alone
    minibatches = []
    torch.manual_seed(0)
    state = OnlineState(kl_ctl=losses.FixedKLController(0.1))
    metrics = ppo_step(make_cfg(missing_eos_penalty=0.5), state, roll, fake_train(minibatches))
    # row 0 ended (its EOS is in the response); rows 1-3 did not, although their prompts hold an EOS:
    # s − 0.5 · [0, 1, 1, 1] = [1, 1.5, 2.5, 3.5]
    assert [c["scores"].tolist() for c in calls] == [[1.0, 1.5, 2.5, 3.5]]
    # Σ_t r_t = s at KL 0: mean (1 + 1.5 + 2.5 + 3.5) / 4 = 2.125 (penalising the ended row instead: 2.375)
    assert metrics["rollout/reward_total"] == pytest.approx(2.125, abs=1e-6)
    assert metrics["rollout/eos_rate"] == pytest.approx(0.25, abs=1e-12)
    assert minibatches == [2, 2]  # 1 epoch × 2 minibatches of 4 / 2


def test_no_penalty_when_off(monkeypatch):
    calls = spy_on_kl_shaped_rewards(monkeypatch)
    roll = make_rollout([1.0, 2.0, 3.0, 4.0], [[0.0] * 3] * 4)
    ppo_step(make_cfg(missing_eos_penalty=0.0), OnlineState(kl_ctl=losses.FixedKLController(0.1)), roll,
             fake_train([]))
    assert calls[0]["scores"].tolist() == [1.0, 2.0, 3.0, 4.0]


# k1 per sequence over the masked tokens: row 0 0.5 + 0.25 = 0.75 (its 3rd token is padding),
# row 1 1 + 1 − 0.5 = 1.5, row 2 0.25 + 0 + 0 = 0.25, row 3 0.5 + 0.5 + 0.9 = 1.9; mean 4.4 / 4 = 1.1
KL_D = [[0.5, 0.25, 0.0], [1.0, 1.0, -0.5], [0.25, 0.0, 0.0], [0.5, 0.5, 0.9]]


@pytest.mark.parametrize(
    "target, expected",
    [
        (1.0, 0.1 * (1 + 0.1 * 4 / 100)),  # e = 1.1 / 1 − 1 = 0.1 (in range): β = 0.1 · 1.004 = 0.1004
        (0.5, 0.1 * (1 + 0.2 * 4 / 100)),  # e = 2.2 − 1 = 1.2 → clipped to 0.2: β = 0.1008
        (11.0, 0.1 * (1 - 0.2 * 4 / 100)),  # e = 0.1 − 1 = −0.9 → clipped to −0.2: β = 0.0992
    ],
)
def test_adaptive_kl_coef_follows_the_batch_kl(monkeypatch, target, expected):
    calls = spy_on_kl_shaped_rewards(monkeypatch)
    roll = make_rollout([0.0] * 4, KL_D)
    state = OnlineState(kl_ctl=losses.AdaptiveKLController(0.1, target=target, horizon=100))
    metrics = ppo_step(make_cfg(target_kl=target, kl_horizon=100), state, roll, fake_train([]))
    assert metrics["rollout/kl"] == pytest.approx(1.1, abs=1e-6)
    # this step's rewards use the β from before the update; n = 4 samples since the last update
    assert calls[0]["kl_coef"] == 0.1 and metrics["ppo/kl_coef"] == 0.1
    assert state.kl_ctl.value == pytest.approx(expected, abs=1e-9)


def test_fixed_kl_coef_stays():
    state = OnlineState(kl_ctl=losses.FixedKLController(0.1))
    for _ in range(3):
        ppo_step(make_cfg(), state, make_rollout([0.0] * 4, KL_D), fake_train([]))
    assert state.kl_ctl.value == 0.1


def test_running_moments_equal_the_statistics_of_everything_seen():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=n) for n in (3, 5, 8, 1, 6)]
    moments = RunningMoments()
    seen = []
    for batch in batches:
        x = torch.tensor(batch, dtype=torch.float64)
        moments.update(x)
        seen.extend(batch)
        # normalize = (x − mean) / std over every score seen so far (population variance), as numpy gives it
        expected = (batch - np.mean(seen)) / np.std(seen)
        np.testing.assert_allclose(moments.normalize(x).numpy(), expected, atol=1e-6, rtol=0)


def test_ppo_step_normalises_scores_with_the_running_statistics(monkeypatch):
    calls = spy_on_kl_shaped_rewards(monkeypatch)
    state = OnlineState(kl_ctl=losses.FixedKLController(0.1))
    cfg = make_cfg(normalize_scores=True, missing_eos_penalty=1.0)
    raw = [[1.0, 2.0, 3.0, 4.0], [0.0, 4.0, 8.0, 2.0]]
    for scores in raw:
        ppo_step(cfg, state, make_rollout(scores, [[0.0] * 3] * 4), fake_train([]))
    # the penalty comes first (rows 1-3 lose 1), then normalisation over both batches so far:
    # batch 1 [1, 1, 2, 3], batch 2 [0, 3, 7, 1]; all 8: mean 18 / 8 = 2.25, population std of them
    seen = np.array([1.0, 1.0, 2.0, 3.0, 0.0, 3.0, 7.0, 1.0])
    expected = (seen[4:] - seen.mean()) / seen.std()
    np.testing.assert_allclose(calls[1]["scores"].numpy(), expected, atol=1e-5, rtol=0)
