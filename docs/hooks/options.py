"""mkdocs hook: `<!-- options: PPOConfig -->` in a page becomes that config's option table.

The table is generated from the dataclass (`rlhfkit.config_loading.options`: the flags, defaults and help
texts `rlhfkit <command> --help` prints), so the docs cannot drift from the code. An unknown name fails the
build."""

from __future__ import annotations

import re
import typing

MARKER = re.compile(r"<!--\s*options:\s*(\w+)\s*-->")


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(lambda m: option_table(m.group(1)), markdown)


def option_table(name: str) -> str:
    from rlhfkit import config
    from rlhfkit.config_loading import options

    cls = getattr(config, name, None)
    if cls is None:
        raise ValueError(f"docs: <!-- options: {name} --> names no config class in rlhfkit.config")
    lines = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for option in options(cls):
        flags = ", ".join(f"`{flag}`" for flag in option.flags)
        lines.append(f"| {flags} | {type_name(option.type)} | {cell(repr(option.default))} | "
                     f"{escape(option.help)} |")
    return "\n".join(lines) + "\n"


def type_name(tp) -> str:
    """int, float | None, one of `k1` `k2` `k3`, list[str], ..."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + " ".join(f"`{a}`" for a in typing.get_args(tp))
    if type(None) in typing.get_args(tp) and len(args) == 1:
        return f"{type_name(args[0])} or `None`"
    if typing.get_origin(tp) is list:
        return f"list of {type_name(args[0])}"
    return getattr(tp, "__name__", str(tp))


def cell(text: str) -> str:
    return f"`{text.replace('|', chr(92) + '|')}`"


def escape(text: str) -> str:
    """Text inside a table cell: `|` would end the cell; outside code spans `*` (fn(**kwargs)) would start
    emphasis and `<` a tag."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # the parts outside code spans
        parts[i] = parts[i].replace("*", "\\*").replace("<", "&lt;")
    return "`".join(parts).replace("|", "\\|")
