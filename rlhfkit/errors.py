"""Errors written for people: where the problem is, what was found, what to do."""

from __future__ import annotations


class RlhfkitError(Exception):
    """Base class. The CLI prints the message as one line and exits with status 2."""


class ConfigError(RlhfkitError):
    """A bad config key or value. The message names the key, the value and what is allowed."""


class DataError(RlhfkitError):
    """A bad input row: `DataError(path, line, field, hint)` prints as `path:line: field 'x': hint`."""

    def __init__(self, path: str, line: int | None = None, field: str | None = None, hint: str = ""):
        self.path, self.line, self.field, self.hint = str(path), line, field, hint
        where = self.path if line is None else f"{self.path}:{line}"
        what = f" field '{field}'" if field else ""
        super().__init__(f"{where}:{what} {hint}".replace(":  ", ": ").strip())


class ModelNotFoundError(RlhfkitError):
    """A model alias or path that cannot be resolved offline; says how to install it."""
