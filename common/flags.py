"""Command-line flags that double as config-file keys, shared by ``tee-exporter`` and ``tee-audit``.

A flag ``--web.listen-address`` is the YAML key ``web.listen-address``. click needs an identifier for each
parameter, so the key is encoded (``.`` -> ``__``, ``-`` -> ``_``) and decoded back; only flags the user actually
typed are passed on, so the config file's values survive unless overridden.
"""

from __future__ import annotations

from typing import Any

import click


def param_name(key: str) -> str:
    return key.replace(".", "__").replace("-", "_")


def key_of(param: str) -> str:
    """The click parameter name back to the flag/YAML key: ``web__listen_address`` -> ``web.listen-address``."""
    return param.replace("__", ".").replace("_", "-")


def flag(key: str, boolean: bool = False, **kwargs: Any) -> Any:
    """``--<key>`` (and ``--no-<key>`` for a boolean) as a click option decorator, default None (= not given)."""
    decl = f"--{key}/--no-{key}" if boolean else f"--{key}"
    return click.option(decl, param_name(key), default=None, **kwargs)


def given(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """``{key: value}`` for the flags given on the command line (repeatable ones as lists)."""
    return {key_of(name): list(value) if isinstance(value, tuple) else value
            for name, value in params.items()
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
