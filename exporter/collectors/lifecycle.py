"""libvirt domain lifecycle events: transition counters, VM creation time, one journal event per transition.

Events arrive on libvirt's event loop thread (``exporter.virt.connection``); the callback only updates counters
and appends to the journal, ``collect`` reports them.

``tee_vm_creation_duration_seconds`` is the time from the QEMU process's start (``/proc/<pid>/stat`` starttime)
to libvirt's STARTED lifecycle event for the domain: process launch, firmware load and, for confidential guests,
the whole launch sequence (SEV LAUNCH_START..LAUNCH_FINISH, SNP_LAUNCH_*, TDX TD build and measurement) until
the vCPUs are resumed. The QEMU pid is libvirt's pid file ``/run/libvirt/qemu/<name>.pid``; domains without one
(other drivers) are counted but not timed.

A domain job (migration, save, dump, snapshot, backup) that completes sends ``VIR_DOMAIN_EVENT_ID_JOB_COMPLETED``
with its final statistics; jobs often end between two scrapes, so they are counted and journaled
(``domain-job-completed``) here rather than only seen in flight by the libvirt collector.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import libvirt
from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector, CollectorContext
from exporter.journal import Journal
from exporter.virt.cache import XML_WAIT, DefinitionLate, DomainCache, shared_cache
from exporter.virt.connection import LibvirtConnection, LibvirtUnavailable, shared_connection
from exporter.virt.jobs import operation_name
from exporter.virt.lifecycle_events import Transition, is_boot_resume, transition

log = logging.getLogger(__name__)

DATASET = "tee.lifecycle"
PID_DIR = Path("/run/libvirt/qemu")
BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


def process_age_seconds(proc_root: Path, pid: int) -> float | None:
    """Seconds since ``pid`` started, from ``/proc/<pid>/stat`` field 22 and ``/proc/uptime`` (proc(5))."""
    try:
        stat = (proc_root / str(pid) / "stat").read_bytes()
        uptime = float((proc_root / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # the command name may contain spaces and parentheses
    try:
        start_ticks = int(fields[19])  # field 22 overall; fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


class LifecycleCollector(Collector):
    name = "lifecycle"

    def __init__(self, connection: LibvirtConnection, cache: DomainCache, journal: Journal,
                 proc_root: Path = Path("/proc"), pid_dir: Path = PID_DIR) -> None:
        self.connection, self.cache, self.journal = connection, cache, journal
        self.proc_root, self.pid_dir = proc_root, pid_dir
        # Unregistered (registry=None): collect() hands their families to the exporter's own registry.
        self.transitions = Counter("tee_domain_lifecycle_events", "Domain lifecycle transitions seen.",
                                   ["event", "tee_type"], registry=None)
        self.creation = Histogram("tee_vm_creation_duration_seconds",
                                  "From QEMU process start to libvirt's STARTED event (see docs/exporter.md).",
                                  ["tee_type"], buckets=BUCKETS, registry=None)
        self.jobs = Counter("tee_domain_jobs_completed", "Domain jobs (migration, save, dump, ...) that completed.",
                            ["operation", "tee_type"], registry=None)
        connection.on_domain_event(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self.on_event)
        connection.on_domain_event(libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self.on_job_completed)

    def start(self) -> None:
        try:
            conn = self.connection.get()  # connect now so that events flow before the first scrape
            self.cache.prime(conn)
        except (LibvirtUnavailable, libvirt.libvirtError) as exc:
            log.warning("lifecycle events not yet available", extra={"error": str(exc)})

    def stop(self) -> None:
        self.connection.close()

    def collect(self) -> Iterable[Metric]:
        yield from self.transitions.collect()
        yield from self.creation.collect()
        yield from self.jobs.collect()
        # Reconnects (and re-registers the callback) after libvirtd came back; while it cannot, events are being
        # missed, which is this collector's failure to report (the counters above are still exposed). No waiting:
        # the counters must not miss the scrape deadline because libvirtd hangs.
        self.connection.get(wait=False)

    def on_event(self, _conn: Any, dom: libvirt.virDomain, event: int, detail: int, _opaque: Any) -> None:
        try:
            self._handle(dom, event, detail)
        except Exception:  # an exception must never escape into libvirt's event loop
            log.exception("lifecycle event handling failed")

    def on_job_completed(self, _conn: Any, dom: libvirt.virDomain, params: dict[str, Any], _opaque: Any) -> None:
        try:
            self._job_completed(dom, params)
        except Exception:  # as above: never into libvirt's event loop
            log.exception("job completion handling failed")

    def _job_completed(self, dom: libvirt.virDomain, params: dict[str, Any]) -> None:
        name, uuid = dom.name(), dom.UUIDString()
        info = self._info(dom, uuid)
        tee = info.tee_type if info is not None else "unknown"
        operation = operation_name(params)
        self.jobs.labels(operation, tee).inc()
        stats = {k: v for k, v in params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        doc = self.journal.event(
            action="domain-job-completed", category=["host"], type=["end"], dataset=DATASET, outcome="success",
            reason=operation, message=f"domain {name} job {operation} completed",
            tee={"type": tee, "vm": {"name": name, "uuid": uuid}, "job": {"operation": operation, "stats": stats}},
        )
        if isinstance(params.get("time_elapsed"), int) and params["time_elapsed"] >= 0:
            doc["event"]["duration"] = params["time_elapsed"] * 1_000_000  # ms -> ns
        self.journal.append(doc)

    def _handle(self, dom: libvirt.virDomain, event: int, detail: int) -> None:
        named = transition(event, detail)
        if named is None:
            return
        if is_boot_resume(event, self._running_reason(dom)):
            return  # part of the start that the STARTED event right after it records
        name, uuid = dom.name(), dom.UUIDString()
        info = self._info(dom, uuid)
        tee = info.tee_type if info is not None else "unknown"
        duration = self._creation_seconds(name) if named.event == "started" else None
        self.transitions.labels(named.event, tee).inc()
        if duration is not None:
            self.creation.labels(tee).observe(duration)
        doc = self._journal_event(named, name, uuid, tee, duration)
        if info is not None and info.debug_allowed is not None:  # an auditor asks: was this guest debuggable?
            doc["tee"]["vm"]["debug_allowed"] = info.debug_allowed
        self.journal.append(doc)

    @staticmethod
    def _running_reason(dom: libvirt.virDomain) -> int | None:
        try:
            state, reason = dom.state()  # read from libvirt's domain object, no domain job: never blocks on one
        except libvirt.libvirtError:
            return None
        return reason if state == libvirt.VIR_DOMAIN_RUNNING else None

    def _info(self, dom: libvirt.virDomain, uuid: str) -> Any:
        # This runs in libvirt's event loop thread. Events such as "suspended (migrated)" arrive while the domain's
        # job is held, and XMLDesc would wait for that job and stall every event and keepalive behind it: ask
        # libvirt only about domains never seen before (just defined, not locked).
        known = self.cache.known(dom)
        if known is not None:
            return known
        try:  # bounded: a just-defined domain may already be locked by its start (a large SNP guest's takes long)
            return self.cache.info(dom, wait=XML_WAIT)
        except (libvirt.libvirtError, DefinitionLate):
            return None

    def _creation_seconds(self, name: str) -> float | None:
        try:
            pid = int((self.pid_dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return process_age_seconds(self.proc_root, pid)

    def _journal_event(self, named: Transition, name: str, uuid: str, tee: str,
                       duration: float | None) -> dict[str, Any]:
        doc = self.journal.event(
            action=f"domain-{named.event}", category=["host"], type=[named.ecs_type], dataset=DATASET,
            outcome=named.outcome, reason=named.detail,
            message=f"domain {name} {named.event} ({named.detail})",
            tee={"type": tee, "vm": {"name": name, "uuid": uuid, "state": named.event, "detail": named.detail}},
        )
        if duration is not None:
            doc["event"]["duration"] = int(duration * 1e9)
        return doc


def build(ctx: CollectorContext) -> LifecycleCollector:
    connection = shared_connection(ctx.shared, ctx.settings.libvirt_uri)
    return LifecycleCollector(connection, shared_cache(ctx.shared, connection), ctx.journal,
                              proc_root=ctx.settings.proc_root)
