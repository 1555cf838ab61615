"""The prompt set shipped with rlhfkit (assets/prompts.jsonl) for the demo and its fixed train/held-out split.

About 300 short instructions written for this project: greetings, everyday questions, advice, short
explanations, small creative tasks and recommendations, where a friendly, positive, helpful answer is natural.
Every 5th line is held out (about 240 train / 60 held-out); the split never changes between versions, so
held-out results stay comparable.
"""

from __future__ import annotations

import json
from importlib.resources import files

SPLITS = ("train", "heldout")


def shipped_prompts(split: str) -> list[str]:
    """The shipped prompts of one split, in file order.

    Args:
        split: "train" (for SFT, reward-model and policy training) or "heldout" (for evaluation only).
    Returns:
        The prompt texts.
    Raises:
        ValueError: an unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    text = (files("rlhfkit") / "assets" / "prompts.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [row["prompt"] for row in rows if row["split"] == split]
