"""Per-domain metrics from ONE ``virConnectGetAllDomainStats`` call per scrape (all domains, shut-off ones too).

The call uses ``VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT``: a domain whose job lock is held (migration, slow
shutdown) is not waited for; libvirt then returns only the statistics that need no job. Such a domain is counted
in ``tee_exporter_libvirt_domains_skipped_total`` (detected as an active domain with ``balloon.current`` but no
``balloon.rss``: the latter is only read under the job). Definitions (TEE type, debug policy, size, devices) come
from the domain XML cache, so the XML is fetched and parsed once per domain and change, not per scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import libvirt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector, CollectorContext, CollectorError
from exporter.virt.cache import XML_WAIT, DefinitionLate, DomainCache, shared_cache
from exporter.virt.connection import LibvirtConnection, LibvirtUnavailable, shared_connection
from exporter.virt.domain_xml import DomainInfo
from exporter.virt.runtime_policy import RuntimePolicyTracker

log = logging.getLogger(__name__)

STATE_SHUTOFF = 5


@dataclass(frozen=True)
class DomainRecord:
    """One domain of a scrape: its parsed definition and its raw ``getAllDomainStats`` dictionary."""

    info: DomainInfo
    stats: Mapping[str, Any]


class LibvirtCollector(Collector):
    name = "libvirt"

    def __init__(self, connection: LibvirtConnection, cache: DomainCache,
                 policy: RuntimePolicyTracker | None = None) -> None:
        self.connection = connection
        self.cache = cache
        self.policy = policy
        self.skipped_total = 0
        self.late_total = 0  # domains of this scrape whose XML was not answered in time

    def stop(self) -> None:
        self.connection.close()

    def collect(self) -> Iterable[Metric]:
        try:
            records = self._records()
        except (CollectorError, LibvirtUnavailable):
            yield _up(0)
            raise
        yield _up(1)
        self.skipped_total += sum(1 for r in records if skipped_by_nowait(r.stats)) + self.late_total
        self.late_total = 0
        yield CounterMetricFamily("tee_exporter_libvirt_domains_skipped",
                                  "Active domains whose job-bound statistics were skipped (domain locked, NOWAIT).",
                                  value=self.skipped_total)
        yield from domain_families(records)
        if self.policy is not None:
            yield self.policy.family(r.info for r in records)

    def unavailable(self) -> Iterable[Metric]:
        yield _up(0)  # libvirt did not answer within the deadline: that is "unreachable" to an operator

    def _records(self) -> list[DomainRecord]:
        conn = self.connection.get()
        try:
            raw = conn.getAllDomainStats(0, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
            records = []
            for dom, stats in raw:
                # A locked domain's XMLDesc would wait for its job: use what is known of it, or skip it this
                # scrape (it is counted as skipped) until it is free.
                info = self.cache.known(dom) if skipped_by_nowait(stats) else self._definition(dom)
                if info is not None:  # None: the domain vanished during the scrape, or is locked and unknown
                    records.append(DomainRecord(info, stats))
        except libvirt.libvirtError as exc:
            self.connection.mark_failed(exc)
            raise CollectorError(f"libvirt {self.connection.uri}: {exc}") from None
        self.cache.retain({r.info.uuid for r in records})
        return records

    def _definition(self, dom: libvirt.virDomain) -> DomainInfo | None:
        """The domain's definition, unless its XML is not answered within XML_WAIT: the job may have been taken
        after the NOWAIT stats call, or be one the heuristic cannot see (a domain being started or destroyed).
        Such a domain is then served like a locked one, and counted as skipped."""
        try:
            return self.cache.info(dom, wait=XML_WAIT)
        except DefinitionLate:
            self.late_total += 1
            return self.cache.known(dom)


def _up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily("tee_libvirt_up", "1 if libvirt answered this scrape within the deadline, else 0.",
                             value=value)


def skipped_by_nowait(stats: Mapping[str, Any]) -> bool:
    return stats.get("state.state", STATE_SHUTOFF) != STATE_SHUTOFF and "balloon.current" in stats \
        and "balloon.rss" not in stats


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def domain_families(records: list[DomainRecord]) -> Iterator[Metric]:
    """All per-domain families for one scrape. Pure: records in, metric families out."""
    info = _gauge("tee_domain_info", "Domain definition: TEE type and whether its launch policy allows debugging.",
                  ["domain", "uuid", "tee_type", "debug_allowed"])
    state = _gauge("tee_domain_state", "libvirt virDomainState (1 running, 3 paused, 5 shut off, ...).", ["domain"])
    vcpus = _gauge("tee_domain_vcpus", "Virtual CPUs (current).", ["domain"])
    cpu = CounterMetricFamily("tee_domain_cpu_seconds", "CPU time used by the domain.", labels=["domain"])
    mem_max = _gauge("tee_domain_memory_max_bytes", "Maximum memory of the domain.", ["domain"])
    mem = _gauge("tee_domain_memory_bytes", "Current (balloon) memory of the domain.", ["domain"])
    enc = _gauge("tee_memory_encrypted_bytes",
                 "Guest memory encrypted by the TEE (confidential domains that are not shut off).", ["domain"])
    exits = CounterMetricFamily("tee_vm_exits", "VM exits summed over vCPUs (KVM binary stats).",
                                labels=["domain"])
    records = sorted(records, key=lambda r: r.info.name)  # libvirt's order varies; stable output diffs cleanly
    for rec in records:
        i, s = rec.info, rec.stats
        name = i.name
        debug = "" if i.debug_allowed is None else str(i.debug_allowed).lower()
        info.add_metric([name, i.uuid, i.tee_type, debug], 1)
        code = int(s.get("state.state", STATE_SHUTOFF))
        state.add_metric([name], code)
        vcpus.add_metric([name], s.get("vcpu.current", i.vcpus))
        if "cpu.time" in s:
            cpu.add_metric([name], s["cpu.time"] / 1e9)
        maximum = s["balloon.maximum"] * 1024 if "balloon.maximum" in s else i.memory_bytes
        mem_max.add_metric([name], maximum)
        mem.add_metric([name], s["balloon.current"] * 1024 if "balloon.current" in s else i.current_memory_bytes)
        if i.confidential and code != STATE_SHUTOFF:
            enc.add_metric([name], maximum)
        total_exits = _vcpu_exits(s)
        if total_exits is not None:
            exits.add_metric([name], total_exits)
    yield from (info, state, vcpus, cpu, mem_max, mem, enc, exits)
    yield from _device_families(records)


def _vcpu_exits(stats: Mapping[str, Any]) -> int | None:
    values = [v for k, v in stats.items() if k.startswith("vcpu.") and k.endswith(".exits.sum")]
    return sum(values) if values else None


_BLOCK = (("rd.bytes", "block_read_bytes", "Bytes read from the block device."),
          ("wr.bytes", "block_write_bytes", "Bytes written to the block device."),
          ("rd.reqs", "block_read_requests", "Read requests to the block device."),
          ("wr.reqs", "block_write_requests", "Write requests to the block device."))
_NET = (("rx.bytes", "network_receive_bytes", "Bytes received on the interface."),
        ("tx.bytes", "network_transmit_bytes", "Bytes transmitted on the interface."),
        ("rx.pkts", "network_receive_packets", "Packets received on the interface."),
        ("tx.pkts", "network_transmit_packets", "Packets transmitted on the interface."))


def _device_families(records: list[DomainRecord]) -> Iterator[Metric]:
    for prefix, label, table in (("block", "device", _BLOCK), ("net", "interface", _NET)):
        families = {key: CounterMetricFamily(f"tee_domain_{metric}", doc, labels=["domain", label])
                    for key, metric, doc in table}
        for rec in records:
            for index in range(int(rec.stats.get(f"{prefix}.count", 0))):
                dev = rec.stats.get(f"{prefix}.{index}.name")
                if dev is None:  # e.g. user-mode networking: no host-side device, no counters
                    continue
                for key, family in families.items():
                    value = rec.stats.get(f"{prefix}.{index}.{key}")
                    if value is not None:
                        family.add_metric([rec.info.name, dev], value)
        yield from families.values()


def load_runtime_tracker(ctx: CollectorContext) -> RuntimePolicyTracker | None:
    path = ctx.settings.attestation_policy_file
    if path is None:
        return None
    from exporter.attest.policy import load_policy  # only needed when a policy is configured

    runtime = load_policy(path).runtime
    return None if runtime is None else RuntimePolicyTracker(runtime, ctx.journal)


def build(ctx: CollectorContext) -> LibvirtCollector:
    connection = shared_connection(ctx.shared, ctx.settings.libvirt_uri)
    return LibvirtCollector(connection, shared_cache(ctx.shared, connection), load_runtime_tracker(ctx))

