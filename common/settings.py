"""Settings declared once per daemon: one ``Option`` table drives the click flags (and their ``--help``), the YAML
config-file keys, and the type checks; the settings dataclass gives the types and defaults.

A flag ``--web.listen-address`` is the YAML key ``web.listen-address`` and the attribute ``web_listen_address`` of
the daemon's settings dataclass. Precedence: dataclass defaults, then the config file, then the flags the user
actually typed (click's defaults are None = "not given", so the file's values survive). Unknown keys and wrong types
are start-up errors naming the key and where it came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Option:
    """One setting: flag and YAML key, the settings attribute it fills, and its help text."""

    key: str
    attr: str
    help: str
    choices: tuple[str, ...] = ()
    bound: str | None = None  # for numbers: "positive" (> 0) or "non-negative" (>= 0)
    default_help: str | None = None  # what --help shows as the default when the dataclass default is computed

    @property
    def param(self) -> str:
        """click's parameter name: ``web.listen-address`` -> ``web__listen_address``."""
        return self.key.replace(".", "__").replace("-", "_")


def load_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def _field_types(settings: object) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(settings)}  # type: ignore[arg-type]


def coerce(option: Option, kind: str, value: Any) -> Any:
    """``value`` (from YAML or click) as the attribute's type; TypeError with the reason otherwise."""
    if value is None and "None" in kind:
        return None
    if kind.startswith("tuple"):
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(Path(_text(v)) for v in items)
    if "Path" in kind:
        return Path(_text(value))
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if kind in ("int", "float"):
        return _number(option, kind, value)
    text = _text(value)
    if option.choices and text not in option.choices:
        raise TypeError(f"expected one of {', '.join(option.choices)}")
    return text


def _number(option: Option, kind: str, value: Any) -> int | float:
    allowed = (int,) if kind == "int" else (int, float)
    noun = "integer" if kind == "int" else "number"
    out_of_bound = isinstance(value, allowed) and (
        (option.bound == "positive" and value <= 0) or (option.bound == "non-negative" and value < 0))
    if isinstance(value, bool) or not isinstance(value, allowed) or out_of_bound:
        qualifier = f"{option.bound} " if option.bound else ""
        article = "an" if not qualifier and noun == "integer" else "a"
        raise TypeError(f"expected {article} {qualifier}{noun}")
    return value if kind == "int" else float(value)


def _text(value: Any) -> str:
    if isinstance(value, Path):  # click hands path flags over as Path objects already; YAML gives strings
        value = str(value)
    if not isinstance(value, str) or not value:
        raise TypeError("expected a non-empty string")
    return value


def apply(settings: Any, options: Iterable[Option], values: Mapping[str, Any], origin: str,
          other: Callable[[str, Any], bool] | None = None) -> Any:
    """Apply ``{key: value}`` onto ``settings``; ``other(key, value)`` may claim keys outside the table (the
    exporter's ``collector.<name>`` switches). ``origin`` names the file or "command line" in errors."""
    by_key = {o.key: o for o in options}
    kinds = _field_types(settings)
    for key, value in values.items():
        option = by_key.get(key)
        if option is None:
            if other is not None and other(key, value):
                continue
            raise ConfigError(f"{origin}: unknown setting {key!r}")
        try:
            setattr(settings, option.attr, coerce(option, kinds[option.attr], value))
        except TypeError as exc:
            raise ConfigError(f"{origin}: {key}: {exc} (got {value!r})") from None
    return settings


def _default_text(option: Option, defaults: object) -> str:
    if option.default_help is not None:
        return option.default_help
    value = getattr(defaults, option.attr)
    if value is None or value == ():
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def flag(key: str, boolean: bool = False, **kwargs: Any) -> Callable[[Any], Any]:
    """``--<key>`` (and ``--no-<key>`` for a boolean) as a click option, default None (= not given)."""
    decl = f"--{key}/--no-{key}" if boolean else f"--{key}"
    return click.option(decl, Option(key, "", "").param, default=None, **kwargs)


def click_options(options: Iterable[Option], defaults: object) -> Callable[[Any], Any]:
    """A decorator adding one click option per ``Option``, typed from ``defaults``' dataclass fields."""
    kinds = _field_types(defaults)

    def decorate(func: Any) -> Any:
        for option in reversed(list(options)):
            kind = kinds[option.attr]
            default = _default_text(option, defaults)
            text = option.help + (f"  [default: {default}]" if default else "")
            kwargs: dict[str, Any] = {"help": text}
            if kind.startswith("tuple"):
                kwargs.update(type=click.Path(path_type=Path), multiple=True)
            elif "Path" in kind:
                kwargs["type"] = click.Path(path_type=Path)
            elif kind == "int":
                kwargs["type"] = int
            elif kind == "float":
                kwargs["type"] = float
            elif option.choices:
                kwargs["type"] = click.Choice(option.choices)
            func = flag(option.key, boolean=kind == "bool", **kwargs)(func)
        return func

    return decorate


def given(ctx: click.Context, params: Mapping[str, Any], options: Iterable[Option]) -> dict[str, Any]:
    """``{key: value}`` for the flags typed on the command line (repeatable ones as lists)."""
    keys = {o.param: o.key for o in options}
    return {keys.get(name) or _key_of(name): list(value) if isinstance(value, tuple) else value
            for name, value in params.items()
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}


def _key_of(param: str) -> str:
    """A click parameter name back to its flag/YAML key: ``collector__qemu`` -> ``collector.qemu``."""
    return param.replace("__", ".").replace("_", "-")
