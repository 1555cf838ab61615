"""Tokenising and padding: the one preference collator (chosen and rejected stacked into one batch)."""

from __future__ import annotations

import torch


def collate_preferences(encode, pairs) -> dict[str, torch.Tensor]:
    """Stack chosen then rejected so one forward pass scores both.

    Args: encode(prompts, responses) -> dict of [N, L] tensors (the model's own tokenisation);
          pairs: list of PreferencePair (B of them).
    Returns: the encoding of 2B texts (rows 0..B-1 chosen, B..2B-1 rejected) plus `margin` [B]."""
    prompts = [p.prompt for p in pairs]
    batch = dict(encode(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs]))
    batch["margin"] = torch.tensor([p.margin or 0.0 for p in pairs], dtype=torch.float32)  # [B]
    return batch
