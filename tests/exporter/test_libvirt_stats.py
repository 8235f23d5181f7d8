"""The libvirt collector's vCPU, device, balloon, job, version and metadata families, from statistics captured
on this host's real libvirtd (tests/exporter/data, libvirt 11.3.0 / QEMU 10.0.2, nested KVM and TCG guests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter import config
from exporter.collectors import libvirt as libvirt_collector
from exporter.collectors.libvirt import DomainRecord, domain_families, metadata_family
from exporter.collectors.libvirt_jobs import JobRecord, job_families
from exporter.collectors.libvirt_vcpu import OtherExits, vcpu_families
from exporter.virt.domain_xml import parse_domain_xml
from exporter.virt.jobs import paused_by_job
from exporter.virt.metadata import MAX_LABELS, MetadataLabelError, parse_label_map
from exporter.virt.vcpu_stats import EXIT_REASON_LABELS, exit_reasons
from exporter.virt.versions import version_text
from tests.exporter.helpers import check_golden, exposition, make_ctx, promtool_check, samples, value

DATA = Path(__file__).parent / "data"
KVM = json.loads((DATA / "qemu_kvm_domstats.json").read_text())  # 2 vCPUs, virtio disk, user-mode NIC
TCG = json.loads((DATA / "qemu_tcg_domstats.json").read_text())
JOB = json.loads((DATA / "dump_job.json").read_text())
# What the captured guest (SeaBIOS, user-mode networking) cannot report, with the keys libvirt documents for
# VIR_DOMAIN_STATS_BALLOON (virtio-balloon driver in the guest) and VIR_DOMAIN_STATS_INTERFACE (a tap device).
GUEST_REPORTED = {
    "balloon.swap_in": 0, "balloon.swap_out": 8, "balloon.major_fault": 310, "balloon.minor_fault": 182750,
    "balloon.unused": 3144, "balloon.available": 55568, "balloon.usable": 24876, "balloon.disk_caches": 17532,
    "net.count": 1, "net.0.name": "vnet7", "net.0.rx.bytes": 5126, "net.0.rx.pkts": 61, "net.0.rx.errs": 1,
    "net.0.rx.drop": 2, "net.0.tx.bytes": 8630, "net.0.tx.pkts": 83, "net.0.tx.errs": 3, "net.0.tx.drop": 4,
}
NOVA = "http://openstack.org/xmlns/libvirt/nova/1.1"
GUEST_XML = f"""<domain type='kvm'><name>instance-0000002a</name><uuid>c6ac04d0-be38-4ff2-89c1-cbd2ad7132a7</uuid>
<metadata><nova:instance xmlns:nova="{NOVA}"><nova:package version="29.0.1"/><nova:name>web-1</nova:name>
<nova:flavor name="m1.confidential"><nova:memory>64</nova:memory><nova:vcpus>2</nova:vcpus></nova:flavor>
<nova:owner><nova:user uuid="u-1">alice</nova:user><nova:project uuid="p-1">payments</nova:project></nova:owner>
</nova:instance></metadata>
<memory unit='MiB'>64</memory><vcpu>2</vcpu>
<launchSecurity type='sev-snp'><policy>0x30000</policy></launchSecurity></domain>"""


class _Families:
    def __init__(self, produce):
        self.produce = produce

    def collect(self):
        return self.produce()


def _record(stats: dict) -> DomainRecord:
    return DomainRecord(parse_domain_xml(GUEST_XML), stats)


def _vcpu_text(stats: dict, per_vcpu: bool = False, other: OtherExits | None = None) -> str:
    rec = _record(stats)
    tracker = other or OtherExits()
    return exposition(_Families(lambda: vcpu_families([(rec.info, rec.stats)], per_vcpu, tracker)))


def test_captured_kvm_guest_matches_golden_exposition():
    rec = _record({**KVM, **GUEST_REPORTED})
    labels = parse_label_map("nova")
    jobs = [JobRecord(rec.info.name, JOB["in_flight"])]
    text = exposition(_Families(lambda: [*domain_families([rec]),
                                         *vcpu_families([(rec.info, rec.stats)], False, OtherExits()),
                                         *job_families(jobs), metadata_family([rec], labels)]))
    check_golden("libvirt_qemu_kvm.prom", text)
    assert promtool_check(text) == ""


def test_exits_by_reason_sum_to_kvm_total_over_vcpus():
    text = _vcpu_text(KVM)
    total = sum(v for k, v in KVM.items() if k.endswith(".exits.sum"))
    by_reason = {dict(lab)["reason"]: v for (name, lab), v in samples(text).items() if name == "tee_vm_exits_total"}
    assert set(by_reason) == set(EXIT_REASON_LABELS)
    assert sum(by_reason.values()) == total == 19840  # the plain total is sum without(reason)
    assert by_reason["mmio"] == 33 and by_reason["halt"] == 3621 and by_reason["irq_window"] == 149
    assert value(text, "tee_vm_userspace_exits_total", domain="instance-0000002a", reason="signal") == 12
    assert value(text, "tee_domain_vcpu_delay_seconds_total", domain="instance-0000002a") == \
        pytest.approx((5742632102 + 51370417) / 1e9)


def test_unknown_kvm_statistic_adds_no_label_value_or_series():
    forged = {**KVM, "vcpu.0.vmgexit_exits.sum": 999, "vcpu.1.vmgexit_exits.sum": 1, "vcpu.0.exits.sum": 19830 + 1000}
    text = _vcpu_text(forged)
    reasons = {dict(lab)["reason"] for (name, lab), _ in samples(text).items() if name == "tee_vm_exits_total"}
    assert reasons == set(EXIT_REASON_LABELS)  # no "vmgexit": the new exits land in "other"
    assert value(text, "tee_vm_exits_total", domain="instance-0000002a", reason="other") == 19840 - 33 - 3621 - 149 + 1000
    assert "vmgexit" not in text


def test_per_vcpu_switch_adds_a_vcpu_label_with_the_same_sums():
    per = samples(_vcpu_text(KVM, per_vcpu=True))
    summed = samples(_vcpu_text(KVM))
    exits = {(dict(lab)["vcpu"], dict(lab)["reason"]): v for (name, lab), v in per.items()
             if name == "tee_vm_exits_total"}
    assert {vcpu for vcpu, _ in exits} == {"0", "1"}
    assert exits[("0", "other")] == 19830 - 33 - 3620 - 149 and exits[("1", "halt")] == 1
    for reason in EXIT_REASON_LABELS:
        key = ("tee_vm_exits_total", (("domain", "instance-0000002a"), ("reason", reason)))
        assert summed[key] == exits[("0", reason)] + exits[("1", reason)]


def test_other_exits_never_go_down_on_a_torn_read_and_restart_with_the_guest():
    other = OtherExits()
    base = {"vcpu.maximum": 1, "vcpu.0.exits.sum": 100, "vcpu.0.halt_exits.sum": 40}
    read = lambda stats: value(_vcpu_text(stats, other=other), "tee_vm_exits_total",
                               domain="instance-0000002a", reason="other")
    assert read(base) == 60
    # exits counted, the halt it belongs to not yet: "other" is momentarily one too high...
    assert read({**base, "vcpu.0.exits.sum": 101}) == 61
    # ...and once the halt is counted it must not fall back to 60 (Prometheus would see a counter reset)
    assert read({**base, "vcpu.0.exits.sum": 101, "vcpu.0.halt_exits.sum": 41}) == 61
    assert read({**base, "vcpu.0.exits.sum": 105, "vcpu.0.halt_exits.sum": 41}) == 64
    # the guest restarted: its counters start again and so does "other"
    assert read({**base, "vcpu.0.exits.sum": 7, "vcpu.0.halt_exits.sum": 2}) == 5
    assert read({**base, "vcpu.0.exits.sum": 500, "vcpu.0.halt_exits.sum": 100}) == 400
    # restarted and already past the old exits count by the next scrape: halt_exits fell, so "other" starts again
    # rather than staying at 400 (a weaker check on exits alone would hold it there)
    assert read({**base, "vcpu.0.exits.sum": 600, "vcpu.0.halt_exits.sum": 10, "vcpu.0.mmio_exits.sum": 500}) == 90


def test_other_exits_is_never_negative():
    # mmio_exits can be counted for instructions KVM emulated without a hardware exit
    assert exit_reasons({"exits": 10, "mmio_exits": 12})["other"] == 0


def test_tcg_guest_has_vcpu_times_but_no_exit_series():
    text = _vcpu_text(TCG)
    assert "tee_vm_exits_total{" not in text and "tee_vm_halt_wakeups_total{" not in text
    assert value(text, "tee_domain_vcpu_cpu_seconds_total", domain="instance-0000002a") == 0.36
    assert value(text, "tee_domain_vcpu_wait_seconds_total", domain="instance-0000002a") == 0
    assert promtool_check(text) == ""


def test_block_net_and_balloon_parity_series():
    text = exposition(_Families(lambda: domain_families([_record({**KVM, **GUEST_REPORTED})])))
    d = "instance-0000002a"
    assert value(text, "tee_domain_block_capacity_bytes", domain=d, device="vda") == 16 << 20
    assert value(text, "tee_domain_block_physical_bytes", domain=d, device="vda") == 4096
    assert value(text, "tee_domain_block_flush_requests_total", domain=d, device="vda") == 0
    assert value(text, "tee_domain_network_receive_drops_total", domain=d, interface="vnet7") == 2
    assert value(text, "tee_domain_network_transmit_errors_total", domain=d, interface="vnet7") == 3
    assert value(text, "tee_domain_memory_rss_bytes", domain=d) == KVM["balloon.rss"] * 1024
    assert value(text, "tee_domain_memory_usable_bytes", domain=d) == 24876 * 1024
    assert value(text, "tee_domain_memory_swap_out_bytes_total", domain=d) == 8 * 1024
    assert value(text, "tee_domain_memory_major_faults_total", domain=d) == 310


def test_job_gauges_carry_the_operation_and_units():
    text = exposition(_Families(lambda: job_families([JobRecord("g", JOB["in_flight"])])))
    assert value(text, "tee_domain_job_type", domain="g", operation="dump") == 2
    assert value(text, "tee_domain_job_data_remaining_bytes", domain="g", operation="dump") == 67764224
    assert value(text, "tee_domain_job_downtime_seconds", domain="g", operation="dump") == 0.3
    assert value(text, "tee_domain_job_memory_iteration", domain="g", operation="dump") == 1


def test_only_job_states_make_a_domain_a_job_candidate():
    assert paused_by_job({"state.state": 3, "state.reason": 4})  # paused: dump
    assert not paused_by_job({"state.state": 3, "state.reason": 1})  # paused by the user
    assert not paused_by_job({"state.state": 1, "state.reason": 4})  # running: 4 is another enum there


def test_version_numbers_are_libvirts_encoding():
    assert version_text(11003000) == "11.3.0" and version_text(10000002) == "10.0.2"


def test_nova_preset_and_generic_mapping_on_the_info_metric_only():
    rec = _record(KVM)
    labels = parse_label_map(f"nova,user={{{NOVA}}}instance/{{{NOVA}}}owner/{{{NOVA}}}user@uuid,"
                             "team={urn:example}owner/{urn:example}team")
    text = exposition(_Families(lambda: [metadata_family([rec], labels)]))
    assert value(text, "tee_domain_metadata_info", domain="instance-0000002a",
                 uuid="c6ac04d0-be38-4ff2-89c1-cbd2ad7132a7", nova_project="payments",
                 nova_flavor="m1.confidential", user="u-1", team="") == 1
    assert promtool_check(text) == ""


@pytest.mark.parametrize(("text", "reason"), [
    ("domain={urn:x}a", "'domain': not a usable Prometheus label name"),
    ("nova,nova_project={urn:x}a", "a label name is given twice"),
    ("team", "'team': expected label=path or one of nova"),
    ("bad-name={urn:x}a", "'bad-name': not a usable Prometheus label name"),
    (",".join(f"l{i}={{urn:x}}a" for i in range(MAX_LABELS + 1)), f"{MAX_LABELS + 1} labels: at most {MAX_LABELS}"),
])
def test_bad_label_mapping_is_rejected_with_its_reason(text, reason):
    with pytest.raises(MetadataLabelError) as err:
        parse_label_map(text)
    assert str(err.value) == reason


def test_bad_label_mapping_stops_the_collector_from_building(tmp_path):
    with pytest.raises(config.ConfigError, match="collector.libvirt.metadata-labels: 'uuid'"):
        libvirt_collector.build(make_ctx(tmp_path, libvirt_metadata_labels="uuid={urn:x}a"))


def test_options_reach_the_settings():
    settings = config.load(None, {"collector.libvirt.per-vcpu": True, "collector.libvirt.metadata-labels": "nova"})
    assert settings.libvirt_per_vcpu is True and settings.libvirt_metadata_labels == "nova"
    assert config.Settings().libvirt_per_vcpu is False  # off by default: one series per vCPU is cardinality


def test_job_stats_are_asked_only_for_domains_that_may_run_a_job(tmp_path):
    collector = libvirt_collector.build(make_ctx(tmp_path))
    try:
        conn = collector.connection.get()
        raw = conn.getAllDomainStats(libvirt_collector.STATS_GROUPS, 0)
        dom, stats = next((d, s) for d, s in raw if d.name() == "plain-web")
        # the demo host: running and user-paused domains, no job anywhere
        assert not any(collector._job_possible(d.UUIDString(), s) for d, s in raw)
        # a live migration leaves the domain running: its iteration events make it a candidate until it completes
        collector.migrations.on_iteration(conn, dom, 1, None)
        assert collector._job_possible(dom.UUIDString(), stats)
        collector.migrations.on_completed(conn, dom, {}, None)
        assert not collector._job_possible(dom.UUIDString(), stats)
    finally:
        collector.stop()


def test_metadata_from_a_hostile_guest_definition_stays_bounded():
    # An application can write any amount of <metadata>: a long value and thousands of elements, the wanted one
    # last. The flattened form keeps MAX_PAIRS pairs of at most MAX_VALUE characters; the label comes out cut or
    # empty, never as a 10,000-character label value or a growing memory footprint.
    from exporter.virt.metadata import MAX_PAIRS, MAX_VALUE

    noise = "".join(f"<x:i{n}>v</x:i{n}>" for n in range(5000))
    xml = GUEST_XML.replace("<nova:name>web-1</nova:name>", f"<nova:name>{'A' * 10000}</nova:name>").replace(
        "</nova:instance></metadata>", f"</nova:instance><x:junk xmlns:x='urn:x'>{noise}</x:junk></metadata>")
    info = parse_domain_xml(xml)
    assert len(info.metadata) == MAX_PAIRS and all(len(v) <= MAX_VALUE for _, v in info.metadata)
    labels = parse_label_map(f"name={{{NOVA}}}instance/{{{NOVA}}}name,last={{urn:x}}junk/{{urn:x}}i4999")
    assert labels.values(info.metadata) == ["A" * MAX_VALUE, ""]


def test_deeply_nested_metadata_is_no_recursion_error():
    deep = "<x:a xmlns:x='urn:x'>" + "<x:a>" * 5000 + "v" + "</x:a>" * 5001
    info = parse_domain_xml(GUEST_XML.replace("</nova:instance></metadata>", f"</nova:instance>{deep}</metadata>"))
    assert info.metadata[-1][1] == "v" and info.metadata[-1][0].count("{urn:x}a") == 5001


def test_job_candidate_that_stopped_or_has_no_job_support_is_no_failed_scrape(tmp_path):
    collector = libvirt_collector.build(make_ctx(tmp_path))
    try:
        conn = collector.connection.get()
        stopped, running = conn.lookupByName("plain-spare"), conn.lookupByName("plain-web")
        # marked as migrating (its iteration event came), then shut off / on a driver without job statistics:
        # controlInfo says "domain is not running", jobStats "not supported"
        collector.migrations.on_iteration(conn, stopped, 1, None)
        collector.migrations.on_iteration(conn, running, 1, None)
        text = exposition(collector)
        assert value(text, "tee_libvirt_up") == 1 and "tee_domain_job_type{" not in text
        assert not collector.migrations.migrating(stopped.UUIDString())  # asked once, then forgotten
        assert not collector.migrations.migrating(running.UUIDString())
    finally:
        collector.stop()
