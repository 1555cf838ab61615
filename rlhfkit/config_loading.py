"""How a config dataclass becomes a command: flags (argparse) and YAML -> a checked instance, and back to YAML.

Every leaf field is a flag (--optim.lr, plus --lr where the leaf name is unique, plus declared aliases);
values are checked against the annotations and errors name the key. Imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from rlhfkit.errors import ConfigError


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[f.name]


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


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(type without None, is_optional)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check/convert one value against its annotated type; ConfigError names the key."""
    base, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{key}': null is not allowed")
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        if value not in choices:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if typing.get_origin(base) is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        return [str(v) for v in value]
    try:
        if base is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return base(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{key}': {value!r} is not a valid {base.__name__}") from None


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
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


def build(cls: type, overrides: dict[str, Any]) -> Any:
    """Instantiate `cls` from dotted-key overrides; unknown keys and bad values raise ConfigError."""
    leaves = {k: (tp, f) for k, tp, f in _leaf_fields(cls)}
    short = _short_names(cls)
    aliases = _aliases(cls)
    values: dict[str, Any] = {}
    for key, value in overrides.items():
        name = key.replace("-", "_")
        full = name if name in leaves else short.get(name, aliases.get(name, name))
        if full not in leaves:
            raise ConfigError(f"unknown config key '{key}' for `{cls.__name__}`")
        values[full] = _coerce(key, value, leaves[full][0])
    for key, (_, f) in leaves.items():
        default = _nested_default(cls, key) if "." in key else f.default
        if f.metadata.get("required") and values.get(key, default) in (None, ""):
            raise ConfigError(f"missing required config key '{key}' (--{key.replace('_', '-')})")
    return _instantiate(cls, values, "")


def _instantiate(cls: type, values: dict[str, Any], prefix: str) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = _field_type(cls, f)
        if _is_dataclass_type(tp):
            sub = {k: v for k, v in values.items() if k.startswith(f"{prefix}{f.name}.")}
            default = f.default_factory()  # keeps per-command defaults such as optim.lr
            for k, v in sub.items():
                _set_dotted(default, k[len(prefix) + len(f.name) + 1 :], v)
            kwargs[f.name] = default
        elif prefix + f.name in values:
            kwargs[f.name] = values[prefix + f.name]
    return cls(**kwargs)


def _set_dotted(obj: Any, key: str, value: Any) -> None:
    head, _, rest = key.partition(".")
    if rest:
        _set_dotted(getattr(obj, head), rest, value)
    else:
        setattr(obj, head, value)


def load_yaml(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
    return _flatten(data)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per leaf field (--optim.lr, and --lr where unique); defaults stay in the dataclass."""
    short = {v: k for k, v in _short_names(cls).items()}
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config; flags override it")
    for key, tp, f in _leaf_fields(cls):
        base, _ = _base_type(tp)
        names = [f"--{key.replace('_', '-')}"]
        if key in short:
            names.append(f"--{short[key].replace('_', '-')}")
        names += [f"--{a}" for a in f.metadata.get("aliases", ()) if _aliases(cls).get(a) == key]
        if "." in key:  # nested: the group's default, which a command may override (DPO's optim.lr)
            default = _nested_default(cls, key)
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        kw: dict[str, Any] = {"dest": key, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(base) is list:
            parser.add_argument(*names, action="append", metavar="VALUE", **kw)
        elif typing.get_origin(base) is Literal:
            parser.add_argument(*names, choices=typing.get_args(base), **kw)
        else:
            parser.add_argument(*names, metavar=base.__name__.upper(), **kw)


def _nested_default(cls: type, key: str) -> Any:
    obj = cls.__dataclass_fields__[key.split(".")[0]].default_factory()
    for part in key.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """defaults <- --config YAML <- explicit flags."""
    given = {k: v for k, v in vars(args).items() if k not in ("config", "command", "func")}
    values = load_yaml(args.config) if getattr(args, "config", None) else {}
    values.update(given)
    return build(cls, values)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (rlhfkit.atomic)."""
    from rlhfkit.atomic import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


