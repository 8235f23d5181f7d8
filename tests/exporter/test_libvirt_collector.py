"""The libvirt collector against libvirt's test driver: demo host golden file, 1,000 domains, runtime policy."""

from __future__ import annotations

import json
from pathlib import Path

import libvirt
import pytest

from exporter.collectors import libvirt as libvirt_collector
from exporter.collectors.libvirt import DomainRecord, domain_families, skipped_by_nowait
from exporter.collectors.libvirt_vcpu import OtherExits, vcpu_families
from exporter.virt.domain_xml import parse_domain_xml
from tests.exporter.helpers import (
    assert_schema_valid,
    check_golden,
    exposition,
    generated_node,
    journal_lines,
    make_ctx,
    promtool_check,
    samples,
    value,
    wait_for,
)

POLICY = {"version": "1.0",
          "runtime_policy": {"max_memory": "16GB", "max_cpus": 8, "allowed_devices": ["virtio-net", "virtio-blk"]}}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY))
    return path


def test_demo_host_matches_golden_exposition(tmp_path, policy_file):
    collector = libvirt_collector.build(make_ctx(tmp_path, attestation_policy_file=policy_file))
    try:
        text = exposition(collector)
    finally:
        collector.stop()
    assert promtool_check(text) == ""
    # The installed libvirt's version is checked here, then masked, so an upgrade does not break the golden file.
    major, rest = divmod(libvirt.getVersion(), 1_000_000)
    installed = f"{major}.{rest // 1000}.{rest % 1000}"
    assert f'daemon="{installed}"' in text and f'library="{installed}"' in text
    check_golden("libvirt_demo.prom", text.replace(f'"{installed}"', '"INSTALLED"'))


def test_shut_off_and_paused_domains_are_listed_with_their_state(tmp_path):
    collector = libvirt_collector.build(make_ctx(tmp_path))
    text = exposition(collector)
    collector.stop()
    assert value(text, "tee_domain_state", domain="plain-spare") == 5
    assert value(text, "tee_domain_state", domain="snp-debug") == 5
    assert value(text, "tee_domain_state", domain="sev-debug") == 3
    # a shut-off confidential guest has no encrypted memory; a paused one keeps it
    assert value(text, "tee_memory_encrypted_bytes", domain="snp-debug") is None
    assert value(text, "tee_memory_encrypted_bytes", domain="sev-debug") == 1 << 30
    assert value(text, "tee_memory_encrypted_bytes", domain="plain-web") is None


def test_debug_allowed_label_follows_launch_policy(tmp_path):
    collector = libvirt_collector.build(make_ctx(tmp_path))
    text = exposition(collector)
    collector.stop()
    info = {labels["domain"]: (labels["tee_type"], labels["debug_allowed"])
            for (name, lab), _ in samples(text).items() if name == "tee_domain_info"
            for labels in [dict(lab)]}
    assert info["plain-web"] == ("none", "")
    assert info["sev-debug"] == ("sev", "true")
    assert info["sev-legacy"] == ("sev", "false")
    assert info["sev-es-db"] == ("sev-es", "false")
    assert info["snp-debug"] == ("sev-snp", "true")


def test_thousand_domains_all_listed_in_one_bulk_call(tmp_path):
    uri = generated_node(tmp_path / "node.xml", 1000)
    collector = libvirt_collector.build(make_ctx(tmp_path, uri))
    calls = []
    conn = collector.connection.get()
    original = conn.getAllDomainStats
    conn.getAllDomainStats = lambda *a: calls.append(a) or original(*a)  # count, don't change
    text = exposition(collector)
    collector.stop()
    states = [v for (name, _), v in samples(text).items() if name == "tee_domain_state"]
    assert len(states) == 1000  # no 512 limit, shut-off ones included
    assert sorted(set(states)) == [1, 3, 5]
    assert len(calls) == 1
    assert calls[0][1] & libvirt_collector.libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
    assert promtool_check(text) == ""


def test_domain_xml_is_parsed_once_across_scrapes(tmp_path):
    collector = libvirt_collector.build(make_ctx(tmp_path))
    exposition(collector)
    exposition(collector)
    exposition(collector)
    parses = collector.cache.parses
    collector.stop()
    assert parses == 9  # the demo host's nine domains, once each


def test_runtime_policy_violation_metric_and_journal_transitions(tmp_path, policy_file):
    ctx = make_ctx(tmp_path, attestation_policy_file=policy_file)
    collector = libvirt_collector.build(ctx)
    text = exposition(collector)
    # snp-big: 32 GiB > 16GB, 16 vCPUs > 8, virtiofs not allowed; plain-* are never checked
    assert {dict(lab)["rule"] for (name, lab), _ in samples(text).items()
            if name == "tee_runtime_policy_violation" and dict(lab)["domain"] == "snp-big"} == \
        {"max_memory", "max_cpus", "allowed_devices"}
    assert [e["tee"]["vm"]["name"] for e in journal_lines(ctx)] == ["snp-big"]

    conn = collector.connection.get()
    dom = conn.lookupByName("snp-debug")  # shut off, so a redefinition shows at once
    xml = dom.XMLDesc(0)
    conn.defineXML(xml.replace(">2</vcpu>", ">12</vcpu>"))
    assert wait_for(lambda: not collector.cache.cached(dom.UUIDString()))  # the define event refreshed it
    text = exposition(collector)
    assert value(text, "tee_runtime_policy_violation", domain="snp-debug", rule="max_cpus") == 1

    conn.defineXML(xml)  # back within policy
    assert wait_for(lambda: not collector.cache.cached(dom.UUIDString()))
    text = exposition(collector)
    collector.stop()
    assert value(text, "tee_runtime_policy_violation", domain="snp-debug", rule="max_cpus") is None
    events = journal_lines(ctx)
    assert [(e["tee"]["vm"]["name"], e["event"]["action"]) for e in events] == [
        ("snp-big", "runtime-policy-violation"), ("snp-debug", "runtime-policy-violation"),
        ("snp-debug", "runtime-policy-compliant")]
    assert events[1]["tee"]["policy"] == {"result": "fail", "violations": ["max_cpus"]}
    assert_schema_valid(events)


# A recorded getAllDomainStats entry of a running KVM guest with a disk and a tap interface (QEMU driver).
QEMU_STATS = {
    "state.state": 1, "state.reason": 1, "cpu.time": 2_500_000_000, "balloon.current": 65536,
    "balloon.maximum": 131072, "balloon.rss": 40068, "vcpu.current": 2, "vcpu.maximum": 2,
    "vcpu.0.exits.sum": 1834, "vcpu.1.exits.sum": 166, "vcpu.0.halt_exits.sum": 12,
    "net.count": 2, "net.0.name": "vnet3", "net.0.rx.bytes": 1000, "net.0.rx.pkts": 10, "net.0.tx.bytes": 2000,
    "net.0.tx.pkts": 20, "block.count": 1, "block.0.name": "vda", "block.0.rd.bytes": 4096,
    "block.0.rd.reqs": 1, "block.0.wr.bytes": 8192, "block.0.wr.reqs": 2,
}
SNP_XML = ("<domain type='kvm'><name>g</name><uuid>u</uuid><memory unit='MiB'>128</memory><vcpu>2</vcpu>"
           "<launchSecurity type='sev-snp'><policy>0x30000</policy></launchSecurity></domain>")


def test_qemu_stats_become_counters_and_gauges():
    text = exposition(_Families([DomainRecord(parse_domain_xml(SNP_XML), QEMU_STATS)]))
    assert value(text, "tee_domain_cpu_seconds_total", domain="g") == 2.5
    assert value(text, "tee_domain_memory_bytes", domain="g") == 64 << 20
    assert value(text, "tee_domain_memory_max_bytes", domain="g") == 128 << 20
    assert value(text, "tee_memory_encrypted_bytes", domain="g") == 128 << 20
    exits = {dict(lab)["reason"]: v for (name, lab), v in samples(text).items() if name == "tee_vm_exits_total"}
    assert exits["halt"] == 12 and exits["other"] == 2000 - 12  # over both vCPUs; the total is their sum
    assert value(text, "tee_domain_network_transmit_bytes_total", domain="g", interface="vnet3") == 2000
    assert value(text, "tee_domain_network_receive_packets_total", domain="g", interface="vnet3") == 10
    assert value(text, "tee_domain_block_write_requests_total", domain="g", device="vda") == 2
    assert value(text, "tee_domain_block_read_bytes_total", domain="g", device="vda") == 4096
    assert promtool_check(text) == ""


def test_locked_domain_is_detected_as_skipped_by_nowait():
    locked = {k: v for k, v in QEMU_STATS.items() if not k.startswith(("balloon.rss", "vcpu.", "block."))}
    assert skipped_by_nowait(locked)
    assert not skipped_by_nowait(QEMU_STATS)
    assert not skipped_by_nowait({"state.state": 5})  # shut off: nothing to skip


class _Families:
    def __init__(self, records):
        self.records = records

    def collect(self):
        yield from domain_families(self.records)
        yield from vcpu_families(((r.info, r.stats) for r in self.records), False, OtherExits())
