"""Host TEE platform state: capability and capacity (libvirt domain capabilities, kvm module parameters, the misc
cgroup), the SEV-SNP platform status, the TDX module, the PSP firmware and the TDX quote-generation service.

Every source is optional: a missing file or an unreachable libvirt leaves its series out rather than failing the
scrape. libvirt is asked under its own deadline (``libvirt_timeout``, shorter than the scrape's): a hung libvirtd
must not take the file-based series down with it, and the capabilities, which do not change while the host runs,
are served from the last answer. SEV-SNP guests draw on the SEV-ES ASID range (AMD SEV-SNP ABI spec, pub. 56860, "ASIDs"), so the kernel's
misc cgroup has no separate SNP key; their capacity is the ``sev-es`` one. The kernel sources each live in one
module of ``exporter.platform``; this module only turns them into metric families.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from common.deadline import Bounded, DeadlineExceeded
from exporter.collectors.base import Collector, CollectorContext
from exporter.collectors.qemu_procs import scan as scan_qemu
from exporter.platform import kvm_params, misc_cgroup, psp, qgs, tdx_module
from exporter.platform.problems import Problems
from exporter.platform.snp_status import SnpPlatformStatus, SnpStatusReader
from exporter.virt.cache import DomainCache, shared_cache
from exporter.virt.connection import LibvirtConnection, LibvirtUnavailable, shared_connection

log = logging.getLogger(__name__)

TEE_TYPES = ("sev", "sev-es", "sev-snp", "tdx")


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


@dataclass(frozen=True)
class Roots:
    """Where the host's filesystems are mounted (node_exporter's ``--path.*``): fixture trees in tests."""

    sys: Path
    proc: Path
    dev: Path
    cgroup: Path


class HostCollector(Collector):
    name = "host"

    def __init__(self, connection: LibvirtConnection | None, cache: DomainCache | None, roots: Roots,
                 misc_cgroups: tuple[Path, ...] = (), qgs_socket: Path | None = None,
                 snp_interval: float = 600.0, libvirt_timeout: float = 2.0) -> None:
        self.connection, self.cache, self.roots = connection, cache, roots
        self.misc_cgroups, self.qgs_socket = misc_cgroups, qgs_socket
        self._caps: DomainCaps | None = None  # capabilities do not change while the host runs
        self._bounded = Bounded("host-libvirt", libvirt_timeout)
        self.problems = Problems()
        self.snp = SnpStatusReader(roots.dev, roots.proc, self.problems, interval=snp_interval)

    def collect(self) -> Iterable[Metric]:
        enabled = kvm_params.read_enabled(self.roots.sys, self.problems)
        yield from self._capacity(enabled)
        yield from _kvm_families(enabled, kvm_params.read_requested(self.roots.proc, set(enabled), self.problems))
        yield from self._misc_children()
        yield from _tdx_families(tdx_module.read(self.roots.sys, self.problems))
        yield _psp_family(psp.read(self.roots.sys, self.problems))
        yield from _snp_families(self.snp.get(), self.snp.last_success_wall)
        yield from self._qgs(enabled.get("tdx", False))
        yield self.problems.family()

    def _capacity(self, enabled: Mapping[str, bool]) -> Iterable[Metric]:
        supported: dict[str, bool] = {}
        capacity: dict[str, int] = {}
        running: dict[str, int] = {}
        caps, counted = self._from_libvirt()
        if caps is not None:
            supported.update(caps.supported)
            capacity.update(caps.capacity)
        # Kata / Confidential Containers guests are QEMU processes libvirt does not know about.
        kata = Counter(g.tee_type for g in scan_qemu(self.roots.proc) if not g.managed)
        if counted is not None:
            running.update({tee: counted.get(tee, 0) + kata.get(tee, 0) for tee in TEE_TYPES})
        else:
            running.update(kata)
        for tee, on in enabled.items():
            supported[tee] = supported.get(tee, False) or on
        root = misc_cgroup.read(self.roots.cgroup, self.problems)
        capacity.update(root.capacity)
        running.update(root.current)  # the kernel's own count of keys in use wins where it exists
        yield _family("tee_host_tee_supported", "1 if the host can run this kind of confidential guest.", supported)
        yield _family("tee_host_tee_capacity_guests",
                      "Maximum confidential guests (SEV ASIDs, SEV-ES ASIDs also used by SEV-SNP, TDX keys).",
                      capacity)
        yield _family("tee_host_tee_guests_running",
                      "Confidential guests running: misc cgroup usage where available, else libvirt domains plus "
                      "Kata / Confidential Containers QEMU processes.", running)

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

    def _misc_children(self) -> Iterable[Metric]:
        labels = ["cgroup", "tee_type"]
        current = GaugeMetricFamily("tee_host_misc_cgroup_current_guests",
                                    "TEE keys (guests) in use in this cgroup (misc.current).", labels=labels)
        limit = GaugeMetricFamily("tee_host_misc_cgroup_max_guests",
                                  "TEE key limit of this cgroup (misc.max); absent when unlimited.", labels=labels)
        refused = CounterMetricFamily("tee_host_misc_cgroup_max_events",
                                      "Key allocations refused because this cgroup was at misc.max (misc.events).",
                                      labels=labels)
        for cgroup in self.misc_cgroups:
            usage = misc_cgroup.read(self.roots.cgroup / cgroup, self.problems)
            for family, values in ((current, usage.current), (limit, usage.max), (refused, usage.events_max)):
                for tee, value in sorted(values.items()):
                    if value is not None:
                        family.add_metric([str(cgroup), tee], float(value))
        yield from (current, limit, refused)

    def _qgs(self, tdx_enabled: bool) -> Iterable[Metric]:
        """Probed where it matters: TDX is enabled, or a socket exists. A QGS that died and removed its socket
        on a TDX host is down, not absent."""
        if self.qgs_socket is None or not (tdx_enabled or self.qgs_socket.exists()):
            return
        result = qgs.probe(self.qgs_socket)
        if not result.up:
            log.debug("qgs probe failed", extra={"path": str(self.qgs_socket), "error": result.error})
        yield GaugeMetricFamily("tee_host_qgs_up", "1 if the TDX quote-generation service socket accepts a "
                                "connection.", value=float(result.up))
        if result.connect_seconds is not None:
            yield GaugeMetricFamily("tee_host_qgs_connect_seconds", "Time to connect to the QGS socket.",
                                    value=result.connect_seconds)

def _family(name: str, doc: str, values: Mapping[str, int | bool]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["tee_type"])
    for tee in TEE_TYPES:
        if tee in values:
            family.add_metric([tee], float(values[tee]))
    return family


def _kvm_families(enabled: Mapping[str, bool], requested: Mapping[str, bool]) -> Iterable[Metric]:
    yield _family("tee_host_kvm_tee_enabled", "KVM module parameter (kvm_amd sev/sev_es/sev_snp, kvm_intel tdx): "
                  "1 if KVM enabled this TEE type.", enabled)
    yield _family("tee_host_kvm_tee_requested", "1 if the kernel command line asks for this TEE type (or leaves "
                  "the module default, which is on for SEV types and off for TDX).", requested)


def _tdx_families(module: tdx_module.TdxModule | None) -> Iterable[Metric]:
    if module is None:
        return
    if module.version is not None:
        yield _one("tee_host_tdx_module_info", "The loaded TDX module and its loader (P-SEAMLDR) versions.",
                   {"version": module.version, "seamldr_version": module.seamldr_version or ""})
    if module.remaining_updates is not None:
        yield GaugeMetricFamily("tee_host_tdx_module_remaining_updates", "Runtime TDX module updates the CPU still "
                                "accepts before a reboot is needed.", value=float(module.remaining_updates))


def _psp_family(versions: list[psp.PspVersion]) -> GaugeMetricFamily:
    family = GaugeMetricFamily("tee_host_psp_firmware_info", "AMD PSP firmware versions (AA.BB.CC.DD) reported by "
                               "the ccp driver.", labels=["device", "component", "version"])
    for v in versions:
        family.add_metric([v.device, v.component, v.version], 1)
    return family


def _snp_families(status: SnpPlatformStatus | None, read_at: float | None) -> Iterable[Metric]:
    if status is None or read_at is None:
        return
    yield _one("tee_host_snp_firmware_info", "SEV-SNP firmware API version and build (SNP_PLATFORM_STATUS).",
               {"api_version": status.api_version, "build_id": str(status.build_id)})
    yield GaugeMetricFamily("tee_host_snp_platform_guests", "Guests the SEV-SNP firmware currently manages.",
                            value=float(status.guest_count))
    yield GaugeMetricFamily("tee_host_snp_vlek_enabled", "1 if a VLEK hashstick is loaded (reports are signed "
                            "with the VLEK, not the VCEK).", value=float(status.vlek_enabled))
    tcb = GaugeMetricFamily("tee_host_snp_tcb_svn", "SEV-SNP TCB component security version: current (installed "
                            "firmware) and reported (what guest reports carry).", labels=["tcb", "component"])
    for name, version in (("current", status.current_tcb), ("reported", status.reported_tcb)):
        for component, svn in sorted(version.components().items()):
            tcb.add_metric([name, component], svn)
    yield tcb
    yield GaugeMetricFamily("tee_host_snp_status_read_timestamp_seconds", "When SNP_PLATFORM_STATUS was last "
                            "read successfully (it is cached between reads).", value=read_at)


def _one(name: str, doc: str, labels: Mapping[str, str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), 1)
    return family


def build(ctx: CollectorContext) -> HostCollector:
    s = ctx.settings
    connection = shared_connection(ctx.shared, s.libvirt_uri)
    roots = Roots(sys=s.sys_root, proc=s.proc_root, dev=s.dev_root, cgroup=s.cgroup_root)
    return HostCollector(connection, shared_cache(ctx.shared, connection), roots, misc_cgroups=s.host_misc_cgroups,
                         qgs_socket=s.host_qgs_socket, snp_interval=s.host_snp_status_interval,
                         libvirt_timeout=min(2.0, s.collector_timeout / 4))
