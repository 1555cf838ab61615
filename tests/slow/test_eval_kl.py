"""Evaluation's KL on the embedded SmolLM2-135M: a policy equal to the reference reads 0 in bf16 autocast."""

from pathlib import Path

import pytest

from rlhfkit.config import GenerationConfig
from rlhfkit.eval.compare import evaluate_policies
from rlhfkit.models.load import resolve_model_path
from tests.eval.test_compare import save_equal_policies

pytestmark = pytest.mark.slow

PROMPTS = ["Write a haiku about the sea.", "Explain what a reward model is.", "Name three colours.",
           "Give me a tip for learning Python.", "What is 2 + 2?", "Describe a cat in one sentence.",
           "Why is the sky blue?", "Suggest a name for a dog."]


def test_smollm2_copy_and_fresh_lora_read_kl_zero_in_bf16(tmp_path):
    """Before, log π was the engine's incremental bf16 decode and log π_ref a full forward: a copy of SmolLM2
    and a fresh LoRA adapter on it read KLs from -0.31 to +0.08 nats per response on PROMPTS (24 tokens,
    1 thread; mean -0.12)."""
    reference = str(resolve_model_path("smollm2-135m-instruct"))
    policies = save_equal_policies(reference, Path(tmp_path))
    gen_cfg = GenerationConfig(max_new_tokens=24, temperature=0.7)
    result = evaluate_policies(policies, PROMPTS, reference=reference, gen_cfg=gen_cfg, bf16=True)
    for name in policies:
        kls = [row[name]["kl"] for row in result["rows"]]  # one response per prompt
        assert max(abs(kl) for kl in kls) <= 1e-3, (name, kls)
