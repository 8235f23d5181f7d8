"""Settings for ``tee-exporter``: embedded defaults, overridden by the YAML config file, overridden by flags.

The YAML file uses the flag names without the leading dashes (``web.listen-address: ":9940"``,
``collector.qemu: false``), so there is one vocabulary for both. Unknown keys and wrong types are start-up errors
that name the key.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.collectors import SPECS


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and key."""


@dataclass
class Settings:
    web_listen_address: str = ":9940"
    web_telemetry_path: str = "/metrics"
    web_config_file: Path | None = None
    libvirt_uri: str = "qemu:///system"
    collector_timeout: float = 8.0
    collectors: dict[str, bool] = field(default_factory=lambda: {s.name: s.enabled_by_default for s in SPECS})
    journal_path: Path = Path("/var/lib/tee-exporter/journal.jsonl")
    journal_max_bytes: int = 64 * 1024 * 1024
    journal_fsync: bool = False
    host_name: str = field(default_factory=socket.gethostname)
    proc_root: Path = Path("/proc")
    sys_root: Path = Path("/sys")
    cgroup_root: Path = Path("/sys/fs/cgroup")
    attestation_evidence_dir: Path | None = None
    attestation_quarantine_dir: Path | None = None
    attestation_policy_file: Path | None = None
    attestation_collateral_dir: Path | None = None
    attestation_trust_roots: tuple[Path, ...] = ()
    attestation_log_paths: tuple[Path, ...] = ()
    kbs_log_paths: tuple[Path, ...] = ()
    egress_netns: Path | None = None
    log_level: str = "info"
    log_format: str = "logfmt"


# flag/YAML key -> Settings attribute. Collector switches are handled separately ("collector.<name>").
KEYS: dict[str, str] = {
    "web.listen-address": "web_listen_address",
    "web.telemetry-path": "web_telemetry_path",
    "web.config.file": "web_config_file",
    "libvirt.uri": "libvirt_uri",
    "collector.timeout": "collector_timeout",
    "journal.path": "journal_path",
    "journal.max-bytes": "journal_max_bytes",
    "journal.fsync": "journal_fsync",
    "host.name": "host_name",
    "path.procfs": "proc_root",
    "path.sysfs": "sys_root",
    "path.cgroupfs": "cgroup_root",
    "attestation.evidence-dir": "attestation_evidence_dir",
    "attestation.quarantine-dir": "attestation_quarantine_dir",
    "attestation.policy-file": "attestation_policy_file",
    "attestation.collateral-dir": "attestation_collateral_dir",
    "attestation.trust-root": "attestation_trust_roots",
    "attestation.log-path": "attestation_log_paths",
    "kbs.log-path": "kbs_log_paths",
    "egress.netns": "egress_netns",
    "log.level": "log_level",
    "log.format": "log_format",
}

_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Settings)}


def _coerce(key: str, attr: str, value: Any) -> Any:
    kind = str(_FIELD_TYPES[attr])
    try:
        if kind.startswith("tuple"):
            items = value if isinstance(value, (list, tuple)) else [value]
            return tuple(_require_path(v) for v in items)
        if "Path" in kind:
            return None if value is None and "None" in kind else _require_path(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise TypeError("expected true or false")
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError("expected an integer")
            return value
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError("expected a number")
            return float(value)
        return _require_str(value)
    except TypeError as exc:
        raise ConfigError(f"{key}: {exc} (got {value!r})") from None


def _require_path(value: Any) -> Path:
    # click hands path flags over as Path objects already; YAML gives strings.
    return value if isinstance(value, Path) else Path(_require_str(value))


def _require_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def apply(settings: Settings, values: Mapping[str, Any], origin: str) -> Settings:
    """Apply ``{key: value}`` (YAML keys or flag names) onto ``settings``; ``origin`` names the source in errors."""
    for key, value in values.items():
        if key.startswith("collector.") and key.removeprefix("collector.") in settings.collectors:
            if not isinstance(value, bool):
                raise ConfigError(f"{origin}: {key}: expected true or false (got {value!r})")
            settings.collectors[key.removeprefix("collector.")] = value
        elif key in KEYS:
            try:
                setattr(settings, KEYS[key], _coerce(key, KEYS[key], value))
            except ConfigError as exc:
                raise ConfigError(f"{origin}: {exc}") from None
        else:
            raise ConfigError(f"{origin}: unknown setting {key!r}")
    return settings


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


def load(config_file: Path | None, flags: Mapping[str, Any]) -> Settings:
    """Defaults, then the config file, then the flags the user actually gave."""
    settings = Settings()
    if config_file is not None:
        apply(settings, load_file(config_file), str(config_file))
    apply(settings, flags, "command line")
    return settings
