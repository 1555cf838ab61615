"""Tests for rlhfkit.eval.gold (the simulated annotator) and rlhfkit.eval.prompts (the shipped prompt set)."""

from __future__ import annotations

import math

import pytest

from rlhfkit.eval.gold import (
    gold_reward,
    gold_rewards,
    label_pairs,
    length_penalty,
    vader_compound,
)
from rlhfkit.eval.prompts import shipped_prompts

POSITIVE = "I'd love to help! That's a great question, and here is a friendly, wonderful answer."
NEGATIVE = "That is a terrible, stupid question. I hate it and I won't help."
NEUTRAL_WORD = "word"  # not in VADER's lexicon, so padding with it leaves the compound unchanged


# --- gold_reward -------------------------------------------------------------------------------------------


def test_positive_response_beats_negative_response():
    assert vader_compound(POSITIVE) > 0.5
    assert vader_compound(NEGATIVE) < -0.5
    assert gold_reward("Can you help?", POSITIVE) > gold_reward("Can you help?", NEGATIVE)


def test_short_response_is_its_sentiment():
    # fewer than 60 words: no length penalty, gold == VADER compound
    assert len(POSITIVE.split()) < 60
    assert gold_reward("q", POSITIVE) == vader_compound(POSITIVE)


@pytest.mark.parametrize("n_words, penalty", [(0, 0.0), (59, 0.0), (60, 0.0), (61, 0.01), (100, 0.4)])
def test_length_penalty_arithmetic(n_words, penalty):
    # 0.01 · max(0, n - 60): 61 → 0.01, 100 → 0.01 · 40 = 0.4
    assert length_penalty(n_words) == pytest.approx(penalty, abs=1e-12)


def test_long_response_pays_the_length_penalty():
    short = "I love this, thank you!"  # 5 words
    long = short + (" " + NEUTRAL_WORD) * 95  # 100 words, same sentiment
    assert len(long.split()) == 100
    assert vader_compound(long) == vader_compound(short)
    # 100 words → penalty 0.01 · (100 - 60) = 0.4
    assert gold_reward("q", long) == pytest.approx(vader_compound(short) - 0.4, abs=1e-12)
    assert gold_reward("q", short) - gold_reward("q", long) == pytest.approx(0.4, abs=1e-12)


@pytest.mark.parametrize("response", ["", "   ", "\n\t "])
def test_empty_response_penalty(response):
    assert gold_reward("Say hi", response) == -0.5  # compound 0.0 - 0.5


def test_gold_rewards_matches_gold_reward():
    prompts, responses = ["a", "b", "c"], [POSITIVE, NEGATIVE, ""]
    assert gold_rewards(prompts, responses) == [gold_reward(p, r) for p, r in zip(prompts, responses)]
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        gold_rewards(["a", "b"], [POSITIVE])


# --- label_pairs -------------------------------------------------------------------------------------------

PROMPTS = ["p0", "p1", "p2"]
RESPONSES = [["a", "b", "c", "d"], ["e", "f", "g", "h"], ["i", "j", "k", "l"]]
SCORES = [[0.9, 0.1, -0.5, 0.3], [0.0, 0.2, 0.4, 0.6], [-1.0, 1.0, 0.5, -0.2]]


def test_label_pairs_is_deterministic_given_the_seed():
    first = label_pairs(PROMPTS, RESPONSES, SCORES, temperature=0.5, seed=11, pairs_per_prompt=3)
    again = label_pairs(PROMPTS, RESPONSES, SCORES, temperature=0.5, seed=11, pairs_per_prompt=3)
    other = label_pairs(PROMPTS, RESPONSES, SCORES, temperature=0.5, seed=12, pairs_per_prompt=3)
    assert first == again
    assert first != other


def test_label_pairs_output_fields_and_distinct_pairs():
    pairs = label_pairs(PROMPTS, RESPONSES, SCORES, temperature=0.5, seed=0, pairs_per_prompt=3)
    assert len(pairs) == 3 * 3
    for index, prompt in enumerate(PROMPTS):
        own = [pair for pair in pairs if pair["prompt"] == prompt]
        assert len({frozenset((pair["chosen"], pair["rejected"])) for pair in own}) == 3  # distinct pairs
        for pair in own:
            score = dict(zip(RESPONSES[index], SCORES[index]))
            assert pair["gold_chosen"] == score[pair["chosen"]]
            assert pair["gold_rejected"] == score[pair["rejected"]]
            assert pair["gold_agrees"] == (pair["gold_chosen"] > pair["gold_rejected"])


def test_label_pairs_caps_at_the_number_of_distinct_pairs():
    # 4 responses → C(4, 2) = 6 pairs, even if more are asked for
    pairs = label_pairs(["p"], [["a", "b", "c", "d"]], [[0.1, 0.2, 0.3, 0.4]], 0.0, 0, pairs_per_prompt=10)
    assert len(pairs) == 6


def test_label_pairs_skips_identical_texts():
    # "a" and " a " are the same text after stripping; only ("a", "b") and (" a ", "b") remain
    pairs = label_pairs(["p"], [["a", " a ", "b"]], [[0.0, 0.5, 1.0]], 1.0, 0, pairs_per_prompt=10)
    assert len(pairs) == 2
    assert all(pair["chosen"].strip() != pair["rejected"].strip() for pair in pairs)


def test_temperature_zero_always_agrees_with_gold_and_skips_ties():
    scores = [[0.9, 0.1, -0.5, 0.3], [0.2, 0.2, 0.4, 0.6], [-1.0, 1.0, 0.5, -0.2]]  # one tie in prompt 1
    pairs = label_pairs(PROMPTS, RESPONSES, scores, temperature=0.0, seed=0, pairs_per_prompt=6)
    assert len(pairs) == 6 + 5 + 6  # the tie (e, f) is skipped
    assert all(pair["gold_agrees"] for pair in pairs)
    assert all(pair["gold_chosen"] > pair["gold_rejected"] for pair in pairs)


def test_high_temperature_disagrees_sometimes():
    # gaps of 0.1 at τ = 10: P(agree) = σ(0.01) ≈ 0.5025, so about half disagree
    responses = [[f"r{i}_{k}" for k in range(4)] for i in range(200)]
    scores = [[0.0, 0.1, 0.2, 0.3]] * 200
    pairs = label_pairs([f"p{i}" for i in range(200)], responses, scores, 10.0, 0, pairs_per_prompt=6)
    disagree_rate = sum(not pair["gold_agrees"] for pair in pairs) / len(pairs)
    assert 0.35 < disagree_rate < 0.65  # 1200 pairs: ±3σ ≈ ±0.043 around 0.5


def test_moderate_temperature_follows_bradley_terry():
    # one gap of 1.0 at τ = 1: P(agree) = σ(1) ≈ 0.731; 2000 prompts → std ≈ 0.0099
    n = 2000
    pairs = label_pairs(["p"] * n, [["low", "high"]] * n, [[0.0, 1.0]] * n, 1.0, 0, pairs_per_prompt=1)
    agree_rate = sum(pair["gold_agrees"] for pair in pairs) / n
    assert agree_rate == pytest.approx(1 / (1 + math.exp(-1)), abs=0.04)


def test_label_pairs_rejects_bad_inputs():
    with pytest.raises(ValueError, match="one of each per prompt"):
        label_pairs(["p"], [], [], 1.0, 0, 1)
    with pytest.raises(ValueError, match="prompt 0: 2 responses but 1 gold scores"):
        label_pairs(["p"], [["a", "b"]], [[0.0]], 1.0, 0, 1)
    with pytest.raises(ValueError, match="temperature"):
        label_pairs(["p"], [["a", "b"]], [[0.0, 1.0]], -1.0, 0, 1)
    with pytest.raises(ValueError, match="pairs_per_prompt"):
        label_pairs(["p"], [["a", "b"]], [[0.0, 1.0]], 1.0, 0, 0)


# --- shipped prompts ---------------------------------------------------------------------------------------


def test_shipped_prompts_split_sizes_no_duplicates_no_overlap():
    train, heldout = shipped_prompts("train"), shipped_prompts("heldout")
    assert (len(train), len(heldout)) == (240, 60)
    normalised_train = {prompt.strip().lower() for prompt in train}
    normalised_heldout = {prompt.strip().lower() for prompt in heldout}
    assert len(normalised_train) == len(train)
    assert len(normalised_heldout) == len(heldout)
    assert not normalised_train & normalised_heldout


def test_shipped_prompts_are_short_instructions():
    for prompt in shipped_prompts("train") + shipped_prompts("heldout"):
        assert prompt == prompt.strip() and 0 < len(prompt.split()) <= 20


def test_shipped_prompts_rejects_unknown_split():
    with pytest.raises(ValueError, match="train, heldout"):
        shipped_prompts("test")


def test_min_gap_skips_near_ties():
    from rlhfkit.eval.gold import label_pairs

    # gaps: (0,1) 0.05, (0,2) 0.5, (1,2) 0.45 -> only the two wide pairs are labelled with min_gap 0.3
    pairs = label_pairs(["p"], [["a", "b", "c"]], [[0.0, 0.05, 0.5]], temperature=0.0, seed=0,
                        pairs_per_prompt=3, min_gap=0.3)
    assert sorted((p["chosen"], p["rejected"]) for p in pairs) == [("c", "a"), ("c", "b")]


def test_label_pairs_never_labels_an_empty_response():
    # exact sampling lets a policy end with EOS at once: "" is no answer, so it is never chosen or rejected
    pairs = label_pairs(["p"], [["", "  ", "good", "bad"]], [[0.0, 0.1, 0.9, -0.5]], temperature=0.0, seed=0,
                        pairs_per_prompt=6)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("good", "bad")]
