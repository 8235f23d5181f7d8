"""Host TEE capability and capacity: libvirt domain capabilities, kvm module parameters, the misc cgroup.

Every source is optional: a missing file or an unreachable libvirt leaves its series out rather than failing the
scrape. libvirt is asked under its own deadline (``libvirt_timeout``, shorter than the scrape's): a hung libvirtd
must not take the file-based series down with it, and the capabilities, which do not change while the host runs,
are served from the last answer. SEV-SNP guests draw on the SEV-ES ASID range (AMD SEV-SNP ABI spec, pub. 56860, "ASIDs"), so the kernel's
misc cgroup has no separate SNP key; their capacity is the ``sev-es`` one.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from common.deadline import Bounded, DeadlineExceeded
from exporter.collectors.base import Collector, CollectorContext
from exporter.virt.cache import DomainCache, shared_cache
from exporter.virt.connection import LibvirtConnection, LibvirtUnavailable, shared_connection

log = logging.getLogger(__name__)

TEE_TYPES = ("sev", "sev-es", "sev-snp", "tdx")
_MISC_KEYS = {"sev": "sev", "sev_es": "sev-es", "tdx": "tdx"}  # misc cgroup resource -> tee_type
_KVM_PARAMS = (("kvm_amd", "sev", "sev"), ("kvm_amd", "sev_es", "sev-es"), ("kvm_amd", "sev_snp", "sev-snp"),
               ("kvm_intel", "tdx", "tdx"))


@dataclass
class DomainCaps:
    """What ``virConnectGetDomainCapabilities`` says about confidential guests."""

    supported: dict[str, bool] = field(default_factory=dict)
    capacity: dict[str, int] = field(default_factory=dict)


def parse_domain_capabilities(data: bytes | str) -> DomainCaps:
    """Parse libvirt's domain capabilities XML (formatdomaincaps.html, "SEV capabilities", "launchSecurity")."""
    root = ET.fromstring(data)
    caps = DomainCaps()
    sev = root.find("features/sev")
    if sev is not None:
        caps.supported["sev"] = sev.get("supported") == "yes"
        for tag, tee in (("maxGuests", "sev"), ("maxESGuests", "sev-es")):
            text = sev.findtext(tag)
            if text is not None and text.strip().isdigit():
                caps.capacity[tee] = int(text)
        if "sev-es" in caps.capacity:
            caps.supported["sev-es"] = caps.supported["sev"] and caps.capacity["sev-es"] > 0
    tdx = root.find("features/tdx")
    if tdx is not None:
        caps.supported["tdx"] = tdx.get("supported") == "yes"
    sectypes = root.find("features/launchSecurity")
    if sectypes is not None and sectypes.get("supported") == "yes":
        for value in sectypes.iterfind("enum[@name='sectype']/value"):
            if value.text in TEE_TYPES:
                caps.supported[value.text] = True
    return caps


def parse_flat_keyed(data: bytes | str) -> dict[str, int]:
    """A cgroup v2 flat-keyed file (``misc.capacity``: ``sev 509``); unparseable lines are skipped."""
    text = data.decode() if isinstance(data, bytes) else data
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def parse_kvm_param(data: bytes | str) -> bool:
    text = (data.decode() if isinstance(data, bytes) else data).strip()
    return text in ("Y", "y", "1")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


class HostCollector(Collector):
    name = "host"

    def __init__(self, connection: LibvirtConnection | None, cache: DomainCache | None, sys_root: Path,
                 cgroup_root: Path, libvirt_timeout: float = 2.0) -> None:
        self.connection, self.cache = connection, cache
        self.sys_root, self.cgroup_root = sys_root, cgroup_root
        self._caps: DomainCaps | None = None  # capabilities do not change while the host runs
        self._bounded = Bounded("host-libvirt", libvirt_timeout)

    def collect(self) -> Iterable[Metric]:
        supported: dict[str, bool] = {}
        capacity: dict[str, int] = {}
        running: dict[str, int] = {}
        caps, counted = self._from_libvirt()
        if caps is not None:
            supported.update(caps.supported)
            capacity.update(caps.capacity)
        if counted is not None:
            running.update({tee: counted.get(tee, 0) for tee in TEE_TYPES})
        for module, param, tee in _KVM_PARAMS:
            text = _read(self.sys_root / "module" / module / "parameters" / param)
            if text is not None:
                supported[tee] = supported.get(tee, False) or parse_kvm_param(text)
        for name, target in (("misc.capacity", capacity), ("misc.current", running)):
            text = _read(self.cgroup_root / name)
            if text is not None:
                target.update({_MISC_KEYS[k]: v for k, v in parse_flat_keyed(text).items() if k in _MISC_KEYS})
        yield _family("tee_host_tee_supported", "1 if the host can run this kind of confidential guest.", supported)
        yield _family("tee_host_tee_capacity_guests",
                      "Maximum confidential guests (SEV ASIDs, SEV-ES ASIDs also used by SEV-SNP, TDX keys).",
                      capacity)
        yield _family("tee_host_tee_guests_running",
                      "Confidential guests running (misc cgroup usage where available, else counted domains).",
                      running)

    def _from_libvirt(self) -> tuple[DomainCaps | None, Counter[str] | None]:
        if self.connection is None:
            return None, None
        try:
            return self._bounded(self._query_libvirt)
        except (DeadlineExceeded, LibvirtUnavailable, libvirt.libvirtError, ET.ParseError) as exc:
            # libvirt being down is the libvirt collector's failure to report; host files still count.
            log.debug("host collector: libvirt unavailable", extra={"error": str(exc)})
            return self._caps, None

    def _query_libvirt(self) -> tuple[DomainCaps, Counter[str]]:
        assert self.connection is not None
        conn = self.connection.get()
        if self._caps is None:
            self._caps = parse_domain_capabilities(conn.getDomainCapabilities(None, None, None, None, 0))
        counted: Counter[str] = Counter()
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            info = (self.cache.known(dom) or self.cache.info(dom)) if self.cache else None
            if info is not None and info.confidential:
                counted[info.tee_type] += 1
        return self._caps, counted


def _family(name: str, doc: str, values: Mapping[str, int | bool]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["tee_type"])
    for tee in TEE_TYPES:
        if tee in values:
            family.add_metric([tee], float(values[tee]))
    return family


def build(ctx: CollectorContext) -> HostCollector:
    s = ctx.settings
    connection = shared_connection(ctx.shared, s.libvirt_uri)
    return HostCollector(connection, shared_cache(ctx.shared, connection), s.sys_root, s.cgroup_root,
                         libvirt_timeout=min(2.0, s.collector_timeout / 4))
