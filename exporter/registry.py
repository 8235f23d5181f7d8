"""Runs the enabled collectors for each scrape under one deadline and reports how each did.

A hung source (libvirt stuck in a migration, an NFS-backed /proc read) must never hang ``/metrics``: each
collector runs in its own thread, the scrape waits at most ``timeout`` seconds, and a collector that has not
finished by then is reported with ``tee_exporter_collector_success 0`` and left to finish in the background. Until
it does, later scrapes report it failed at once instead of piling up more stuck threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric

from common import __version__
from exporter.collectors.base import Collector
from exporter.journal import Journal

log = logging.getLogger(__name__)


@dataclass
class _Run:
    collector: Collector
    done: threading.Event = field(default_factory=threading.Event)
    metrics: list[Metric] = field(default_factory=list)
    error: str | None = None
    duration: float = 0.0

    def __call__(self) -> None:
        start = time.perf_counter()
        try:
            # Appended one by one so that what a collector yielded before failing (its own "up" gauge saying
            # why) is still exposed when it fails.
            for metric in self.collector.collect():
                self.metrics.append(metric)
        except Exception as exc:  # noqa: BLE001 - any failure of a source is reported, never raised into a scrape
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.duration = time.perf_counter() - start
            self.done.set()


class ScrapeCollector:
    """The one object registered with ``prometheus_client``: fans a scrape out to the collectors."""

    def __init__(self, collectors: Sequence[Collector], timeout: float) -> None:
        self.collectors = list(collectors)
        self.timeout = timeout
        self._stuck: dict[str, _Run] = {}
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        success = GaugeMetricFamily("tee_exporter_collector_success",
                                    "1 if the collector's last scrape succeeded within the deadline, else 0.",
                                    labels=["collector"])
        duration = GaugeMetricFamily("tee_exporter_collector_duration_seconds",
                                     "Time the collector's last scrape took.", labels=["collector"])
        runs = self._start_runs()
        deadline = time.monotonic() + self.timeout
        for name, run in runs.items():
            if run is None or not run.done.wait(max(0.0, deadline - time.monotonic())):
                if run is not None:
                    with self._lock:
                        self._stuck[name] = run
                    log.warning("collector timed out", extra={"collector": name, "timeout_seconds": self.timeout})
                yield from self._unavailable(name)
                success.add_metric([name], 0)
                duration.add_metric([name], self.timeout)
            elif run.error:
                log.warning("collector failed", extra={"collector": name, "error": run.error})
                yield from run.metrics
                success.add_metric([name], 0)
                duration.add_metric([name], run.duration)
            else:
                yield from run.metrics
                success.add_metric([name], 1)
                duration.add_metric([name], run.duration)
        yield success
        yield duration

    def _unavailable(self, name: str) -> Iterable[Metric]:
        collector = next(c for c in self.collectors if c.name == name)
        try:
            yield from collector.unavailable()
        except Exception as exc:  # noqa: BLE001 - a broken fallback must not break the whole scrape
            log.warning("collector fallback failed", extra={"collector": name, "error": str(exc)})

    def _start_runs(self) -> dict[str, _Run | None]:
        runs: dict[str, _Run | None] = {}
        for collector in self.collectors:
            with self._lock:
                stuck = self._stuck.get(collector.name)
                if stuck is not None and not stuck.done.is_set():
                    runs[collector.name] = None  # still hung from an earlier scrape: fail fast
                    continue
                self._stuck.pop(collector.name, None)
            run = _Run(collector)
            threading.Thread(target=run, name=f"collect-{collector.name}", daemon=True).start()
            runs[collector.name] = run
        return runs


class SelfCollector:
    """The exporter's own health: build info and the journal's write path."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def collect(self) -> Iterable[Metric]:
        info = InfoMetricFamily("tee_exporter_build", "tee-exporter version.")
        info.add_metric([], {"version": __version__})
        yield info
        j = self.journal
        yield CounterMetricFamily("tee_exporter_journal_events", "Events written to the journal.",
                                  value=j.appended)
        yield CounterMetricFamily("tee_exporter_journal_write_errors",
                                  "Journal writes that failed (disk full, I/O error); events are kept and retried.",
                                  value=j.write_errors)
        yield GaugeMetricFamily("tee_exporter_journal_backlog_events",
                                "Events waiting in memory for the journal to become writable again.",
                                value=j.backlog)
        yield CounterMetricFamily("tee_exporter_journal_dropped_events",
                                  "Events dropped because the in-memory journal backlog was full.",
                                  value=j.dropped)


def build_registry(collectors: Sequence[Collector], journal: Journal, timeout: float,
                   process_metrics: bool = False) -> CollectorRegistry:
    """``process_metrics``: prometheus_client's process_* (CPU, RSS, open fds) and python_* (GC, version)."""
    # The event-driven collectors use prometheus_client Counters/Histograms; their ``*_created`` series (the
    # exporter's start time, per label set) are noise next to node_exporter-style output. Process-wide setting.
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=False)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    registry.register(ScrapeCollector(collectors, timeout))
    registry.register(SelfCollector(journal))
    return registry
