"""rlhfkit: SFT, reward models, PPO and DPO that run on a CPU laptop and scale out with accelerate."""

__version__ = "0.1.0"
__all__ = ["RewardModel", "get_reward", "__version__"]


def __getattr__(name):  # lazy, so `import rlhfkit` and `rlhfkit --help` stay fast (no torch import)
    if name in ("RewardModel", "get_reward"):
        from rlhfkit.models import reward

        return getattr(reward, name)
    raise AttributeError(name)
