"""The Python API: one function per command, doing what `rlhfkit <command>` does, from a config or its keys.

    import rlhfkit

    rlhfkit.train_sft(model="smollm2-135m-instruct", data="demos.jsonl", output="runs/sft", epochs=1)
    rlhfkit.train_grpo(policy="runs/sft/policy", prompts=[{"prompt": "2+2?", "answer": "4"}, ...],
                       reward_fn=[is_correct], output="runs/grpo")

Each function takes a config object (`rlhfkit.SFTConfig(...)`), keyword arguments, or both (the keywords win).
The keys are the command's flags: top-level names (`epochs=2`), a group as a mapping (`optim={"lr": 1e-4}`)
or a dotted key (`**{"optim.lr": 1e-4}`), a leaf's unique name (`lr=1e-4`) and the flags' aliases
(`lora=True`). The config is built by the command's own loader (`rlhfkit.config_loading.build`), so a bad key
or value raises the same one-line `ConfigError` as the command, before anything is read or written. The run
is the command's: `dtype="auto"` resolves to bf16 or fp32 for this machine, the output folder holds the same
files (config.yaml, metrics.jsonl, the model, the command's plots), and the function returns the final
metrics (what summary.json holds) instead of printing them.

Rows in memory work where the command takes a file: `data`, `eval_data` and `prompts` may be a list of dicts
(prompts also a list of prompts, text or chat messages), a `datasets.Dataset` or a pandas DataFrame. They are
written to `<output>/data/{train,eval,prompts}.jsonl` (atomically) and the config points there, so
config.yaml reproduces the run and `resume=True` continues it. Reward functions (`reward_fn`, or
`reward_fns`) may be Python callables besides `module:function` strings, and `(function, weight)` pairs;
the trainer calls the objects given, and config.yaml records each as `module:qualname` (a warning says when
that name does not import back to the object: a lambda, a nested function, a callable object).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import numbers
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from rlhfkit.config import (
    DPOConfig,
    EvalConfig,
    GRPOConfig,
    OnlineConfig,
    PPOConfig,
    ReinforcePPConfig,
    RLOOConfig,
    RMConfig,
    SFTConfig,
)
from rlhfkit.config_loading import build, overrides_from
from rlhfkit.errors import ConfigError

log = logging.getLogger(__name__)

Config = TypeVar("Config")
# where rows given in memory are written, under <output>/data/
ROW_FILES = {"data": "train.jsonl", "eval_data": "eval.jsonl", "prompts": "prompts.jsonl"}

# the training curves each command draws from its metrics.jsonl after training (trainers only write metrics):
# (x, {metric key: legend label}, file, title, y label)
CURVES = {
    "sft": [("step", {"sft/loss": "train", "eval_loss": "held-out"}, "loss.png", "SFT loss (NLL per token)",
             "loss")],
    "rm": [("epoch", {"train/loss": "train", "eval_loss": "held-out"}, "loss.png", "Bradley–Terry loss",
            "loss"),
           ("epoch", {"eval_accuracy": "held-out"}, "accuracy.png", "Held-out accuracy P(r_c > r_r)",
            "accuracy")],
    "dpo": [("step", {"dpo/loss": "train", "eval_loss": "held-out"}, "loss.png",
             "Preference loss (DPO family)", "loss"),
            ("step", {"dpo/reward_accuracy": "train", "eval_reward_accuracy": "held-out"},
             "reward_accuracy.png", "Reward accuracy P(r̂_c > r̂_r)", "accuracy"),
            ("step", {"dpo/chosen_reward": "chosen (train)", "dpo/rejected_reward": "rejected (train)",
                      "eval_reward_margin": "margin (held-out)"}, "rewards.png",
             "Implicit rewards r̂ = β (log π − log π_ref)", "reward")],
}


# --------------------------------------------------------------------------- one function per command
def train_sft(config: SFTConfig | None = None, /, **options: Any) -> dict[str, float]:
    """`rlhfkit sft`: supervised fine-tuning of a causal LM on demonstrations (loss on the responses).

    Args:
        config: an `SFTConfig`; None builds one from `options` alone.
        **options: its keys (see the module docstring): `model`, `data` (a file or rows), `output`, `epochs`,
            `optim={"lr": ...}`, `lora={"use_lora": True}`, ...
    Returns:
        The final metrics: `eval_loss` (held-out NLL per token), `eval_perplexity`, the last `sft/*`, ...
        The policy is in `<output>/policy`.
    Raises:
        ConfigError: a bad key or value (the message `rlhfkit sft` prints).
        DataError: a bad row (file:line:field).
    """
    cfg, _ = _config(SFTConfig, config, options)
    from rlhfkit.trainers import sft

    final = sft.train_sft(cfg)
    draw_curves("sft", cfg.output)
    return final


def train_reward_model(config: RMConfig | None = None, /, **options: Any) -> dict[str, float]:
    """`rlhfkit rm`: a Bradley–Terry reward model on preference pairs (text, chat messages, Anthropic HH).

    Args:
        config: an `RMConfig`; None builds one from `options` alone.
        **options: its keys: `base`, `data` (a file or rows), `output`, `epochs`, `fields={...}`, ...
    Returns:
        The final metrics: `eval_accuracy` (held-out P(r_c > r_r)), `eval_loss`, ... The model is in
        `<output>/model` (load it with `rlhfkit.RewardModel.from_pretrained`).
    Raises:
        ConfigError: a bad key or value (the message `rlhfkit rm` prints). DataError: a bad row.
    """
    cfg, _ = _config(RMConfig, config, options)
    from rlhfkit.trainers import rm

    final = rm.train_reward_model(cfg)
    draw_curves("rm", cfg.output)
    return final


def train_dpo(config: DPOConfig | None = None, /, **options: Any) -> dict[str, float]:
    """`rlhfkit dpo`: DPO, IPO, hinge or SimPO (`loss=`) on preference pairs, without a reward model.

    Args:
        config: a `DPOConfig`; None builds one from `options` alone.
        **options: its keys: `policy`, `data` (a file or rows), `output`, `beta`, `loss`, `epochs`, ...
    Returns:
        The final metrics: `eval_reward_accuracy`, `eval_reward_margin`, `eval_loss`, ... The policy is in
        `<output>/policy`.
    Raises:
        ConfigError: a bad key or value (the message `rlhfkit dpo` prints). DataError: a bad row.
    """
    cfg, _ = _config(DPOConfig, config, options)
    from rlhfkit.trainers import dpo

    final = dpo.train_dpo(cfg)
    draw_curves("dpo", cfg.output)
    return final


def train_ppo(config: PPOConfig | None = None, /, **options: Any) -> dict[str, float]:
    """`rlhfkit ppo`: PPO against a reward model and/or reward functions, with a KL penalty to the reference.

    Args:
        config: a `PPOConfig`; None builds one from `options` alone.
        **options: its keys: `policy`, `prompts` (a file or rows), `reward_model`, `reward_fn` (callables or
            `module:function` strings), `output`, `steps`, `kl_coef`, ...
    Returns:
        The last step's metrics: `rollout/score_mean`, `rollout/kl`, `ppo/policy_loss`, ... The policy is in
        `<output>/policy`.
    Raises:
        ConfigError: a bad key or value (the message `rlhfkit ppo` prints). DataError: a bad row.
    """
    cfg, reward_callables = _config(PPOConfig, config, options)
    from rlhfkit.trainers import ppo

    return ppo.train_ppo(cfg, reward_callables=reward_callables)


def train_grpo(config: GRPOConfig | None = None, /, **options: Any) -> dict[str, float]:
    """`rlhfkit grpo`: GRPO (k completions per prompt, group-normalised advantages, KL as a loss, no critic).

    Args:
        config: a `GRPOConfig`; None builds one from `options` alone.
        **options: its keys: those of `train_ppo` (`policy`, `prompts`, `reward_fn`, ...) and `group_size`,
            `advantage`, `loss_agg`, `clip_range_high`, ...
    Returns:
        The last step's metrics: `rollout/score_mean`, `rollout/kl`, `rl/policy_loss`, one
        `rollout/reward/<name>` per reward term, ... The policy is in `<output>/policy`.
    Raises:
        ConfigError: a bad key or value (the message `rlhfkit grpo` prints). DataError: a bad row.
    """
    return _train_critic_free(GRPOConfig, config, options)


def train_rloo(config: RLOOConfig | None = None, /, **options: Any) -> dict[str, float]:
    """`rlhfkit rloo`: RLOO (k completions per prompt, leave-one-out baseline, KL in the reward, no critic).

    Args:
        config: an `RLOOConfig`; None builds one from `options` alone.
        **options: its keys, as `train_grpo`'s.
    Returns:
        The last step's metrics, as `train_grpo`'s. The policy is in `<output>/policy`.
    Raises:
        ConfigError: a bad key or value (the message `rlhfkit rloo` prints). DataError: a bad row.
    """
    return _train_critic_free(RLOOConfig, config, options)


def train_reinforce_pp(config: ReinforcePPConfig | None = None, /, **options: Any) -> dict[str, float]:
    """`rlhfkit reinforce-pp`: REINFORCE++ (KL in the per-token reward, returns whitened over the batch).

    Args:
        config: a `ReinforcePPConfig`; None builds one from `options` alone.
        **options: its keys, as `train_grpo`'s.
    Returns:
        The last step's metrics, as `train_grpo`'s. The policy is in `<output>/policy`.
    Raises:
        ConfigError: a bad key or value (the message `rlhfkit reinforce-pp` prints). DataError: a bad row.
    """
    return _train_critic_free(ReinforcePPConfig, config, options)


def evaluate(config: EvalConfig | None = None, /, **options: Any) -> dict:
    """`rlhfkit eval`: policies side by side on held-out prompts (gold and RM reward, KL, length, report).

    Args:
        config: an `EvalConfig`; None builds one from `options` alone.
        **options: its keys: `policy` (a path, a list of them, first = baseline, or {name: path}), `prompts`
            (a file or rows), `output`, `reward_model`, `samples_per_prompt`, ...
    Returns:
        The summary (summary.json): `methods` ({name: gold/RM reward, KL, length, win rate, with 95%
        intervals}), `baseline`, `n_eval_prompts`, `config`. The report is `<output>/report.html`.
    Raises:
        ConfigError: a bad key or value (the message `rlhfkit eval` prints). DataError: a bad row.
    """
    policy = options.get("policy")
    if isinstance(policy, (str, os.PathLike)):
        options["policy"] = [os.fspath(policy)]
    elif isinstance(policy, Mapping):
        options["policy"] = [f"{name}={os.fspath(path)}" for name, path in policy.items()]
    elif isinstance(policy, (list, tuple)):
        options["policy"] = [os.fspath(p) if isinstance(p, os.PathLike) else p for p in policy]
    cfg, _ = _config(EvalConfig, config, options)
    from rlhfkit.eval.cli import run_eval

    return run_eval(cfg)


def _train_critic_free(cls: type, config, options: dict) -> dict[str, float]:
    cfg, reward_callables = _config(cls, config, options)
    from rlhfkit.trainers import critic_free

    return critic_free.train_critic_free(cfg, reward_callables=reward_callables)


def draw_curves(command: str, output: str) -> None:
    """CURVES[command] as PNGs in `output`, from its metrics.jsonl (main process only)."""
    from accelerate import PartialState

    from rlhfkit.report.plots import plot_series
    from rlhfkit.tracking import read_metrics

    if not PartialState().is_main_process:
        return
    rows = read_metrics(Path(output) / "metrics.jsonl")
    for x, ys, name, title, ylabel in CURVES[command]:
        plot_series(rows, x, ys, Path(output) / name, title, ylabel)


# --------------------------------------------------------------------------- keys -> a checked config
def _config(cls: type[Config], config: Config | None, options: dict[str, Any]
            ) -> tuple[Config, dict[str, Callable]]:
    """The checked config (`build`, as the CLI) and the reward callables by spec name; rows in memory are
    written to <output>/data/ once the config has passed its checks."""
    if config is not None and not isinstance(config, cls):
        raise ConfigError(f"expected a {cls.__name__} (or keyword arguments), got {type(config).__name__}")
    options = {str(key).replace("-", "_"): value for key, value in options.items()}
    if "reward_fns" in options:
        if "reward_fn" in options:
            raise ConfigError("config key 'reward_fn': give reward_fn or reward_fns, not both")
        options["reward_fn"] = options.pop("reward_fns")
    rows = {key: options.pop(key) for key in ROW_FILES if key in options and _is_rows(options[key])}
    callables: dict[str, Callable] = {}
    if "reward_fn" in options and issubclass(cls, OnlineConfig):
        options["reward_fn"], callables = _reward_specs(options["reward_fn"])
    values = overrides_from(config, options)
    output = values.get("output")
    for key in rows:  # the file the rows go to; without an output folder `build` stops at `output`
        values[key] = os.path.join(str(output), "data", ROW_FILES[key]) if output else "<rows in memory>"
    cfg = build(cls, values)
    for key, value in rows.items():
        write_rows(key, value, getattr(cfg, key), getattr(cfg, "prompt_field", "prompt"))
    return cfg, callables


def _is_rows(value: Any) -> bool:
    """Rows in memory, not a path: a list or tuple, a `datasets.Dataset` or DatasetDict, a DataFrame."""
    return isinstance(value, (list, tuple, Mapping)) or hasattr(value, "to_list") or hasattr(value, "to_dict")


def write_rows(key: str, value: Any, path: str, prompt_field: str = "prompt") -> None:
    """Rows in memory as JSON Lines at `path` (atomic). A prompt that is not a dict (text, chat messages) is
    the row {prompt_field: prompt}. ConfigError names `key` and the row that cannot be written."""
    from rlhfkit.atomic import write_text

    if isinstance(value, Mapping):  # e.g. a datasets.DatasetDict
        keys = ", ".join(map(str, value)) or "nothing"
        raise ConfigError(f"config key {key!r}: a mapping of {keys}; give a list of rows (of a DatasetDict, "
                          "one split: dataset['train'])")
    if hasattr(value, "to_list"):  # datasets.Dataset
        value = value.to_list()
    elif hasattr(value, "to_dict"):  # pandas.DataFrame
        value = value.to_dict(orient="records")
    if not value:
        raise ConfigError(f"config key {key!r}: no rows; give at least one")
    lines = []
    for index, row in enumerate(value):
        if key == "prompts" and isinstance(row, (str, list, tuple)):
            row = {prompt_field: row}
        if not isinstance(row, Mapping):
            kind = type(row).__name__
            raise ConfigError(f"config key {key!r}: row {index} is a {kind}, not a dict of fields")
        try:
            lines.append(json.dumps(dict(row), ensure_ascii=False, default=_plain) + "\n")
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config key {key!r}: row {index} cannot be written as JSON ({e})") from None
    write_text(path, "".join(lines))


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (and tensors) as plain Python, for json.dumps."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# --------------------------------------------------------------------------- reward functions as objects
def _reward_specs(value: Any) -> tuple[list[str], dict[str, Callable]]:
    """`reward_fn` as given in Python (a spec string, a callable, a (callable or spec, weight) pair, or a list
    of these) -> (the specs config.yaml records, {spec name: callable} for the trainer)."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    specs, callables = [], {}
    for item in items:
        fn, weight = item if isinstance(item, tuple) and len(item) == 2 else (item, None)
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, numbers.Real)
                                   or not math.isfinite(weight)):
            raise ConfigError(f"config key 'reward_fn': weight {weight!r} of {fn!r} is not a finite number")
        if isinstance(fn, str):
            specs.append(fn if weight is None else f"{fn}={float(weight)!r}")
            continue
        if not callable(fn):
            raise ConfigError(f"config key 'reward_fn': {fn!r} is not a reward function; give callables, "
                              "'module:function' strings or (function, weight) pairs")
        name = function_name(fn)
        if callables.get(name, fn) is not fn:
            raise ConfigError(f"config key 'reward_fn': two different functions are named {name!r} (the name "
                              "config.yaml records and metrics show); give them distinct names")
        callables[name] = fn
        specs.append(name if weight is None else f"{name}={float(weight)!r}")
    return specs, callables


def function_name(fn: Callable) -> str:
    """`module:qualname` of a callable (of its class for a callable object, of the wrapped function for a
    functools.partial), logging a warning when that name does not import back to `fn`."""
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    if not hasattr(target, "__qualname__"):  # a callable object
        target = type(target)
    module, qualname = getattr(target, "__module__", None) or "__main__", target.__qualname__
    name = f"{module}:{qualname}"
    if _resolve_name(module, qualname) is not fn:
        log.warning("reward fn %s: config.yaml records this name, which does not import back to the function "
                    "given (a lambda, a nested function, a partial or a callable object); this run uses the "
                    "object, a rerun from config.yaml needs a module-level function of that name", name)
    return name


def _resolve_name(module: str, qualname: str) -> Any:
    """The object `module:qualname` names, or None (modules already imported only: naming runs no code)."""
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


__all__ = ["train_sft", "train_reward_model", "train_dpo", "train_ppo", "train_grpo", "train_rloo",
           "train_reinforce_pp", "evaluate"]
