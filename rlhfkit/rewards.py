"""Programmatic rewards: Python functions named `module:function` scored like a reward model.

A reward function is called positionally as `fn(prompts, completions)` with two equal-length lists of str
(prompt text and response text) and returns one finite number per completion (a list, tuple, numpy array
or tensor). TRL's `fn(prompts, completions, **kwargs)` functions fit. A spec names one function and an
optional weight:

    rlhfkit.eval.gold:gold_rewards         an importable module (installed or on PYTHONPATH)
    path/to/my_rewards.py:is_correct=0.5   a Python file, weight 0.5 (default 1; 0 logs the term without
                                           training on it: the online trainers log every term's batch mean
                                           as `rollout/reward/<name>`; a negative weight is a penalty)

Several specs are summed: score = Σ_i w_i · f_i(prompts, completions). `RewardFunctions` has the reward
model's interface, `.score(prompts, responses) -> list[float]`, so a trainer takes either; `make_reward`
returns the RM, the functions, or both summed (the RM with weight 1). No torch here: config loading imports
`parse_reward_spec` to check specs before any work starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlhfkit.errors import ConfigError, RlhfkitError

REWARD_MODEL_NAME = "reward_model"  # the RM's name among the terms of a summed reward


@dataclass(frozen=True)
class RewardSpec:
    """A parsed `module:function[=weight]`: `name` is the spec without its weight."""

    module: str
    function: str
    weight: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.module}:{self.function}"

    @property
    def is_file(self) -> bool:
        """A path (`.py`, or holding a '/') rather than a dotted module name."""
        return self.module.endswith(".py") or "/" in self.module


def parse_reward_spec(spec: str, key: str = "reward_fn") -> RewardSpec:
    """`module:function`, `path/file.py:function`, either with `=weight`; ConfigError names `key` otherwise.

    Nothing is imported here, so a config can be checked at load time."""
    target, weight_text = spec, None
    # a weight follows the last ':' (a file path may itself hold '=')
    if "=" in spec.rpartition(":")[2]:
        target, _, weight_text = spec.rpartition("=")
    module, sep, function = target.rpartition(":")
    if not sep or not module or not function:
        raise ConfigError(f"config key {key!r}: {spec!r} is not module:function (e.g. "
                          "rlhfkit.eval.gold:gold_rewards or path/to/file.py:fn, optionally =WEIGHT)")
    if not function.isidentifier():
        raise ConfigError(f"config key {key!r}: {spec!r}: {function!r} is not a Python function name")
    weight = 1.0
    if weight_text is not None:
        try:
            weight = float(weight_text)
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight):
            raise ConfigError(f"config key {key!r}: {spec!r}: weight {weight_text!r} is not a finite number")
    return RewardSpec(module, function, weight)


@dataclass
class RewardTerm:
    """One weighted term w · f(prompts, completions) of a summed reward."""

    name: str
    fn: Callable
    weight: float = 1.0


@dataclass
class RewardFunctions:
    """Σ_i w_i · f_i(prompts, completions), each term's output checked; RewardModel's `score` interface.
    `last_components` holds the unweighted values of each term from the last `score` call (what a trainer
    logs per term, without scoring twice)."""

    terms: list[RewardTerm]
    last_components: dict[str, list[float]] = field(default_factory=dict)

    def components(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, list[float]]:
        """Each term's unweighted values (logged as `rollout/reward/<name>`), in the order of the specs.

        Raises:
            RlhfkitError: a function returned the wrong number of values, a non-number or a non-finite value.
        """
        prompts, responses = list(prompts), list(responses)
        return {t.name: check_rewards(t.name, t.fn(prompts, responses), len(responses)) for t in self.terms}

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """The weighted sum Σ_i w_i · f_i for each (prompt, response): [B] floats. Keeps each term's values
        in `last_components`."""
        parts = self.last_components = self.components(prompts, responses)
        weights = [t.weight for t in self.terms]
        return [math.fsum(w * values[i] for w, values in zip(weights, parts.values()))
                for i in range(len(responses))]


def check_rewards(name: str, values, expected: int) -> list[float]:
    """`values` as `expected` finite floats; RlhfkitError naming the function (and the index) otherwise."""
    values = values.tolist() if hasattr(values, "tolist") else values  # numpy arrays, tensors
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise RlhfkitError(f"reward fn {name}: returned {type(values).__name__}, expected a list of "
                           f"{expected} floats (one per completion)")
    if len(values) != expected:
        raise RlhfkitError(f"reward fn {name}: returned {len(values)} values for {expected} completions; "
                           "return one float per completion")
    out = []
    for i, value in enumerate(values):
        # bool is a number to Python: a pass/fail check may return True/False and means 1/0
        if not isinstance(value, numbers.Real):
            raise RlhfkitError(f"reward fn {name}: value at index {i} is {value!r} ({type(value).__name__}), "
                               "not a number")
        if not math.isfinite(value):
            raise RlhfkitError(f"reward fn {name}: value at index {i} is {value!r}; rewards must be finite")
        out.append(float(value))
    return out


def load_reward_functions(specs: Sequence[str], key: str = "reward_fn") -> RewardFunctions:
    """Import each `module:function[=weight]` (see the module docstring) into one summed reward.

    Raises:
        ConfigError: no specs, a bad spec or weight, a spec given twice, a module or file that cannot be
            imported (with the reason), a missing attribute or one that is not callable; it names `key`.
    """
    if not specs:
        raise ConfigError(f"config key {key!r}: no reward functions given")
    terms, modules = [], {}
    for spec in specs:
        parsed = parse_reward_spec(spec, key)
        if any(t.name == parsed.name for t in terms):
            raise ConfigError(f"config key {key!r}: {parsed.name!r} is listed twice; give it once, "
                              "with a weight")
        if parsed.module not in modules:
            modules[parsed.module] = _import(parsed, key)
        if not hasattr(modules[parsed.module], parsed.function):
            raise ConfigError(f"config key {key!r}: {parsed.module!r} has no attribute {parsed.function!r}")
        fn = getattr(modules[parsed.module], parsed.function)
        if not callable(fn):
            raise ConfigError(f"config key {key!r}: {parsed.name!r} is a {type(fn).__name__}, not a function")
        terms.append(RewardTerm(parsed.name, fn, parsed.weight))
    return RewardFunctions(terms)


def _import(spec: RewardSpec, key: str):
    """The module of `spec`: imported by name, or executed from its .py file (once per path)."""
    if not spec.is_file:
        try:
            return importlib.import_module(spec.module)
        except (ImportError, TypeError) as e:  # TypeError: a relative name such as '.rewards'
            raise ConfigError(f"config key {key!r}: cannot import module {spec.module!r} ({e}); install it, "
                              "put it on PYTHONPATH or write path/to/file.py:function") from None
    path = Path(spec.module).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"config key {key!r}: {spec.name!r}: file {spec.module!r} not found")
    module_name = f"_rlhfkit_reward_fn_{path.stem}_{zlib.crc32(str(path).encode()):08x}"  # one per path
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look a module up by name while it runs
    try:
        loader_spec.loader.exec_module(module)
    except (ImportError, SyntaxError) as e:
        del sys.modules[module_name]
        raise ConfigError(f"config key {key!r}: cannot import {spec.module!r} "
                          f"({type(e).__name__}: {' '.join(str(e).split())})") from None
    return module


def make_reward(reward_model, reward_fns: Sequence[str] = (), key: str = "reward_fn"):
    """The reward a trainer scores with: the RM, the reward functions, or both summed (RM weight 1).

    Args:
        reward_model: a loaded reward model (any `.score(prompts, responses) -> list[float]`) or None.
        reward_fns: specs for `load_reward_functions`.
        key: the config key named in errors.
    Returns:
        `reward_model` itself when no functions are given (its behaviour is unchanged), else a
        `RewardFunctions` whose `components` include the RM as "reward_model".
    Raises:
        ConfigError: neither an RM nor a function; or a bad spec (see `load_reward_functions`).
    """
    if not reward_fns:
        if reward_model is None:
            raise ConfigError(f"config key {key!r}: give a reward model, one or more --reward-fn, or both")
        return reward_model
    functions = load_reward_functions(reward_fns, key)
    if reward_model is not None:
        functions.terms.insert(0, RewardTerm(REWARD_MODEL_NAME, reward_model.score))
    return functions
