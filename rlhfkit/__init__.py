"""rlhfkit: SFT, reward models, PPO, GRPO, RLOO, REINFORCE++ and DPO that run on a CPU laptop and scale out
with accelerate.

One config class and one function per command (`rlhfkit.api`), plus the reward model:

    import rlhfkit
    metrics = rlhfkit.train_sft(model="smollm2-135m-instruct", data="demos.jsonl", output="runs/sft")
    rlhfkit.train_reward_model(rlhfkit.RMConfig(data="prefs.jsonl", output="runs/rm"))
    rlhfkit.RewardModel.from_pretrained("runs/rm").score(["Explain gravity."], ["Masses attract."])
"""

__version__ = "0.1.0"

# name -> the module that defines it, imported on first use: `import rlhfkit` and `rlhfkit --help` import no
# torch, and neither do the config classes
_PUBLIC = {
    **dict.fromkeys(["SFTConfig", "RMConfig", "PPOConfig", "GRPOConfig", "RLOOConfig", "ReinforcePPConfig",
                     "DPOConfig", "EvalConfig"], "rlhfkit.config"),
    **dict.fromkeys(["train_sft", "train_reward_model", "train_ppo", "train_grpo", "train_rloo",
                     "train_reinforce_pp", "train_dpo", "evaluate"], "rlhfkit.api"),
    **dict.fromkeys(["RewardModel", "get_reward"], "rlhfkit.models.reward"),
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'rlhfkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
