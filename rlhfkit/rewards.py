"""Programmatic rewards: Python functions named `module:function` scored like a reward model.

A reward function is called as `fn(prompts, completions, **columns)`: two equal-length lists of str (prompt
text and response text) and, as keyword lists aligned with the completions, the other fields of each
completion's prompt row (the prompt file's columns: `answer`, `tests`, `metadata`, ...; a prompt's k
completions each get its value), TRL's convention. A function gets only the columns it takes: all of them
with `**kwargs`, else the ones its parameters name (`def is_correct(prompts, completions, answer)`), so
`fn(prompts, completions)` keeps working; a parameter without a default that no column fills is an error. It
returns one finite number per completion (a list, tuple, numpy array or tensor). A spec names one function
and an optional weight:

    rlhfkit.eval.gold:gold_rewards         an importable module (installed or on PYTHONPATH)
    path/to/my_rewards.py:is_correct=0.5   a Python file, weight 0.5 (default 1; 0 logs the term without
                                           training on it: the online trainers log every term's batch mean
                                           as `rollout/reward/<name>`; a negative weight is a penalty)

Several specs are summed: score = Σ_i w_i · f_i(prompts, completions, **columns). `RewardFunctions` has the
reward model's interface, `.score(prompts, responses) -> list[float]` (plus the columns), so a trainer takes
either; `score_completions` is the one call the rollout makes to either. `make_reward` returns the RM, the
functions, or both summed (the RM with weight 1, given no columns). No torch here: config loading imports
`parse_reward_spec` to check specs before any work starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import numbers
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
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
    # a qualified name too: what the Python API records for a function given as an object (`f.<locals>.g`)
    if not all(part.isidentifier() or part[:1] + part[-1:] == "<>" for part in function.split(".")):
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
    """One weighted term w · f(prompts, completions, **columns) of a summed reward; `takes_columns` False:
    f is called with prompts and completions only (the reward model's `score`)."""

    name: str
    fn: Callable
    weight: float = 1.0
    takes_columns: bool = True


Columns = Mapping[str, Sequence]  # column name -> one value per completion, aligned with the completions


@dataclass
class RewardFunctions:
    """Σ_i w_i · f_i(prompts, completions, **columns), each term's output checked; RewardModel's `score`
    interface. `last_components` holds the unweighted values of each term from the last `score` call (what a
    trainer logs per term, without scoring twice)."""

    terms: list[RewardTerm]
    last_components: dict[str, list[float]] = field(default_factory=dict)

    def components(self, prompts: Sequence[str], responses: Sequence[str],
                   columns: Columns | None = None) -> dict[str, list[float]]:
        """Each term's unweighted values (logged as `rollout/reward/<name>`), in the order of the specs.

        Args:
            prompts, responses: [B] texts. columns: {name: [B] values} of the prompt rows, or None (none);
                each function gets the ones it takes (`column_kwargs`).
        Raises:
            RlhfkitError: a function takes a column the prompts do not have; it returned the wrong number of
                values, a non-number or a non-finite value.
        """
        prompts, responses, columns = list(prompts), list(responses), dict(columns or {})
        out = {}
        for t in self.terms:
            kwargs = column_kwargs(t.name, t.fn, columns) if t.takes_columns else {}
            out[t.name] = check_rewards(t.name, t.fn(prompts, responses, **kwargs), len(responses))
        return out

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              columns: Columns | None = None) -> list[float]:
        """The weighted sum Σ_i w_i · f_i for each (prompt, response): [B] floats. Keeps each term's values
        in `last_components`."""
        parts = self.last_components = self.components(prompts, responses, columns)
        weights = [t.weight for t in self.terms]
        return [math.fsum(w * values[i] for w, values in zip(weights, parts.values()))
                for i in range(len(responses))]


def column_kwargs(name: str, fn: Callable, columns: Columns) -> dict[str, Sequence]:
    """The columns `fn` takes, as keyword arguments: all of them when it has `**kwargs`, else those named by
    its parameters after the two it takes positionally (prompts, completions); {} when it has no signature.

    Raises:
        RlhfkitError: a parameter without a default that no column fills (names the function and the columns).
    """
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # some builtins have no signature: called with prompts and completions
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(columns)
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:2]
    named = [p for p in params
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in positional]
    for p in named:
        if p.default is p.empty and p.name not in columns:
            raise RlhfkitError(f"reward fn {name}: takes {p.name!r}, which is not a column of the prompts "
                               f"(columns: {', '.join(columns) or 'none'}); give that field in every row of "
                               "--prompts, or a default")
    return {p.name: columns[p.name] for p in named if p.name in columns}


def columns_of(rows: Sequence[Mapping]) -> dict[str, list]:
    """[{name: value}] per completion (every row the same names) -> {name: [value per completion]}."""
    return {name: [row[name] for row in rows] for name in rows[0]} if rows else {}


def score_completions(reward, prompts: Sequence[str], completions: Sequence[str],
                      columns: Columns | None = None) -> tuple[list[float], dict[str, list[float]]]:
    """The one scoring call of the trainers: (scores [B], each term's unweighted values {name: [B]}).

    A `RewardFunctions` gets the columns and returns its terms; any other scorer (a reward model, an object
    with `.score(prompts, responses)`) gets prompts and completions only, and has no terms ({})."""
    if isinstance(reward, RewardFunctions):
        scores = reward.score(prompts, completions, columns)
        return scores, dict(reward.last_components)
    return reward.score(prompts, completions), {}


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


def load_reward_functions(specs: Sequence[str], key: str = "reward_fn",
                          callables: Mapping[str, Callable] | None = None) -> RewardFunctions:
    """Import each `module:function[=weight]` (see the module docstring) into one summed reward; a spec whose
    name (`module:function`) is in `callables` is that callable, not imported (the Python API's objects).

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
        if callables and parsed.name in callables:
            terms.append(RewardTerm(parsed.name, callables[parsed.name], parsed.weight))
            continue
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


def import_object(module: str, name: str, key: str):
    """The attribute `name` of `module` (a dotted module name or a .py path), imported as the reward
    functions are (`--env`'s class uses it). Raises ConfigError naming `key`: the module cannot be imported
    (and why) or has no such attribute."""
    spec = RewardSpec(module, name)
    found = _import(spec, key)
    if not hasattr(found, name):
        raise ConfigError(f"config key {key!r}: {module!r} has no attribute {name!r}")
    return getattr(found, name)


def make_reward(reward_model, reward_fns: Sequence[str] = (), key: str = "reward_fn",
                callables: Mapping[str, Callable] | None = None):
    """The reward a trainer scores with: the RM, the reward functions, or both summed (RM weight 1).

    Args:
        reward_model: a loaded reward model (any `.score(prompts, responses) -> list[float]`) or None.
        reward_fns: specs for `load_reward_functions`.
        key: the config key named in errors.
        callables: {spec name: callable} for specs given as Python objects (see `load_reward_functions`).
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
    functions = load_reward_functions(reward_fns, key, callables)
    if reward_model is not None:
        functions.terms.insert(0, RewardTerm(REWARD_MODEL_NAME, reward_model.score, takes_columns=False))
    return functions
