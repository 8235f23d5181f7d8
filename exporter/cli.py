"""``tee-exporter``: flags in the node_exporter style, every one also settable in ``--config.file`` (flags win)."""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from common import __version__
from common.http import MetricsServer, ServeError
from common.log import setup_logging
from common.settings import click_options, flag, given
from common.webconfig import WebConfigSource
from exporter import config
from exporter.attest.errors import EvidenceError
from exporter.attest.policy import PolicyError
from exporter.collectors.base import Collector, CollectorContext
from exporter.journal import Journal
from exporter.registry import build_registry

log = logging.getLogger("exporter")

_PATH = click.Path(path_type=Path)


def _collector_options(func: Any) -> Any:
    for spec in reversed(config.COLLECTORS):
        state = "enabled" if spec.enabled_by_default else "disabled"
        func = flag(f"collector.{spec.name}", boolean=True, help=f"{spec.help} ({state} by default).")(func)
    return func


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"],
                                                            "max_content_width": 110})
@click.option("--config.file", "config_file", type=_PATH,
              help="YAML file holding any of these settings, keyed by flag name without dashes; flags win.")
@click_options(config.OPTIONS, config.Settings())
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
        settings = config.load(config_file, given(ctx, flags, config.OPTIONS))
        web = WebConfigSource(settings.web_config_file)
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
    for spec in config.COLLECTORS:
        if settings.collectors.get(spec.name):
            collectors.append(importlib.import_module(spec.module).build(ctx))
    return collectors


def run(settings: config.Settings, web: WebConfigSource) -> int:
    journal = Journal(settings.journal_path, settings.journal_max_bytes, settings.journal_fsync,
                      host=settings.host_name)
    try:
        collectors = build_collectors(settings, journal)
    except STARTUP_ERRORS as exc:
        raise click.UsageError(str(exc)) from None
    for collector in collectors:
        collector.start()
    registry = build_registry(collectors, journal, settings.collector_timeout,
                              process_metrics=not settings.web_disable_exporter_metrics)
    try:
        server = MetricsServer(registry, settings.web_listen_address, settings.web_telemetry_path, web,
                               max_requests=settings.web_max_requests)
    except ServeError as exc:
        for collector in collectors:
            collector.stop()
        raise click.UsageError(str(exc)) from None
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
