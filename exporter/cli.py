"""``tee-exporter``: flags in the node_exporter style, every one also settable in ``--config.file`` (flags win)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from exporter import __version__, config, webconfig
from exporter.attest.errors import EvidenceError
from exporter.attest.policy import PolicyError
from exporter.collectors import SPECS, CollectorContext
from exporter.collectors.base import Collector
from exporter.flags import flag, given
from exporter.journal import Journal
from exporter.log import setup_logging
from exporter.registry import build_registry
from exporter.server import MetricsServer

log = logging.getLogger("exporter")

_PATH = click.Path(path_type=Path)


def _collector_options(func: Any) -> Any:
    for spec in reversed(SPECS):
        state = "enabled" if spec.enabled_by_default else "disabled"
        func = flag(f"collector.{spec.name}", boolean=True, help=f"{spec.help} ({state} by default).")(func)
    return func


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"],
                                                            "max_content_width": 110})
@click.option("--config.file", "config_file", type=_PATH,
              help="YAML file holding any of these settings, keyed by flag name without dashes; flags win.")
@flag("web.listen-address", help="Address to listen on for HTTP.  [default: :9940]")
@flag("web.telemetry-path", help="Path under which to expose metrics.  [default: /metrics]")
@flag("web.config.file", type=_PATH,
              help="exporter-toolkit web config file enabling TLS and/or bcrypt basic auth.")
@flag("libvirt.uri", help="libvirt connection URI.  [default: qemu:///system]")
@flag("collector.timeout", type=float,
              help="Deadline in seconds for one scrape of all collectors; late ones are reported failed. [default: 8]")
@flag("journal.path", type=_PATH,
              help="Append-only JSON Lines event journal read by tee-audit. "
                   "[default: /var/lib/tee-exporter/journal.jsonl]")
@flag("journal.max-bytes", type=int, help="Rotate the journal to <path>.1 past this size. [default: 64 MiB]")
@flag("journal.fsync", boolean=True,
              help="fsync after every journal line (slower, survives power loss).  [default: off]")
@flag("host.name", help="Host name written into journal events.  [default: this host's name]")
@flag("path.procfs", type=_PATH, help="procfs mount point.  [default: /proc]")
@flag("path.sysfs", type=_PATH, help="sysfs mount point.  [default: /sys]")
@flag("path.cgroupfs", type=_PATH, help="cgroup v2 mount point.  [default: /sys/fs/cgroup]")
@flag("attestation.evidence-dir", type=_PATH,
              help="Watched directory of evidence files (SNP reports, TDX quotes, with their certificates).")
@flag("attestation.quarantine-dir", type=_PATH,
              help="Where unparseable evidence is moved.  [default: <evidence-dir>/quarantine]")
@flag("attestation.policy-file", type=_PATH, help="Attestation policy (JSON) evidence is checked against.")
@flag("attestation.collateral-dir", type=_PATH, help="TDX collateral (TCB info, QE identity, CRLs).")
@flag("attestation.trust-root", type=_PATH, multiple=True,
              help="Extra trust root (PEM), added to the shipped AMD and Intel roots. Repeatable.")
@flag("attestation.log-path", type=_PATH, multiple=True,
              help="Attestation-service log file to tail. Repeatable.")
@flag("kbs.log-path", type=_PATH, multiple=True, help="Key-broker (KBS) log file to tail. Repeatable.")
@flag("egress.netns", type=_PATH,
              help="Network namespace (e.g. /proc/1/ns/net) whose conntrack and neighbours the egress collector "
                   "reads.  [default: the exporter's own]")
@flag("log.level", type=click.Choice(["debug", "info", "warning", "error"]), help="[default: info]")
@flag("log.format", type=click.Choice(["logfmt", "json"]), help="[default: logfmt]")
@_collector_options
@click.version_option(__version__, "--version")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, **flags: Any) -> None:
    """Prometheus exporter for confidential-computing hosts (AMD SEV/SEV-ES/SEV-SNP, Intel TDX).

    Serves libvirt/KVM domain metrics, host TEE capacity, lifecycle and attestation events at /metrics, and
    writes every event it sees to an append-only journal that `tee-audit ship` turns into a signed audit trail.
    """
    if ctx.invoked_subcommand is not None:
        return
    try:
        settings = config.load(config_file, given(ctx, flags))
        web = webconfig.load(settings.web_config_file) if settings.web_config_file else None
    except config.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    setup_logging(settings.log_level, settings.log_format)
    sys.exit(run(settings, web))


# Errors a collector factory raises for unusable input (a bad policy, collateral folder or trust root): the
# daemon refuses to start, with the reason, rather than run without the check the operator asked for.
STARTUP_ERRORS: tuple[type[Exception], ...] = (config.ConfigError, PolicyError, EvidenceError)


def build_collectors(settings: config.Settings, journal: Journal) -> list[Collector]:
    ctx = CollectorContext(settings=settings, journal=journal)
    collectors = []
    for spec in SPECS:
        if settings.collectors.get(spec.name):
            collectors.append(spec.build(ctx))
    return collectors


def run(settings: config.Settings, web: webconfig.WebConfig | None) -> int:
    journal = Journal(settings.journal_path, settings.journal_max_bytes, settings.journal_fsync,
                      host=settings.host_name)
    try:
        collectors = build_collectors(settings, journal)
    except STARTUP_ERRORS as exc:
        raise click.UsageError(str(exc)) from None
    for collector in collectors:
        collector.start()
    registry = build_registry(collectors, journal, settings.collector_timeout)
    server = MetricsServer(registry, settings.web_listen_address, settings.web_telemetry_path, web)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    log.info("listening", extra={"address": settings.web_listen_address, "scheme": server.scheme,
                                 "collectors": ",".join(c.name for c in collectors),
                                 "journal": str(settings.journal_path)})
    stop.wait()
    log.info("shutting down")
    server.shutdown()
    for collector in collectors:
        collector.stop()
    journal.close()
    return 0


from exporter.attest.cli import attest

main.add_command(attest)
