"""Settings for ``tee-exporter``, declared once: ``OPTIONS`` gives every flag/YAML key and its help, ``Settings``
its type and default, ``COLLECTORS`` the switchable collectors (``--collector.<name>``).

Embedded defaults, overridden by the YAML ``--config.file`` (keys are the flag names without the dashes:
``web.listen-address: ":9940"``, ``collector.qemu: false``), overridden by the flags actually typed. Unknown keys
and wrong types are start-up errors that name the key.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import settings as common
from common.settings import ConfigError, Option

__all__ = ["COLLECTORS", "OPTIONS", "CollectorSpec", "ConfigError", "Settings", "apply", "load"]


@dataclass(frozen=True)
class CollectorSpec:
    name: str
    module: str
    enabled_by_default: bool
    help: str


COLLECTORS: tuple[CollectorSpec, ...] = (
    CollectorSpec("libvirt", "exporter.collectors.libvirt", True,
                  "per-domain state, CPU, memory, I/O, TEE type and VM exits from one bulk libvirt call"),
    CollectorSpec("host", "exporter.collectors.host", True,
                  "host TEE platform: capability and capacity, misc cgroup, SNP status, TDX module, PSP firmware, QGS"),
    CollectorSpec("lifecycle", "exporter.collectors.lifecycle", True,
                  "libvirt domain lifecycle events: transition counters, creation time, journal events"),
    CollectorSpec("qemu", "exporter.collectors.qemu_procs", True,
                  "confidential QEMU guests not managed by libvirt (Kata / Confidential Containers), from /proc"),
    CollectorSpec("attestation", "exporter.collectors.attestation", True,
                  "attestation evidence verified against vendor roots and policy; attestation-service logs"),
    CollectorSpec("kbs", "exporter.collectors.kbs", True,
                  "key-broker (KBS) resource requests: released or denied"),
    CollectorSpec("egress", "exporter.collectors.egress", False,
                  "flows confidential guests start (host conntrack events), judged by runtime_policy.network_policy"),
)


@dataclass
class Settings:
    web_listen_address: str = ":9940"
    web_telemetry_path: str = "/metrics"
    web_config_file: Path | None = None
    web_max_requests: int = 40
    web_disable_exporter_metrics: bool = False
    libvirt_uri: str = "qemu:///system"
    libvirt_per_vcpu: bool = False
    libvirt_metadata_labels: str | None = None
    collector_timeout: float = 8.0
    collectors: dict[str, bool] = field(default_factory=lambda: {s.name: s.enabled_by_default for s in COLLECTORS})
    collector_disable_defaults: bool = False
    collectors_given: set[str] = field(default_factory=set)  # switched explicitly (file or flag)
    journal_path: Path = Path("/var/lib/tee-exporter/journal.jsonl")
    journal_max_bytes: int = 64 * 1024 * 1024
    journal_fsync: bool = False
    host_name: str = field(default_factory=socket.gethostname)
    proc_root: Path = Path("/proc")
    sys_root: Path = Path("/sys")
    cgroup_root: Path = Path("/sys/fs/cgroup")
    dev_root: Path = Path("/dev")
    host_misc_cgroups: tuple[Path, ...] = (Path("machine.slice"), Path("kubepods.slice"), Path("kubepods"))
    host_qgs_socket: Path = Path("/var/run/tdx-qgs/qgs.socket")
    host_snp_status_interval: float = 600.0
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


OPTIONS: tuple[Option, ...] = (
    Option("web.listen-address", "web_listen_address",
           "Address to listen on: host:port, [ipv6]:port, or :port for all interfaces (IPv4 and IPv6)."),
    Option("web.telemetry-path", "web_telemetry_path", "Path under which to expose metrics."),
    Option("web.config.file", "web_config_file",
           "exporter-toolkit web config file (TLS, client certificates, bcrypt basic auth); re-read while running."),
    Option("web.max-requests", "web_max_requests",
           "Maximum concurrent scrape requests; more get 503. 0 disables the limit.", bound="non-negative"),
    Option("web.disable-exporter-metrics", "web_disable_exporter_metrics",
           "Leave out the process_* and python_* metrics about the exporter process itself."),
    Option("libvirt.uri", "libvirt_uri", "libvirt connection URI."),
    Option("collector.libvirt.per-vcpu", "libvirt_per_vcpu",
           "Per-vCPU series (a vcpu label) for VM exits, vCPU times and halt polling instead of per-domain sums."),
    Option("collector.libvirt.metadata-labels", "libvirt_metadata_labels",
           "Labels for tee_domain_metadata_info from domain <metadata>: comma-separated label=path entries "
           "(path: {namespace}tag/{namespace}tag[@attribute]) or 'nova' (nova_project, nova_flavor)."),
    Option("collector.timeout", "collector_timeout",
           "Deadline in seconds for one scrape of all collectors; late ones are reported failed.", bound="positive"),
    Option("collector.disable-defaults", "collector_disable_defaults",
           "Disable every collector not enabled explicitly with --collector.<name>."),
    Option("journal.path", "journal_path", "Append-only JSON Lines event journal read by tee-audit."),
    Option("journal.max-bytes", "journal_max_bytes", "Rotate the journal to <path>.1 past this size.", bound="positive",
           default_help="64 MiB"),
    Option("journal.fsync", "journal_fsync", "fsync after every journal line (slower, survives power loss)."),
    Option("host.name", "host_name", "Host name written into journal events.", default_help="this host's name"),
    Option("path.procfs", "proc_root", "procfs mount point."),
    Option("path.sysfs", "sys_root", "sysfs mount point."),
    Option("path.cgroupfs", "cgroup_root", "cgroup v2 mount point."),
    Option("path.devfs", "dev_root", "devfs mount point (the host collector opens <devfs>/sev)."),
    Option("host.misc-cgroup", "host_misc_cgroups",
           "cgroup (relative to path.cgroupfs) whose misc.current, misc.max and misc.events the host collector "
           "reports; absent ones are skipped. Repeatable.", default_help="machine.slice, kubepods.slice, kubepods"),
    Option("host.qgs-socket", "host_qgs_socket", "TDX quote-generation service (QGS) Unix socket to probe."),
    Option("host.snp-status-interval", "host_snp_status_interval",
           "Seconds between SNP_PLATFORM_STATUS reads through <devfs>/sev (a PSP round trip); cached in between.",
           bound="positive"),
    Option("attestation.evidence-dir", "attestation_evidence_dir",
           "Watched directory of evidence files (SNP reports, TDX quotes, with their certificates)."),
    Option("attestation.quarantine-dir", "attestation_quarantine_dir", "Where unparseable evidence is moved.",
           default_help="<evidence-dir>/quarantine"),
    Option("attestation.policy-file", "attestation_policy_file",
           "Attestation policy (JSON) evidence is checked against."),
    Option("attestation.collateral-dir", "attestation_collateral_dir", "TDX collateral (TCB info, QE identity, CRLs)."),
    Option("attestation.trust-root", "attestation_trust_roots",
           "Extra trust root (PEM), added to the shipped AMD and Intel roots. Repeatable."),
    Option("attestation.log-path", "attestation_log_paths", "Attestation-service log file to tail. Repeatable."),
    Option("kbs.log-path", "kbs_log_paths", "Key-broker (KBS) log file to tail. Repeatable."),
    Option("egress.netns", "egress_netns",
           "Network namespace (e.g. /proc/1/ns/net) whose conntrack and neighbours the egress collector reads.",
           default_help="the exporter's own"),
    Option("log.level", "log_level", "Log level.", choices=("debug", "info", "warning", "error")),
    Option("log.format", "log_format", "Log format.", choices=("logfmt", "json")),
)


def _collector_switch(settings: Settings, origin: str) -> Any:
    def claim(key: str, value: Any) -> bool:
        name = key.removeprefix("collector.")
        if not key.startswith("collector.") or name not in settings.collectors:
            return False
        if not isinstance(value, bool):
            raise ConfigError(f"{origin}: {key}: expected true or false (got {value!r})")
        settings.collectors[name] = value
        settings.collectors_given.add(name)
        return True

    return claim


def apply(settings: Settings, values: Mapping[str, Any], origin: str) -> Settings:
    """Apply ``{key: value}`` (YAML keys or flag names) onto ``settings``; ``origin`` names the source in errors."""
    return common.apply(settings, OPTIONS, values, origin, _collector_switch(settings, origin))


def load(config_file: Path | None, flags: Mapping[str, Any]) -> Settings:
    """Defaults, then the config file, then the flags the user actually gave."""
    settings = Settings()
    if config_file is not None:
        apply(settings, common.load_file(config_file), str(config_file))
    apply(settings, flags, "command line")
    if settings.collector_disable_defaults:  # node_exporter's --collector.disable-defaults: only what is named
        for name in settings.collectors:
            if name not in settings.collectors_given:
                settings.collectors[name] = False
    return settings
