"""libvirt domain jobs (migration, save, dump, snapshot, backup): which domains to ask about, and their
``virDomainGetJobStats`` typed parameters named. Pure.

``getAllDomainStats`` has no job group, so asking every domain would be one call per domain per scrape. Only
domains whose statistics say a job may be running are asked: one whose job-bound statistics NOWAIT skipped (its
job lock is held), one paused by a job (``virDomainPausedReason`` migration, save, dump, snapshot, post-copy), or
one that sent a ``MIGRATION_ITERATION`` event since its last ``JOB_COMPLETED`` (a live migration keeps the domain
running). The collector asks only while ``virDomainGetControlInfo`` says no synchronous job runs: the query job
that ``virDomainGetJobStats`` takes would wait for one.

Parameter names and units: libvirt-domain.h, ``VIR_DOMAIN_JOB_*`` macros (times in milliseconds, sizes in bytes,
``memory_dirty_rate`` in pages per second).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import libvirt

OPERATIONS: dict[int, str] = {  # virDomainJobOperation
    libvirt.VIR_DOMAIN_JOB_OPERATION_UNKNOWN: "unknown",
    libvirt.VIR_DOMAIN_JOB_OPERATION_START: "start",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SAVE: "save",
    libvirt.VIR_DOMAIN_JOB_OPERATION_RESTORE: "restore",
    libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN: "migration_in",
    libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT: "migration_out",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SNAPSHOT: "snapshot",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SNAPSHOT_REVERT: "snapshot_revert",
    libvirt.VIR_DOMAIN_JOB_OPERATION_DUMP: "dump",
    libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP: "backup",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SNAPSHOT_DELETE: "snapshot_delete",
}

# (job stats key, metric suffix, scale to the metric's unit, help): what the peer exporters cannot show.
FIELDS: tuple[tuple[str, str, float, str], ...] = (
    ("time_elapsed", "elapsed_seconds", 1e-3, "Time since the job started."),
    ("data_total", "data_total_bytes", 1, "Bytes the job has to transfer in total (estimate for live jobs)."),
    ("data_processed", "data_processed_bytes", 1, "Bytes transferred so far."),
    ("data_remaining", "data_remaining_bytes", 1, "Bytes still to transfer."),
    ("memory_total", "memory_total_bytes", 1, "Guest memory the job has to transfer."),
    ("memory_processed", "memory_processed_bytes", 1, "Guest memory transferred so far."),
    ("memory_remaining", "memory_remaining_bytes", 1, "Guest memory still to transfer."),
    ("memory_bps", "memory_bytes_per_second", 1, "Guest memory transfer rate."),
    ("memory_dirty_rate", "memory_dirty_pages_per_second", 1, "Rate at which the guest dirties memory pages."),
    ("memory_iteration", "memory_iteration", 1, "Memory transfer pass the job is in (live migration)."),
    ("downtime", "downtime_seconds", 1e-3, "Expected (running job) or measured (completed job) downtime."),
)

_PAUSED_BY_JOB = {libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_SAVE, libvirt.VIR_DOMAIN_PAUSED_DUMP,
                  libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY}


def operation_name(params: Mapping[str, Any]) -> str:
    return OPERATIONS.get(int(params.get("operation", 0)), "unknown")


def paused_by_job(stats: Mapping[str, Any]) -> bool:
    return stats.get("state.state") == libvirt.VIR_DOMAIN_PAUSED and stats.get("state.reason") in _PAUSED_BY_JOB


def job_fields(params: Mapping[str, Any]) -> dict[str, float]:
    """``{metric suffix: value}`` for the parameters present, in the metric's unit."""
    return {suffix: params[key] * scale for key, suffix, scale, _ in FIELDS if key in params}


class MigrationTracker:
    """Domains (UUIDs) that reported a migration iteration and no completed job since; fed by libvirt events."""

    def __init__(self) -> None:
        self._uuids: set[str] = set()
        self._lock = threading.Lock()

    def on_iteration(self, _conn: Any, dom: libvirt.virDomain, _iteration: int, _opaque: Any) -> None:
        with self._lock:
            self._uuids.add(dom.UUIDString())

    def on_completed(self, _conn: Any, dom: libvirt.virDomain, _params: Any, _opaque: Any) -> None:
        self.done(dom.UUIDString())

    def done(self, uuid: str) -> None:
        with self._lock:
            self._uuids.discard(uuid)

    def migrating(self, uuid: str) -> bool:
        with self._lock:
            return uuid in self._uuids
