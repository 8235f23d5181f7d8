"""Per-domain metrics from ONE ``virConnectGetAllDomainStats`` call per scrape (all domains, shut-off ones too).

The call uses ``VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT``: a domain whose job lock is held (migration, slow
shutdown) is not waited for; libvirt then returns only the statistics that need no job. Such a domain is counted
in ``tee_exporter_libvirt_domains_skipped_total`` (detected as an active domain with ``balloon.current`` but no
``balloon.rss``: the latter is only read under the job). A free job the call takes, and then waits for the
domain's QEMU: the scrape waits for it at most ``STATS_WAIT`` and else reads the job-free groups only
(``exporter.virt.bulk_stats``); every active domain then counts as skipped. Definitions (TEE type, debug policy, size, devices) come
from the domain XML cache, so the XML is fetched and parsed once per domain and change, not per scrape.

Besides the bulk call, a scrape asks libvirt for its versions and, only for domains whose statistics say a job may
be running (``exporter.virt.jobs``), for that job's statistics. The vCPU and job families are built in
``libvirt_vcpu`` and ``libvirt_jobs``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import libvirt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter import config
from exporter.collectors.base import Collector, CollectorContext, CollectorError
from exporter.collectors.libvirt_jobs import JobRecord, job_families
from exporter.collectors.libvirt_vcpu import OtherExits, vcpu_families
from exporter.collectors.samples import add_sample
from exporter.virt.bulk_stats import BulkStats
from exporter.virt.cache import XML_WAIT, DefinitionLate, DomainCache, shared_cache
from exporter.virt.connection import LibvirtConnection, LibvirtUnavailable, shared_connection
from exporter.virt.domain_xml import DomainInfo
from exporter.virt.jobs import MigrationTracker, paused_by_job
from exporter.virt.metadata import LabelMap, MetadataLabelError, parse_label_map
from exporter.virt.runtime_policy import RuntimePolicyTracker
from exporter.virt.versions import version_family

log = logging.getLogger(__name__)

STATE_SHUTOFF = 5

# The groups this collector reads, requested in its one bulk call (0 would add vm.*, dirtyrate, perf, iothread
# and memory-bandwidth groups that nothing here uses).
STATS_GROUPS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
                | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)


@dataclass(frozen=True)
class DomainRecord:
    """One domain of a scrape: its parsed definition and its raw ``getAllDomainStats`` dictionary."""

    info: DomainInfo
    stats: Mapping[str, Any]


class LibvirtCollector(Collector):
    name = "libvirt"

    def __init__(self, connection: LibvirtConnection, cache: DomainCache,
                 policy: RuntimePolicyTracker | None = None, per_vcpu: bool = False,
                 metadata_labels: LabelMap | None = None) -> None:
        self.connection = connection
        self.cache = cache
        self.policy = policy
        self.per_vcpu = per_vcpu
        self.metadata_labels = metadata_labels
        self.skipped_total = 0
        self.bulk = BulkStats(STATS_GROUPS)
        self.other_exits = OtherExits()
        self.migrations = MigrationTracker()
        connection.on_domain_event(libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, self.migrations.on_iteration)
        connection.on_domain_event(libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self.migrations.on_completed)

    def stop(self) -> None:
        self.connection.close()

    def collect(self) -> Iterable[Metric]:
        try:
            records, jobs, versions, skipped = self._records()
        except (CollectorError, LibvirtUnavailable):
            yield _up(0)
            raise
        yield _up(1)
        yield versions
        self.skipped_total += skipped
        yield CounterMetricFamily("tee_exporter_libvirt_domains_skipped",
                                  "Active domains whose job-bound statistics were skipped (domain locked, NOWAIT).",
                                  value=self.skipped_total)
        yield from domain_families(records)
        yield from vcpu_families(((r.info, r.stats) for r in sorted(records, key=lambda r: r.info.name)),
                                 self.per_vcpu, self.other_exits)
        yield from job_families(jobs)
        if self.metadata_labels is not None:
            yield metadata_family(records, self.metadata_labels)
        if self.policy is not None:
            yield self.policy.family(r.info for r in records)

    def unavailable(self) -> Iterable[Metric]:
        yield _up(0)  # libvirt did not answer within the deadline: that is "unreachable" to an operator

    def _records(self) -> tuple[list[DomainRecord], list[JobRecord], Metric, int]:
        """This scrape's domains, their jobs, the versions, and how many active domains were skipped: their
        job-bound statistics are missing (NOWAIT, or the bulk call was late) or their XML was late."""
        conn = self.connection.get()
        try:
            raw, complete = self.bulk.read(conn)
            records, jobs, skipped = [], [], 0
            for dom, stats in raw:
                # A locked domain's XMLDesc would wait for its job: use what is known of it, or skip it this
                # scrape (it is counted as skipped) until it is free.
                locked = skipped_by_nowait(stats)
                info, late = (self.cache.known(dom), False) if locked else self._definition(dom)
                skipped += locked or late or (not complete and _active(stats))
                if info is None:  # the domain vanished during the scrape, or is locked and unknown
                    continue
                records.append(DomainRecord(info, stats))
                if self._job_possible(info.uuid, stats):
                    job = self._job(dom, info)
                    if job is not None:
                        jobs.append(job)
            versions = version_family(conn)
        except libvirt.libvirtError as exc:
            self.connection.mark_failed(exc)
            raise CollectorError(f"libvirt {self.connection.uri}: {exc}") from None
        uuids = {r.info.uuid for r in records}
        self.cache.retain(uuids)
        self.other_exits.retain(uuids)
        return records, jobs, versions, skipped

    def _job_possible(self, uuid: str, stats: Mapping[str, Any]) -> bool:
        return skipped_by_nowait(stats) or paused_by_job(stats) or self.migrations.migrating(uuid)

    def _job(self, dom: libvirt.virDomain, info: DomainInfo) -> JobRecord | None:
        try:
            # virDomainGetJobStats takes a query job, which waits while a synchronous job holds the domain (a
            # monitor command that QEMU does not answer holds it for good). virDomainGetControlInfo, read without
            # any job, says OK when no synchronous job runs; an asynchronous one (migration, save, dump) admits
            # the query. Otherwise ask again next scrape.
            if dom.controlInfo()[0] != libvirt.VIR_DOMAIN_CONTROL_OK:
                return None
            params = dom.jobStats()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _NO_JOB_ERRORS:
                raise
            params = {}  # gone, stopped meanwhile, or a driver without jobs: no job to report
        if params.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            self.migrations.done(info.uuid)  # a migration that ended without our seeing its completion
            return None
        return JobRecord(info.name, params)

    def _definition(self, dom: libvirt.virDomain) -> tuple[DomainInfo | None, bool]:
        """The domain's definition and whether its XML was late (not answered within XML_WAIT): the job may have
        been taken after the NOWAIT stats call, or be one the heuristic cannot see (a domain being started or
        destroyed). A late domain is then served like a locked one, and counted as skipped."""
        try:
            return self.cache.info(dom, wait=XML_WAIT), False
        except DefinitionLate:
            return self.cache.known(dom), True


_NO_JOB_ERRORS = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_NO_SUPPORT}


def metadata_family(records: list[DomainRecord], labels: LabelMap) -> GaugeMetricFamily:
    family = GaugeMetricFamily("tee_domain_metadata_info",
                               "Descriptive labels from the domain's <metadata> (--collector.libvirt.metadata-labels).",
                               labels=["domain", "uuid", *labels.names])
    for rec in sorted(records, key=lambda r: r.info.name):
        family.add_metric([rec.info.name, rec.info.uuid, *labels.values(rec.info.metadata)], 1)
    return family


def _up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily("tee_libvirt_up", "1 if libvirt answered this scrape within the deadline, else 0.",
                             value=value)


def _active(stats: Mapping[str, Any]) -> bool:
    return stats.get("state.state", STATE_SHUTOFF) != STATE_SHUTOFF


def skipped_by_nowait(stats: Mapping[str, Any]) -> bool:
    return _active(stats) and "balloon.current" in stats and "balloon.rss" not in stats


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
    records = sorted(records, key=lambda r: r.info.name)  # libvirt's order varies; stable output diffs cleanly
    for rec in records:
        i, s = rec.info, rec.stats
        dom = {"domain": i.name}  # shared by this domain's samples
        debug = "" if i.debug_allowed is None else str(i.debug_allowed).lower()
        info.add_metric([i.name, i.uuid, i.tee_type, debug], 1)
        code = int(s.get("state.state", STATE_SHUTOFF))
        add_sample(state, dom, code)
        add_sample(vcpus, dom, s.get("vcpu.current", i.vcpus))
        if "cpu.time" in s:
            add_sample(cpu, dom, s["cpu.time"] / 1e9)
        maximum = s["balloon.maximum"] * 1024 if "balloon.maximum" in s else i.memory_bytes
        add_sample(mem_max, dom, maximum)
        add_sample(mem, dom, s["balloon.current"] * 1024 if "balloon.current" in s else i.current_memory_bytes)
        if i.confidential and code != STATE_SHUTOFF:
            add_sample(enc, dom, maximum)
    yield from (info, state, vcpus, cpu, mem_max, mem, enc)
    yield from _balloon_families(records)
    yield from _device_families(records)


# balloon.<key> (KiB for sizes; libvirt's virDomainMemoryStatTags, filled by the guest's virtio-balloon driver
# except rss, which the host measures): (key, metric, scale, counter?, help).
_BALLOON = (("rss", "memory_rss_bytes", 1024, False, "Resident set of the domain's QEMU process on the host."),
            ("unused", "memory_unused_bytes", 1024, False, "Memory the guest leaves unused (guest-reported)."),
            ("available", "memory_available_bytes", 1024, False, "Memory the guest sees as total (guest-reported)."),
            ("usable", "memory_usable_bytes", 1024, False,
             "Memory the guest can reclaim without swapping (guest-reported)."),
            ("disk_caches", "memory_disk_caches_bytes", 1024, False, "Guest page cache (guest-reported)."),
            ("swap_in", "memory_swap_in_bytes", 1024, True, "Memory the guest swapped in (guest-reported)."),
            ("swap_out", "memory_swap_out_bytes", 1024, True, "Memory the guest swapped out (guest-reported)."),
            ("major_fault", "memory_major_faults", 1, True, "Major page faults in the guest (guest-reported)."),
            ("minor_fault", "memory_minor_faults", 1, True, "Minor page faults in the guest (guest-reported)."))


def _balloon_families(records: list[DomainRecord]) -> Iterator[Metric]:
    for key, metric, scale, counter, doc in _BALLOON:
        family: Metric = (CounterMetricFamily if counter else GaugeMetricFamily)(
            f"tee_domain_{metric}", doc, labels=["domain"])
        for rec in records:
            value = rec.stats.get(f"balloon.{key}")
            if value is not None:
                add_sample(family, {"domain": rec.info.name}, value * scale)
        yield family


# <prefix>.<n>.<key>: (key, metric, scale, counter?, help); times are nanoseconds, sizes bytes.
_BLOCK = (("rd.bytes", "block_read_bytes", 1, True, "Bytes read from the block device."),
          ("wr.bytes", "block_write_bytes", 1, True, "Bytes written to the block device."),
          ("rd.reqs", "block_read_requests", 1, True, "Read requests to the block device."),
          ("wr.reqs", "block_write_requests", 1, True, "Write requests to the block device."),
          ("fl.reqs", "block_flush_requests", 1, True, "Flush requests to the block device."),
          ("rd.times", "block_read_seconds", 1e-9, True, "Time spent on reads."),
          ("wr.times", "block_write_seconds", 1e-9, True, "Time spent on writes."),
          ("fl.times", "block_flush_seconds", 1e-9, True, "Time spent on flushes."),
          ("allocation", "block_allocation_bytes", 1, False, "Highest written offset (or bytes allocated) on the host."),
          ("capacity", "block_capacity_bytes", 1, False, "Size of the disk as the guest sees it."),
          ("physical", "block_physical_bytes", 1, False, "Size of the disk's image on the host."))
_NET = (("rx.bytes", "network_receive_bytes", 1, True, "Bytes received on the interface."),
        ("tx.bytes", "network_transmit_bytes", 1, True, "Bytes transmitted on the interface."),
        ("rx.pkts", "network_receive_packets", 1, True, "Packets received on the interface."),
        ("tx.pkts", "network_transmit_packets", 1, True, "Packets transmitted on the interface."),
        ("rx.errs", "network_receive_errors", 1, True, "Receive errors on the interface."),
        ("tx.errs", "network_transmit_errors", 1, True, "Transmit errors on the interface."),
        ("rx.drop", "network_receive_drops", 1, True, "Received packets dropped."),
        ("tx.drop", "network_transmit_drops", 1, True, "Transmitted packets dropped."))


def _device_families(records: list[DomainRecord]) -> Iterator[Metric]:
    for prefix, label, table in (("block", "device", _BLOCK), ("net", "interface", _NET)):
        families = {key: (CounterMetricFamily if counter else GaugeMetricFamily)(
                        f"tee_domain_{metric}", doc, labels=["domain", label])
                    for key, metric, _, counter, doc in table}
        scales = {key: scale for key, _, scale, _, _ in table}
        for rec in records:
            for index in range(int(rec.stats.get(f"{prefix}.count", 0))):
                dev = rec.stats.get(f"{prefix}.{index}.name")
                if dev is None:  # e.g. user-mode networking: no host-side device, no counters
                    continue
                labels = {"domain": rec.info.name, label: dev}  # shared by the device's samples
                for key, family in families.items():
                    value = rec.stats.get(f"{prefix}.{index}.{key}")
                    if value is not None:
                        add_sample(family, labels, value * scales[key])
        yield from families.values()


def load_runtime_tracker(ctx: CollectorContext) -> RuntimePolicyTracker | None:
    path = ctx.settings.attestation_policy_file
    if path is None:
        return None
    from exporter.attest.policy import load_policy  # only needed when a policy is configured

    runtime = load_policy(path).runtime
    return None if runtime is None else RuntimePolicyTracker(runtime, ctx.journal)


def load_metadata_labels(ctx: CollectorContext) -> LabelMap | None:
    text = ctx.settings.libvirt_metadata_labels
    if text is None:
        return None
    try:
        return parse_label_map(text)
    except MetadataLabelError as exc:
        raise config.ConfigError(f"collector.libvirt.metadata-labels: {exc}") from None


def build(ctx: CollectorContext) -> LibvirtCollector:
    connection = shared_connection(ctx.shared, ctx.settings.libvirt_uri)
    return LibvirtCollector(connection, shared_cache(ctx.shared, connection), load_runtime_tracker(ctx),
                            per_vcpu=ctx.settings.libvirt_per_vcpu, metadata_labels=load_metadata_labels(ctx))

