"""Reading a configuration: the TOML file, the --set overrides and search()'s values merged
over the defaults, each key checked against its default's type, then resolved."""

from __future__ import annotations

import codecs
import logging
import tomllib
from pathlib import Path
from typing import Any

from evores.config.checks import resolve
from evores.config.schema import EMBEDDED, EMBEDDED_SPACE, SPACE_SECTION, defaults
from evores.core.errors import UNPARSABLE, ConfigError
from evores.core.paths import usable_path
from evores.core.typed import checked_type, refuse_unknown
from evores.strategies.initial import checked_value
from evores.strategies.space import DEPRECATED_NAMES, current_names

log = logging.getLogger("evores")


def load(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
    initial: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Read ``path`` (TOML), apply ``section.key=value`` overrides, then ``values`` (Python
    values in the TOML's shape, from :func:`evores.search`), validate and resolve.

    ``initial`` is what a ``search.initial`` run directory resolved to when the run started:
    a resume compares its config with the run's without reading that directory again.
    Deprecated names are logged once the config has resolved, so a refused config is still
    one line.
    """
    config = defaults()
    updates = [] if path is None else [(read_toml(path), str(path))]
    updates += [(parse_override(item), f"--set {item}") for item in overrides or []]
    if values:
        updates.append((values, "search() arguments"))
    given: set[str] = set()
    for update, origin in updates:
        given |= _merge(config, update, origin)
    if initial is not None and isinstance(config["search"]["initial"], str):
        config["search"]["initial"] = initial
    if config["data"]["path"] == EMBEDDED:
        for key, value in EMBEDDED_SPACE.items():
            if f"{SPACE_SECTION}.{key}" not in given:
                config[SPACE_SECTION][key] = list(value)
    resolved = resolve(config)
    for update, origin in updates:
        _warn_deprecated(update, origin)
    return resolved


def read_toml(path: str | Path) -> dict[str, Any]:
    path = usable_path(path, "config file")
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {str(path)!r} {problem}; give the path of a TOML file")
    try:
        with path.open("rb") as handle:
            if handle.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8:
                raise ConfigError(
                    f"config file {str(path)!r} starts with a UTF-8 byte-order mark (BOM), which "
                    "TOML does not allow; save it as UTF-8 without BOM"
                )
            handle.seek(0)
            return tomllib.load(handle)
    except UNPARSABLE as error:
        raise ConfigError(
            f"config file {str(path)!r} is not valid TOML ({error}); fix the syntax, "
            "e.g. `seed = 1` or `[schedule]` then `resolutions = [32, 64]`"
        ) from None


def parse_override(item: str) -> dict[str, Any]:
    """``schedule.resolutions=[16,32]`` -> ``{"schedule": {"resolutions": [16, 32]}}``.

    The value is read as a TOML value; a bare word that is not TOML (a path, say) is a string.
    """
    name, sep, text = item.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(
            f"override (--set) {item!r} is not of the form section.key=value, e.g. seed=3"
        )
    try:
        value = tomllib.loads(f"value = {text.strip()}")["value"]
    except UNPARSABLE:
        value = text.strip()
    parts = name.split(".")
    if len(parts) > 2:
        raise ConfigError(f"override (--set) {item!r}: keys have at most one dot (section.key)")
    return {parts[0]: value} if len(parts) == 1 else {parts[0]: {parts[1]: value}}


def _merge(config: dict[str, Any], update: dict[str, Any], origin: str) -> set[str]:
    """Apply ``update`` to ``config``; returns the names it set (``section.key`` or ``key``)."""
    given = set()
    for key, value in update.items():
        if key not in config:
            refuse_unknown(key, config, origin)
        if isinstance(config[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{origin}: [{key}] is a section, got the value {value!r}; "
                    f"set its keys, e.g. {key}.{next(iter(config[key]))} = ..."
                )
            if key == SPACE_SECTION:
                value = current_names(value, where=f"{origin}: [{SPACE_SECTION}]")
            for sub, subvalue in value.items():
                if sub not in config[key]:
                    refuse_unknown(f"{key}.{sub}", config[key], origin)
                config[key][sub] = _checked(f"{key}.{sub}", config[key][sub], subvalue)
                given.add(f"{key}.{sub}")
        else:
            config[key] = _checked(key, config[key], value)
            given.add(key)
    return given


def _warn_deprecated(update: dict[str, Any], origin: str) -> None:
    """One line per earlier gene name that ``update`` used in ``[space]`` (read as the new)."""
    section = update.get(SPACE_SECTION)
    for earlier, name in DEPRECATED_NAMES.items():
        if isinstance(section, dict) and earlier in section:
            log.warning("%s: space.%s is deprecated; use space.%s", origin, earlier, name)


def _checked(name: str, default: Any, value: Any) -> Any:
    """``value`` with the type of ``default``; ``search.initial`` is genome tables or a path."""
    if name == "search.initial":
        return checked_value(value)
    if name == "data.channels":  # "auto" or a number: the checks refuse any other value
        return value
    return checked_type(name, default, value, strings=name == "slurm.extra")
