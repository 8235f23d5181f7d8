"""The bulk ``virConnectGetAllDomainStats`` call of a scrape, waited for at most ``STATS_WAIT``.

``VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT`` skips a domain whose job is held, but a free job it takes: the
balloon, vCPU and block groups then ask QEMU through its monitor, and a QEMU that does not answer (stopped,
hung in the kernel, overloaded) holds the call, and with it the scrape of every domain, for as long as it does not
answer (libvirt has no monitor timeout; the call then holds the domain's job, so later callers see it locked).

So the call runs in a daemon thread. When it has not answered within ``STATS_WAIT``, the scrape asks again for
``JOB_FREE_GROUPS`` only (state, CPU time, interfaces: libvirt reads them from ``/proc`` and the definition, takes
no job and never asks QEMU) and every active domain's job-bound statistics count as skipped. At most one full call
is in flight: while one waits on a QEMU, scrapes ask for the job-free groups only, so a hung QEMU ties up one
libvirtd worker and one of the connection's requests (libvirtd's ``max_client_requests``, 5 by default), not one
per scrape.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import libvirt

STATS_WAIT = 2.0  # s a scrape waits for the full bulk call: a responsive host's answers within milliseconds per domain
JOB_FREE_GROUPS = libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL \
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT

DomainStats = list[tuple[libvirt.virDomain, dict[str, Any]]]


class BulkStats:
    """One scrape's statistics of all domains: the full ``groups`` when libvirt answers in time, else the job-free
    ones."""

    def __init__(self, groups: int) -> None:
        self.groups = groups
        self._pending: Future[DomainStats] | None = None
        self._lock = threading.Lock()

    def read(self, conn: libvirt.virConnect) -> tuple[DomainStats, bool]:
        """``(stats, complete)``; ``complete`` is False when only ``JOB_FREE_GROUPS`` were read. A libvirt error of
        either call is raised to the caller."""
        with self._lock:
            future = None if self._pending is not None else self._start(conn)
            if future is not None:
                self._pending = future
        if future is not None:
            try:
                return future.result(timeout=STATS_WAIT), True
            except FutureTimeout:
                pass  # it goes on in its thread, holding the job of the QEMU it waits for
        return conn.getAllDomainStats(JOB_FREE_GROUPS, NOWAIT), False

    def _start(self, conn: libvirt.virConnect) -> Future[DomainStats]:
        """A daemon thread, not a pool's: a call stuck on a hung QEMU must not hold up the exporter's exit."""
        future: Future[DomainStats] = Future()

        def run() -> None:
            try:
                future.set_result(conn.getAllDomainStats(self.groups, NOWAIT))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting scrape, which re-raises it
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._pending = None

        threading.Thread(target=run, name="libvirt-bulk-stats", daemon=True).start()
        return future
