"""Model loading (aliases, pad token, dropout, LoRA) and the reward model."""
