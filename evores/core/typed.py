"""Plain configuration values checked against the type of their default, and written back as
TOML: the rules every section of a configuration shares, the [slurm] section's included."""

from __future__ import annotations

import json
import math
from typing import Any

from evores.core.errors import ConfigError


def refuse_unknown(name: str, scope: dict[str, Any], origin: str) -> None:
    valid = ", ".join(sorted(scope))
    raise ConfigError(f"{origin}: unknown key {name!r}; valid keys here: {valid}")


def checked_type(name: str, default: Any, value: Any, strings: bool = False) -> Any:
    """``value`` with the type of ``default`` (ints are accepted where floats are expected)."""
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if isinstance(default, list) and ok:
        element = str if strings else (int, float)
        ok = all(isinstance(v, element) and not isinstance(v, bool) for v in value)
    numbers = value if isinstance(value, list) else [value]
    if ok and any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        raise ConfigError(
            f"{name} must be a finite number, got {short(value)}; "
            f"e.g. {name} = {to_toml_value(default)}"
        )
    if not ok:
        expected = type(default).__name__
        if isinstance(default, list):
            expected = "a list of strings" if strings else "a list of numbers"
        raise ConfigError(
            f"{name} must be {expected}, got {short(value)} ({type(value).__name__}); "
            f"e.g. {name} = {to_toml_value(default)}"
        )
    return value


def to_toml(config: dict[str, Any]) -> str:
    """The TOML text of a resolved configuration (scalars first, then one table per section)."""
    lines = [f"{key} = {to_toml_value(v)}" for key, v in config.items() if not isinstance(v, dict)]
    for section, values in config.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"]
            lines += [f"{key} = {to_toml_value(v)}" for key, v in values.items()]
    return "\n".join(lines) + "\n"


def to_toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"cannot write the non-finite number {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "[\n" + "".join(f"    {to_toml_value(v)},\n" for v in value) + "]"  # a table a line
    if isinstance(value, list):
        return "[" + ", ".join(to_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table (search.initial's genomes)
        return "{" + ", ".join(f"{k} = {to_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def _toml_string(text: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's, but only for what JSON must escape:
    characters outside the Basic Multilingual Plane are written as they are (JSON's ASCII form
    would give surrogate pairs, which TOML refuses) and DEL, which JSON leaves raw, escaped."""
    if any(0xD800 <= ord(character) <= 0xDFFF for character in text):
        raise ConfigError(
            f"cannot write {text!r} to TOML: it holds a lone surrogate (a file name that is not "
            "valid UTF-8?); rename the file or give the value in UTF-8"
        )
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def short(value: Any) -> str:
    """``value``'s repr, cut to fit in a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def is_int(value: Any) -> bool:
    """A whole number as JSON gives it (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite number as JSON gives it (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
