"""The reward model: a scalar sequence classifier with its own tokenizer and text template."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.config import DEFAULT_TEMPLATE
from rlhfkit.device import default_device, model_device
from rlhfkit.models.load import load_sequence_classifier, load_tokenizer, resolve_model_path

META_FILE = "rlhfkit_rm.json"


def format_text(template: str, prompt, response: str) -> str:
    """`template` with {prompt} and {response} filled; chat-message prompts are flattened to text."""
    from rlhfkit.data.readers import prompt_text

    return template.format(prompt=prompt_text(prompt), response=response)


def model_folder(path: str | Path) -> Path:
    """An rlhfkit output folder keeps its model in `model/`; any other HF folder is the model itself."""
    path = Path(path)
    return path / "model" if (path / "model" / "config.json").is_file() else resolve_model_path(str(path))


@dataclass
class RewardModel:
    """r_φ(x, y): `model` scores `template.format(prompt=x, response=y)` tokenised by its own `tokenizer`."""

    model: torch.nn.Module
    tokenizer: object
    template: str = DEFAULT_TEMPLATE
    max_length: int = 512

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str | None = None) -> "RewardModel":
        """Load an rlhfkit RM folder (template from its metadata) or any HF sequence-classification folder
        onto `device` (None: `rlhfkit.device.default_device()`, this process's GPU, else the CPU)."""
        folder = model_folder(path)
        meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).is_file() else {}
        tokenizer = load_tokenizer(folder, padding_side="right")
        model = load_sequence_classifier(folder, tokenizer=tokenizer).eval().to(device or default_device())
        return cls(model, tokenizer, meta.get("template", DEFAULT_TEMPLATE), meta.get("max_length", 512))

    def encode(self, prompts, responses) -> dict[str, torch.Tensor]:
        """The template's texts of the (prompt, response) pairs: tokenised, padded, truncated to max_length."""
        texts = [format_text(self.template, p, r) for p, r in zip(prompts, responses, strict=True)]
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar rewards [N] for an encoded batch (with gradients when training)."""
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]

    @torch.no_grad()
    def score(self, prompts, responses, batch_size: int = 32) -> list[float]:
        """r_φ(x, y) for each pair, in batches, on the model's device; returns plain floats."""
        device = model_device(self.model)
        scores: list[float] = []
        for i in range(0, len(prompts), batch_size):
            batch = self.encode(prompts[i : i + batch_size], responses[i : i + batch_size])
            scores += self.forward({k: v.to(device) for k, v in batch.items()}).float().tolist()
        return scores

    def save(self, folder: str | Path) -> None:
        """Save model + tokenizer (safetensors) and the template metadata into `folder`."""
        folder = Path(folder)
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        meta = {"template": self.template, "max_length": self.max_length}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))


def get_reward(model, tokenizer, prompt, response, template: str = DEFAULT_TEMPLATE, max_length: int = 512) -> float:
    """The seed's helper: the reward of one (prompt, response), scored as `"Prompt: {p}\\nResponse: {r}"`."""
    return RewardModel(model, tokenizer, template, max_length).score([prompt], [response])[0]
