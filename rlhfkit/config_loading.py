"""How a config dataclass becomes a command: flags (argparse) and YAML -> a checked instance, and back.

Every leaf field is a flag (--optim.lr, plus --lr where the leaf name is unique, plus declared aliases);
values are checked against the annotations and bounds, and every dataclass, nested groups included, is built
through its constructor, so each `__post_init__` check runs at load time, before any work. Errors are one
line naming the key. Imports no torch.

Field metadata read here (written by `rlhfkit.config._f` / `_group`):
  help       the flag's help text
  required   a command's own top-level key that must be given (groups are filled by their owner)
  aliases    extra flag names (--lora for lora.use_lora)
  ge/gt/le/lt  bounds on a number (>=, >, <=, <)
  preset     on a bool field: {dotted key: value} applied when it is true, under YAML and flags (--quick)
  defaults   on a group: the command's own defaults for that group ({"lr": 1e-4} for DPO's optim)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import operator
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from rlhfkit.errors import ConfigError

BOUNDS = {"ge": (operator.ge, ">="), "gt": (operator.gt, ">"), "le": (operator.le, "<="),
          "lt": (operator.lt, "<")}


@functools.cache  # evaluating a class's string annotations is slow; --help and each load ask often
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    return _type_hints(cls)[f.name]


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field]]:
    """All leaf fields as (dotted key, type, Field), nested groups flattened: optim.lr, lora.r, ..."""
    out = []
    for f in dataclasses.fields(cls):
        tp = _field_type(cls, f)
        if _is_dataclass_type(tp):
            out += _leaf_fields(tp, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, tp, f))
    return out


def _group_keys(cls: type, prefix: str = "") -> set[str]:
    """Dotted names of the nested groups: optim, ppo, ppo.optim, ..."""
    out = set()
    for f in dataclasses.fields(cls):
        tp = _field_type(cls, f)
        if _is_dataclass_type(tp):
            out |= {prefix + f.name} | _group_keys(tp, f"{prefix}{f.name}.")
    return out


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(type without None, is_optional)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _coerce(key: str, value: Any, tp: Any, metadata: typing.Mapping) -> Any:
    """Check/convert one value against its annotated type and bounds; ConfigError names the key."""
    base, optional = _base_type(tp)
    if optional and isinstance(value, str) and value.lower() in ("none", "null", "off"):
        value = None  # a flag unsets an optional key (`--tis-cap none`); YAML writes null
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key {key!r}: null is not allowed")
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        if not isinstance(value, str) or value not in choices:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if typing.get_origin(base) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key {key!r}: expected a list of strings, got {value!r}")
        return list(value)
    converted = _convert_scalar(key, value, base)
    for name, (compare, symbol) in BOUNDS.items():
        if name in metadata and not compare(converted, metadata[name]):
            raise ConfigError(f"config key {key!r}: {converted!r} must be {symbol} {metadata[name]}")
    return converted


def _convert_scalar(key: str, value: Any, base: type) -> Any:
    """A str, bool, int or float from YAML (typed) or a flag (text); anything else is an error."""
    wrong = ConfigError(f"config key {key!r}: {value!r} is not a valid {base.__name__}")
    if base is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise wrong
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise wrong  # True is an int to Python, and str([1]) is a string: neither is what the user meant
    if base is str:
        return str(value)
    try:
        number = base(value)  # int("3.0") and int(2.5) are errors below; int(3.0) is 3
    except (TypeError, ValueError, OverflowError):
        raise wrong from None
    if base is int and isinstance(value, float) and value != number:
        raise wrong
    if base is float and not math.isfinite(number):
        raise ConfigError(f"config key {key!r}: {value!r} is not a finite number")
    return number


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}; an empty mapping stays a value (reported, not lost)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short_names(cls: type) -> dict[str, str]:
    """Leaf name -> dotted key, for names that are unique across groups (so --lr means --optim.lr)."""
    keys = [k for k, _, _ in _leaf_fields(cls)]
    counts: dict[str, int] = {}
    for k in keys:
        counts[k.rsplit(".", 1)[-1]] = counts.get(k.rsplit(".", 1)[-1], 0) + 1
    return {k.rsplit(".", 1)[-1]: k for k in keys if "." in k and counts[k.rsplit(".", 1)[-1]] == 1}


def _aliases(cls: type) -> dict[str, str]:
    """Alias -> dotted key (e.g. lora -> lora.use_lora), for aliases that name exactly one field of `cls`."""
    pairs = [(a, k) for k, _, f in _leaf_fields(cls) for a in f.metadata.get("aliases", ())]
    names = [a for a, _ in pairs]
    return {a: k for a, k in pairs if names.count(a) == 1}


def _resolve(cls: type, overrides: dict[str, Any]) -> dict[str, Any]:
    """Dotted-key overrides (short names and aliases allowed) -> {full dotted key: checked value}."""
    leaves = {k: (tp, f) for k, tp, f in _leaf_fields(cls)}
    short, aliases, groups = _short_names(cls), _aliases(cls), _group_keys(cls)
    values: dict[str, Any] = {}
    for key, value in overrides.items():
        name = str(key).replace("-", "_")
        full = name if name in leaves else short.get(name, aliases.get(name, name))
        if full in groups:
            raise ConfigError(f"config key {str(key)!r} is a group: set its keys ({full}.<name>), "
                              "not a value")
        if full not in leaves:
            raise ConfigError(f"unknown config key {str(key)!r} for `{cls.__name__}`")
        values[full] = _coerce(str(key), value, leaves[full][0], leaves[full][1].metadata)
    return values


def build(cls: type, overrides: dict[str, Any]) -> Any:
    """Instantiate `cls` from dotted-key overrides; unknown keys and bad values raise ConfigError.

    Order: defaults <- a preset switched on (e.g. --quick) <- `overrides`. Every dataclass is built through
    its constructor, so the `__post_init__` checks of nested groups run too."""
    values = _resolve(cls, overrides)
    for key, _, f in _leaf_fields(cls):
        if f.metadata.get("preset") and values.get(key, _default(cls, key)):
            values = {**_resolve(cls, f.metadata["preset"]), **values}  # explicit keys win over the preset
    # only a command's own keys: a group's (ppo.output in the demo) are filled by the code that owns it
    for f in dataclasses.fields(cls):
        if f.metadata.get("required") and values.get(f.name, f.default) in (None, ""):
            raise ConfigError(f"missing required config key {f.name!r} (--{f.name.replace('_', '-')})")
    return _instantiate(cls, values)


def _instantiate(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """cls(**values) with nested groups built the same way from their keys over the group's own defaults."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if _is_dataclass_type(tp := _field_type(cls, f)):
            sub = {k[len(f.name) + 1 :]: v for k, v in values.items() if k.startswith(f"{f.name}.")}
            kwargs[f.name] = _instantiate(tp, {**_flatten(f.metadata.get("defaults", {})), **sub},
                                          f"{prefix}{f.name}.")
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    try:
        return cls(**kwargs)
    except ConfigError as e:
        # a group's __post_init__ names its own key ('num_minibatches'); the user wrote 'ppo.num_minibatches'
        raise ConfigError(str(e).replace("config key '", f"config key '{prefix}", 1)) from None


def _default(cls: type, key: str) -> Any:
    """The default of a dotted key in `cls`, with each group's own defaults (DPO's optim.lr is 1e-4)."""
    head, _, rest = key.partition(".")
    f = cls.__dataclass_fields__[head]
    if not rest:
        return f.default_factory() if f.default is dataclasses.MISSING else f.default
    group_defaults = _flatten(f.metadata.get("defaults", {}))
    return group_defaults[rest] if rest in group_defaults else _default(_field_type(cls, f), rest)


def load_yaml(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
    return _flatten(data)


@dataclasses.dataclass(frozen=True)
class Option:
    """One leaf field of a config as a command option: what `--help` and the docs' option tables show."""

    flags: list[str]  # --optim.lr, then --lr where the leaf name is unique, then declared aliases (--lora)
    key: str  # the dotted key of YAML and the Python API: optim.lr
    type: Any  # the annotation
    default: Any  # with the command's own group defaults (DPO's optim.lr is 1e-4)
    help: str


def options(cls: type) -> list[Option]:
    """Every option of `cls` in field order; `add_arguments` and docs/hooks/options.py both read it."""
    short = {v: k for k, v in _short_names(cls).items()}
    aliases = _aliases(cls)
    out = []
    for key, tp, f in _leaf_fields(cls):
        flags = [f"--{key.replace('_', '-')}"]
        if key in short:
            flags.append(f"--{short[key].replace('_', '-')}")
        flags += [f"--{a}" for a in f.metadata.get("aliases", ()) if aliases.get(a) == key]
        out.append(Option(flags, key, tp, _default(cls, key), f.metadata.get("help", "")))
    return out


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per leaf field (--optim.lr, and --lr where unique); defaults stay in the dataclass."""
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config; flags override it")
    for option in options(cls):
        key, names = option.key, option.flags
        base, _ = _base_type(option.type)
        help_text = f"{option.help} (default: {option.default})"
        kw: dict[str, Any] = {"dest": key, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(base) is list:
            parser.add_argument(*names, action="append", metavar="VALUE", **kw)
        elif typing.get_origin(base) is Literal:
            parser.add_argument(*names, choices=typing.get_args(base), **kw)
        else:
            parser.add_argument(*names, metavar=base.__name__.upper(), **kw)


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """defaults <- preset <- --config YAML <- explicit flags."""
    given = {k: v for k, v in vars(args).items() if k not in ("config", "command", "func")}
    values = load_yaml(args.config) if getattr(args, "config", None) else {}
    values.update(given)
    return build(cls, values)


def overrides_from(cfg: Any | None, keys: typing.Mapping[str, Any]) -> dict[str, Any]:
    """Dotted-key overrides for `build` as Python code gives them (the `rlhfkit.api` functions): every key of
    `cfg` (a config object, or None), then `keys`, which win: dotted, short or alias names, a group as a
    mapping or a dataclass instance (`optim={"lr": 1e-4}` is `optim.lr`), paths as `os.PathLike`."""
    out = _flatten(to_dict(cfg)) if cfg is not None else {}
    for key, value in keys.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        out.update(_flatten({key: value}))  # an empty mapping stays a value: `build` says it is a group
    return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in out.items()}


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (rlhfkit.atomic)."""
    from rlhfkit.atomic import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
