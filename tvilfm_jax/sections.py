"""Config sections as frozen dataclasses: the defaults of a section are its fields' defaults,
and reading a section is constructing its dataclass.

    section_dict(DataSettings)                       # {"name": "sysu_mm01", ...}: a config's defaults
    read_section(DataSettings, config.data, "data")  # DataSettings, or ConfigError naming the key

A settings dataclass checks its ranges in `__post_init__`; `read_section` checks what the
dataclass cannot: unknown and missing keys, and that each value has its default's type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """An experiment config value is missing or out of range; the message names the key."""


def section_dict(cls: type, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """{field: default} of a settings dataclass (in field order), the fields in `exclude` left out."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.name not in exclude}


def as_dict(section: Any, where: str) -> dict[str, Any]:
    """A ConfigDict or mapping as a plain dict; ConfigError naming `where` for anything else."""
    if hasattr(section, "to_dict"):
        return section.to_dict()
    if isinstance(section, Mapping):
        return dict(section)
    raise ConfigError(f"{where} must be a section (ConfigDict or dict), got {type(section).__name__}")


def unknown_keys(values: Mapping[str, Any], cls: type, where: str) -> None:
    """Raises ConfigError naming the keys of `values` that `cls` has no field for."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, tuple):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(default))


def read_section(cls: type[T], section: Any, where: str) -> T:
    """`cls(**section)` for a section `config.<where>` that sets every field of `cls`; a missing
    or unknown key, or a value of another type than the field's default, raises ConfigError
    naming `config.<where>.<key>`."""
    values = as_dict(section, f"config.{where}")
    unknown_keys(values, cls, f"config.{where}")
    for f in dataclasses.fields(cls):
        if f.name not in values:
            raise ConfigError(f"config: missing key {where + '.' + f.name!r}")
        if f.default is not dataclasses.MISSING and not _type_ok(values[f.name], f.default):
            raise ConfigError(f"config.{where}.{f.name} must be of type {type(f.default).__name__} (default "
                              f"{f.default!r}), got {values[f.name]!r}")
    return cls(**values)


def positive_int(value: Any, key: str, minimum: int = 1) -> None:
    """Raises ConfigError unless `value` is an int >= minimum (`key`: the dotted config key)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an int >= {minimum}, got {value!r}")


def one_of(value: Any, key: str, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {allowed}, got {value!r}")
