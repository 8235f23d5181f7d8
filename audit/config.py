"""Settings for ``tee-audit ship``: embedded defaults, overridden by the YAML config file, overridden by flags.

Declared once (``OPTIONS`` and the ``ShipSettings`` dataclass drive the flags, ``--help``, the YAML keys and the type
checks; see ``common/settings.py``). YAML keys are the flag names without the leading dashes
(``store: /var/lib/tee-audit/store``, ``es.ca-file: /etc/ssl/es-ca.pem``); unknown keys and wrong types are
start-up errors naming the key. Secrets (Elasticsearch password or API key) are only ever read from files named
here, never given as values, so they never appear in a process list, a config dump or a log line.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import settings as common
from common.settings import ConfigError, Option

__all__ = ["OPTIONS", "ConfigError", "ShipSettings", "apply", "load"]


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
    witness_urls: str | None = None
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
    def witnesses(self) -> tuple[str, ...]:
        return tuple(url.strip() for url in (self.witness_urls or "").split(",") if url.strip())

    @property
    def spool(self) -> Path:
        if self.spool_dir is not None:
            return self.spool_dir
        return self.store / ".spool" if self.store else Path("/var/lib/tee-audit/spool")


OPTIONS: tuple[Option, ...] = (
    Option("source", "sources", "Journal (JSON Lines) file to tail, following rotation to <file>.1. Repeatable."),
    Option("store", "store", "Local store directory (JSON Lines segments + checkpoint notes)."),
    Option("es", "es", "Elasticsearch URL (http:// or https://). Both sinks may be given."),
    Option("es.ca-file", "es_ca_file", "CA bundle (PEM) that signs the Elasticsearch server certificate."),
    Option("es.api-key-file", "es_api_key_file", "File holding the Elasticsearch API key (the base64 'encoded' form)."),
    Option("es.username", "es_username", "Elasticsearch user for basic auth (password from --es.password-file)."),
    Option("es.password-file", "es_password_file", "File holding the Elasticsearch password."),
    Option("es.namespace", "es_namespace", "Data stream namespace: records go to logs-tee.audit-<namespace>."),
    Option("es.batch-size", "es_batch_size", "Documents per bulk request.", bound="positive"),
    Option("signing-key", "signing_key", "Ed25519 private key (PEM) that signs checkpoints. Required."),
    Option("chain", "chain", "Chain id (one chain per host).", default_help="this host's name"),
    Option("spool.dir", "spool_dir", "Durable spool and read offsets.",
           default_help="<store>/.spool with --store, else /var/lib/tee-audit/spool"),
    Option("spool.max-bytes", "spool_max_bytes", "Spool bound; reading pauses (backpressure) above it.",
           bound="positive", default_help="256 MiB"),
    Option("source.max-line-bytes", "source_max_line_bytes", "Longer journal lines are quarantined.",
           bound="positive", default_help="1 MiB"),
    Option("source.poll-seconds", "source_poll_seconds", "How often sources are polled when idle.",
           bound="positive"),
    Option("quarantine.dir", "quarantine_dir", "Where malformed input is kept.",
           default_help="<spool.dir>/quarantine"),
    Option("checkpoint.every-records", "checkpoint_every_records", "Sign a checkpoint every N records.",
           bound="positive"),
    Option("checkpoint.every-seconds", "checkpoint_every_seconds", "...or every T seconds when records arrived.",
           bound="positive"),
    Option("verify.every-seconds", "verify_every_seconds",
           "Re-verify what each sink holds this often (tee_audit_chain_intact).", bound="positive"),
    Option("witness.urls", "witness_urls", "Comma-separated C2SP tlog-witness URLs that cosign the sinks' "
           "tree checkpoints (docs/audit.md, Transparency log)."),
    Option("web.listen-address", "web_listen_address", "Address for the tee_audit_* metrics."),
    Option("web.config.file", "web_config_file",
           "exporter-toolkit web config (TLS, client certificates, basic auth) for the metrics port and the "
           "Alertmanager webhook; re-read while running."),
    Option("alertmanager.listen-address", "alertmanager_listen_address",
           "Serve an Alertmanager webhook receiver (POST /alerts) here; alerts become audit records.",
           default_help="off"),
    Option("otlp.endpoint", "otlp_endpoint", "OTLP/HTTP endpoint for trace spans (e.g. http://otel:4318).",
           default_help="no export"),
    Option("once", "once",
           "Drain every source, flush every sink, sign a final checkpoint and exit (0 only when all is durable)."),
    Option("log.level", "log_level", "Log level.", choices=("debug", "info", "warning", "error")),
    Option("log.format", "log_format", "Log format.", choices=("logfmt", "json")),
)


def apply(settings: ShipSettings, values: Mapping[str, Any], origin: str) -> ShipSettings:
    """Apply ``{key: value}`` (YAML keys or flag names) onto ``settings``; ``origin`` names the source in errors."""
    return common.apply(settings, OPTIONS, values, origin)


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
        apply(settings, common.load_file(config_file), str(config_file))
    apply(settings, flags, "command line")
    return validate(settings)
