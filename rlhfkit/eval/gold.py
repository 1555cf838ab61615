"""The simulated annotator: a known "gold" reward and Bradley–Terry preference labels drawn from it.

In the demo the gold reward stands in for the humans whose preferences RLHF learns. It is what a person would
agree with: positive, friendly, helpful-sounding responses that are concise. Because it is known, a run can
measure how well the learned (proxy) reward model tracks it and whether PPO/DPO over-optimise the proxy.

    gold(prompt, response) = vader_compound(response) - length_penalty(n_words) - 0.5·[response is blank]
    length_penalty(n) = 0.01 · max(0, n - 60),   n = len(response.split())
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections.abc import Sequence

MAX_WORDS = 60  # responses up to this many words carry no length penalty
PENALTY_PER_WORD = 0.01  # per word beyond MAX_WORDS: 100 extra words cost 1.0, half VADER's range
EMPTY_PENALTY = 0.5  # an empty or whitespace-only response


@functools.lru_cache(maxsize=1)
def _analyzer():
    # imported and built here so the lexicon is loaded once per process, and only when gold is used
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_compound(text: str) -> float:
    """VADER's compound sentiment of `text` (Hutto & Gilbert 2014), in [-1, 1]; 0.0 for neutral or empty text.

    Deterministic: VADER is a lexicon and rule based scorer with no randomness.
    """
    return float(_analyzer().polarity_scores(text)["compound"])


def length_penalty(n_words: int, max_words: int = MAX_WORDS, per_word: float = PENALTY_PER_WORD) -> float:
    """per_word · max(0, n_words - max_words): e.g. 100 words → 0.01 · 40 = 0.4."""
    return per_word * max(0, n_words - max_words)


def gold_reward(prompt: str, response: str) -> float:
    """The gold preference score of one response: sentiment minus a length penalty, minus 0.5 if blank.

    gold = vader_compound(response) - 0.01·max(0, n_words - 60) - 0.5·[response.strip() == ""], with
    n_words = len(response.split()). Higher is better; in [-1, 1] for non-blank responses of up to 60 words.

    Args:
        prompt: unused; kept so the signature matches a reward model's `get_reward(prompt, response)` and a
            prompt-aware gold can replace this one.
        response: the response text only.
    Returns:
        The gold reward, a float.
    """
    del prompt
    blank_penalty = EMPTY_PENALTY if not response.strip() else 0.0
    return vader_compound(response) - length_penalty(len(response.split())) - blank_penalty


def gold_rewards(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """`gold_reward` for each (prompt, response) pair, in order.

    Raises:
        ValueError: prompts and responses differ in length.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; pass one per prompt")
    return [gold_reward(prompt, response) for prompt, response in zip(prompts, responses)]


def label_pairs(
    prompts: Sequence[str],
    responses_per_prompt: Sequence[Sequence[str]],
    gold_scores: Sequence[Sequence[float]],
    temperature: float,
    seed: int,
    pairs_per_prompt: int,
    min_gap: float = 0.0,
) -> list[dict]:
    """Preference pairs labelled by a noisy simulated annotator following the Bradley–Terry model.

    For each prompt with K responses y_1..y_K and gold scores g_1..g_K:
      1. candidates = pairs (i, j), i < j, of non-empty responses (a policy may end at once with EOS) whose
         texts differ after stripping whitespace and whose gold scores
         differ by at least `min_gap` (an annotator skips near-ties, as human raters are allowed to); at
         temperature 0 also pairs whose gold scores differ (a tie has no argmax, so it is skipped).
      2. sample min(pairs_per_prompt, len(candidates)) distinct candidates without replacement.
      3. label each: P(y_i ≻ y_j) = σ((g_i - g_j) / temperature) (Bradley & Terry 1952); at temperature 0 the
         higher gold score always wins. Larger temperatures mean noisier annotators; a tie is a coin flip.
    One `random.Random(seed)` drives steps 2 and 3, so the same inputs and seed give the same pairs.

    Args:
        prompts: [N] prompts.
        responses_per_prompt: [N][K_n] sampled responses per prompt (K may differ between prompts).
        gold_scores: [N][K_n] `gold_reward` of each response.
        temperature: annotator noise τ >= 0.
        seed: seeds the sampling and the labels.
        pairs_per_prompt: how many pairs to draw per prompt, >= 1.
        min_gap: smallest |g_i - g_j| that gets labelled (0 labels every pair).
    Returns:
        One dict per labelled pair, prompts in order: {"prompt", "chosen", "rejected", "gold_chosen",
        "gold_rejected", "gold_agrees"}, where gold_agrees is gold_chosen > gold_rejected (False on a tie).
    Raises:
        ValueError: mismatched lengths, temperature < 0 or pairs_per_prompt < 1.
    """
    _check_label_inputs(prompts, responses_per_prompt, gold_scores, temperature, pairs_per_prompt)
    rng = random.Random(seed)
    labelled = []
    for prompt, responses, scores in zip(prompts, responses_per_prompt, gold_scores):
        candidates = [
            (i, j)
            for i, j in itertools.combinations(range(len(responses)), 2)
            if responses[i].strip() != responses[j].strip()
            and responses[i].strip() and responses[j].strip()  # an empty response is no answer to rank
            and (temperature > 0 or scores[i] != scores[j])
            and abs(scores[i] - scores[j]) >= min_gap
        ]
        for i, j in rng.sample(candidates, min(pairs_per_prompt, len(candidates))):
            if temperature == 0:
                is_i_preferred = scores[i] > scores[j]
            else:
                is_i_preferred = rng.random() < _sigmoid((scores[i] - scores[j]) / temperature)
            chosen, rejected = (i, j) if is_i_preferred else (j, i)
            labelled.append(
                {
                    "prompt": prompt,
                    "chosen": responses[chosen],
                    "rejected": responses[rejected],
                    "gold_chosen": float(scores[chosen]),
                    "gold_rejected": float(scores[rejected]),
                    "gold_agrees": bool(scores[chosen] > scores[rejected]),
                }
            )
    return labelled


def _sigmoid(x: float) -> float:
    """σ(x) = 1 / (1 + e^-x), written so that exp never overflows for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    exp_x = math.exp(x)
    return exp_x / (1.0 + exp_x)


def _check_label_inputs(prompts, responses_per_prompt, gold_scores, temperature, pairs_per_prompt) -> None:
    if not len(prompts) == len(responses_per_prompt) == len(gold_scores):
        raise ValueError(
            f"got {len(prompts)} prompts, {len(responses_per_prompt)} response lists and {len(gold_scores)} "
            "score lists; pass one of each per prompt"
        )
    for index, (responses, scores) in enumerate(zip(responses_per_prompt, gold_scores)):
        if len(responses) != len(scores):
            raise ValueError(f"prompt {index}: {len(responses)} responses but {len(scores)} gold scores")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if pairs_per_prompt < 1:
        raise ValueError(f"pairs_per_prompt must be >= 1, got {pairs_per_prompt}")
