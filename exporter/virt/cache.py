"""Domain XML parsed once per domain and change, shared by the collectors (keyed by UUID).

An entry is dropped when libvirt reports a lifecycle event for the domain (a define, start or undefine can change
its XML) and the whole cache is dropped on reconnect, since events may have been missed while disconnected.

``XMLDesc`` waits for the domain's job (up to libvirt's 30 s job timeout): a start of a large confidential guest,
a migration or a monitor command to a stuck QEMU holds it. Which domain is locked cannot be told reliably from the
outside (the job may be taken between the NOWAIT stats call and the XML fetch), so a caller that must not block
passes ``wait``: the fetch then runs in a worker thread and the caller gets ``DefinitionLate`` when it is not
answered in time; the fetch completes in the background and fills the cache for the next caller.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import libvirt

from exporter.virt.connection import LibvirtConnection
from exporter.virt.domain_xml import DomainInfo, DomainXMLError, parse_domain_xml

log = logging.getLogger(__name__)

XML_WAIT = 1.0  # s a scrape or event waits for XMLDesc: a free domain's answers in milliseconds
# Bounds the threads left waiting on locked domains' XMLDesc; beyond them a domain is late at once. With the one bulk
# stats call that may wait on a hung QEMU (exporter.virt.bulk_stats), at most 4 requests of the connection wait:
# libvirtd stops reading a connection with max_client_requests (5 by default) in flight, so one stays free.
FETCH_THREADS = 3


class DefinitionLate(Exception):
    """``XMLDesc`` did not answer within the caller's wait (the domain's job is held); it is still being fetched."""


class DomainCache:
    def __init__(self, connection: LibvirtConnection) -> None:
        self._infos: dict[str, DomainInfo] = {}
        self._last_known: dict[str, DomainInfo] = {}  # survives invalidation: an undefined domain's last XML
        self._lock = threading.Lock()
        self.parses = 0  # how many XML documents were parsed; lets tests prove the cache works
        self._fetching: dict[str, Future[DomainInfo | None]] = {}
        self._slots = threading.BoundedSemaphore(FETCH_THREADS)
        connection.on_domain_event(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle)
        # <metadata> (descriptive labels) changes without a lifecycle event, e.g. ``virsh metadata``.
        connection.on_domain_event(libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, self._on_metadata)
        connection.on_reconnect(self.clear)

    def info(self, dom: libvirt.virDomain, wait: float | None = None) -> DomainInfo | None:
        """The parsed definition of ``dom``; None if the domain vanished or its XML is unusable.

        With ``wait``, libvirt is asked from a worker thread and ``DefinitionLate`` is raised when it has not
        answered after ``wait`` seconds; without, the caller waits as long as libvirt does."""
        uuid = dom.UUIDString()
        with self._lock:
            cached = self._infos.get(uuid)
            pending = None if cached is not None or wait is None else self._fetching.get(uuid)
            if cached is None and wait is not None and pending is None:
                if not self._slots.acquire(blocking=False):
                    raise DefinitionLate(uuid)  # every fetch thread waits on a locked domain already
                pending = self._fetching[uuid] = self._fetch_in_thread(dom, uuid)
        if cached is not None:
            return cached
        if pending is None:
            return self._fetch(dom, uuid)
        try:
            return pending.result(timeout=wait)
        except FutureTimeout:
            raise DefinitionLate(uuid) from None

    def _fetch_in_thread(self, dom: libvirt.virDomain, uuid: str) -> Future[DomainInfo | None]:
        """A daemon thread, not a pool's: a fetch stuck on a frozen libvirtd must not hold up the exporter's exit."""
        future: Future[DomainInfo | None] = Future()

        def run() -> None:
            try:
                future.set_result(self._fetch(dom, uuid))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller, who re-raises it
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._fetching.pop(uuid, None)
                self._slots.release()

        threading.Thread(target=run, name=f"domain-xml-{uuid}", daemon=True).start()
        return future

    def _fetch(self, dom: libvirt.virDomain, uuid: str) -> DomainInfo | None:
        try:
            info = parse_domain_xml(dom.XMLDesc(0))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            return None  # destroyed and undefined between listing and reading: simply gone
        except DomainXMLError as exc:
            log.warning("unusable domain XML", extra={"domain_uuid": uuid, "error": str(exc)})
            return None
        with self._lock:
            self._infos[uuid] = info
            self._last_known[uuid] = info
            self.parses += 1
        return info

    def known(self, dom: libvirt.virDomain) -> DomainInfo | None:
        """The cached or last-known definition, without asking libvirt. ``XMLDesc`` waits for the domain's job,
        so a locked domain (migration, a stuck monitor) must be served from here rather than block the caller."""
        return self.last_known(dom.UUIDString())  # UUIDString is answered client-side, no RPC

    def cached(self, uuid: str) -> bool:
        with self._lock:
            return uuid in self._infos

    def invalidate(self, uuid: str) -> None:
        with self._lock:
            old = self._infos.pop(uuid, None)
            if old is not None:
                self._last_known[uuid] = old

    def last_known(self, uuid: str) -> DomainInfo | None:
        """The definition seen before the latest invalidation (e.g. of a domain that is now undefined)."""
        with self._lock:
            return self._infos.get(uuid) or self._last_known.get(uuid)

    def retain(self, uuids: set[str]) -> None:
        """Forget domains that no longer exist."""
        with self._lock:
            for uuid in set(self._infos) - uuids:
                del self._infos[uuid]
            for uuid in set(self._last_known) - uuids:
                del self._last_known[uuid]

    def clear(self) -> None:
        """Forget current definitions (they may have changed unseen); last-known ones stay for undefine events."""
        with self._lock:
            self._infos.clear()

    def prime(self, conn: libvirt.virConnect) -> None:
        """Read every domain's definition now, so that events about it later can name its TEE type."""
        for dom in conn.listAllDomains(0):
            self.info(dom)

    def _on_lifecycle(self, _conn: Any, dom: libvirt.virDomain, _event: int, _detail: int, _opaque: Any) -> None:
        self.invalidate(dom.UUIDString())

    def _on_metadata(self, _conn: Any, dom: libvirt.virDomain, _kind: int, _uri: Any, _opaque: Any) -> None:
        self.invalidate(dom.UUIDString())


def shared_cache(shared: dict[str, Any], connection: LibvirtConnection) -> DomainCache:
    key = f"libvirt.domain_cache:{connection.uri}"
    if key not in shared:
        shared[key] = DomainCache(connection)
    return shared[key]
