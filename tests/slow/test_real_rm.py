"""End-to-end on the real embedded MiniLM: a reward model learns a clear preference; the seed's checks pass."""

import pytest

from rlhfkit.config import RMConfig, build
from rlhfkit.models.reward import RewardModel
from rlhfkit.trainers.rm import train_reward_model
from tests.fixtures.clear_prefs import write_clear_prefs

pytestmark = pytest.mark.slow

SEED_EXAMPLES = [  # seed section 6
    ("Explain the concept of machine learning.",
     "Machine learning is a branch of artificial intelligence that enables computers to learn from data and "
     "improve their performance on a task without being explicitly programmed. It works by identifying "
     "patterns in data and using those patterns to make predictions or decisions.",
     "Machine learning is when computers do stuff with data."),
    ("Write a poem about the moon.",
     "Silver orb in midnight sky,\nSilent guardian watching high.\nCasting light on dreams below,\n"
     "Ancient wisdom you bestow.\nCraters tell your timeless tale,\nAs you wax and as you wane.",
     "Moon is big. Moon is bright. Moon is in the sky at night."),
]


def test_minilm_rm_learns_and_passes_seed_checks(tmp_path):
    train, held_out = write_clear_prefs(tmp_path)
    cfg = build(RMConfig, {"data": train, "eval_data": held_out, "base": "minilm-l6",
                           "output": str(tmp_path / "rm"), "seed": 0})
    final = train_reward_model(cfg)
    assert final["eval_accuracy"] >= 0.9
    rm = RewardModel.from_pretrained(tmp_path / "rm")
    for prompt, good, bad in SEED_EXAMPLES:
        good_reward, bad_reward = rm.score([prompt, prompt], [good, bad])
        assert good_reward > bad_reward, prompt
