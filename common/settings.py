"""Reading configuration from the environment, once, at start.

Each service declares its settings as a frozen dataclass whose fields carry a
default and a one-line doc (``setting(...)``); ``load(cls)`` fills it from the
environment and fails fast, naming the variable, when a value does not parse.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """Raised at start when an environment variable holds a value that does not parse."""


def setting(default: Any, doc: str, *, env: str | None = None) -> Any:
    """Declare one setting: its default, what it means, and (if not the field name upper-cased) its variable."""
    return dataclasses.field(default=default, metadata={"doc": doc, "env": env})


def env_name(field: dataclasses.Field[Any]) -> str:
    """The environment variable a settings field is read from."""
    return str(field.metadata.get("env") or field.name.upper())


def check_ports(settings: Any, *names: str) -> None:
    """Raise SettingsError for the first of the fields ``names`` of ``settings`` that is not a TCP port.

    0 is allowed: the service then asks the OS for a free port (tests do), or,
    for METRICS_PORT, serves no metrics.
    """
    fields = {field.name: field for field in dataclasses.fields(settings)}
    for name in names:
        value = getattr(settings, name)
        if not 0 <= value <= 65_535:
            raise SettingsError(f"{env_name(fields[name])}={value} is not a TCP port (0 to 65535)")


def _parse(raw: str, kind: Any, name: str) -> Any:
    if kind in (bool, "bool"):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{name}={raw!r} is not a boolean (use true or false)")
    if kind in (int, "int"):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if kind in (float, "float"):
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
    return raw


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build settings of type ``cls`` from ``environ`` (default: the process environment)."""
    source = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = env_name(field)
        if name in source:
            values[field.name] = _parse(source[name], field.type, name)
    return cls(**values)


def describe(cls: type[Any]) -> str:
    """One line per setting (variable, default, doc): the text of a service's ``--help``."""
    lines = []
    for field in dataclasses.fields(cls):
        lines.append(f"  {env_name(field):<28} default {field.default!r}\n      {field.metadata.get('doc', '')}")
    return "\n".join(lines)
