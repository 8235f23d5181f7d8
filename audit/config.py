"""Settings for ``tee-audit ship``: embedded defaults, overridden by the YAML config file, overridden by flags.

Same convention as the exporter (``exporter/config.py``): YAML keys are the flag names without the leading dashes
(``store: /var/lib/tee-audit/store``, ``es.ca-file: /etc/ssl/es-ca.pem``); unknown keys and wrong types are
start-up errors naming the key. Secrets (Elasticsearch password or API key) are only ever read from files named
here, never given as values, so they never appear in a process list, a config dump or a log line.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.settings import ConfigError, load_file

__all__ = ["KEYS", "ConfigError", "ShipSettings", "apply", "load"]


@dataclass
class ShipSettings:
    sources: tuple[Path, ...] = ()
    store: Path | None = None
    es: str | None = None
    es_ca_file: Path | None = None
    es_api_key_file: Path | None = None
    es_username: str | None = None
    es_password_file: Path | None = None
    es_namespace: str = "default"
    es_retention: str = "90d"
    es_batch_size: int = 1000
    signing_key: Path | None = None
    chain: str = field(default_factory=socket.gethostname)
    spool_dir: Path | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    source_max_line_bytes: int = 1024 * 1024
    source_poll_seconds: float = 0.5
    quarantine_dir: Path | None = None
    checkpoint_every_records: int = 1000
    checkpoint_every_seconds: float = 60.0
    verify_every_seconds: float = 300.0
    web_listen_address: str = ":9941"
    web_config_file: Path | None = None
    alertmanager_listen_address: str | None = None
    otlp_endpoint: str | None = None
    once: bool = False
    log_level: str = "info"
    log_format: str = "logfmt"

    @property
    def quarantine(self) -> Path:
        return self.quarantine_dir or self.spool / "quarantine"

    @property
    def spool(self) -> Path:
        if self.spool_dir is not None:
            return self.spool_dir
        return self.store / ".spool" if self.store else Path("/var/lib/tee-audit/spool")


# flag/YAML key -> ShipSettings attribute.
KEYS: dict[str, str] = {
    "source": "sources",
    "store": "store",
    "es": "es",
    "es.ca-file": "es_ca_file",
    "es.api-key-file": "es_api_key_file",
    "es.username": "es_username",
    "es.password-file": "es_password_file",
    "es.namespace": "es_namespace",
    "es.retention": "es_retention",
    "es.batch-size": "es_batch_size",
    "signing-key": "signing_key",
    "chain": "chain",
    "spool.dir": "spool_dir",
    "spool.max-bytes": "spool_max_bytes",
    "source.max-line-bytes": "source_max_line_bytes",
    "source.poll-seconds": "source_poll_seconds",
    "quarantine.dir": "quarantine_dir",
    "checkpoint.every-records": "checkpoint_every_records",
    "checkpoint.every-seconds": "checkpoint_every_seconds",
    "verify.every-seconds": "verify_every_seconds",
    "web.listen-address": "web_listen_address",
    "web.config.file": "web_config_file",
    "alertmanager.listen-address": "alertmanager_listen_address",
    "otlp.endpoint": "otlp_endpoint",
    "once": "once",
    "log.level": "log_level",
    "log.format": "log_format",
}

_TYPES = {f.name: str(f.type) for f in dataclasses.fields(ShipSettings)}
_CHOICES = {"log_level": ("debug", "info", "warning", "error"), "log_format": ("logfmt", "json")}


def _coerce(attr: str, value: Any) -> Any:
    kind = _TYPES[attr]
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
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise TypeError("expected a positive integer")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise TypeError("expected a positive number")
        return float(value)
    text = _text(value)
    if attr in _CHOICES and text not in _CHOICES[attr]:
        raise TypeError(f"expected one of {', '.join(_CHOICES[attr])}")
    return text


def _text(value: Any) -> str:
    if isinstance(value, Path):  # from click
        value = str(value)
    if not isinstance(value, str) or not value:
        raise TypeError("expected a non-empty string")
    return value


def apply(settings: ShipSettings, values: Mapping[str, Any], origin: str) -> ShipSettings:
    """Apply ``{key: value}`` (YAML keys or flag names) onto ``settings``; ``origin`` names the source in errors."""
    for key, value in values.items():
        if key not in KEYS:
            raise ConfigError(f"{origin}: unknown setting {key!r}")
        try:
            setattr(settings, KEYS[key], _coerce(KEYS[key], value))
        except TypeError as exc:
            raise ConfigError(f"{origin}: {key}: {exc} (got {value!r})") from None
    return settings


def validate(settings: ShipSettings) -> ShipSettings:
    """Cross-field rules, checked once everything is merged."""
    if settings.signing_key is None:
        raise ConfigError("signing-key is required (create one with `tee-audit keygen --out DIR`)")
    if settings.es is None and settings.store is None:
        raise ConfigError("give at least one sink: store (a local directory) and/or es (an Elasticsearch URL)")
    if settings.es_password_file and not settings.es_username:
        raise ConfigError("es.password-file needs es.username")
    if settings.es_password_file and settings.es_api_key_file:
        raise ConfigError("give es.api-key-file or es.username/es.password-file, not both")
    if any(c.isspace() or c in "+/" for c in settings.chain):
        raise ConfigError(f"chain: {settings.chain!r} must not contain whitespace, '+' or '/'")
    return settings


def load(config_file: Path | None, flags: Mapping[str, Any]) -> ShipSettings:
    """Defaults, then the config file, then the flags the user actually gave; then the cross-field checks."""
    settings = ShipSettings()
    if config_file is not None:
        apply(settings, load_file(config_file), str(config_file))
    apply(settings, flags, "command line")
    return validate(settings)
