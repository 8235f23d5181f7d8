"""The new libvirt series against the real libvirtd and a tiny real QEMU guest: VM exits and vCPU times, the
versions, metadata labels following ``virsh metadata``, and a real dump job seen in flight and journaled when it
completes."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import libvirt
import pytest

from exporter.collectors import libvirt as libvirt_collector
from exporter.collectors import lifecycle
from exporter.virt.vcpu_stats import EXIT_REASON_LABELS
from tests.exporter.helpers import (
    assert_schema_valid,
    exposition,
    journal_lines,
    make_ctx,
    promtool_check,
    samples,
    value,
    wait_for,
)
from tests.fixtures.libvirtd import kvm_usable

pytestmark = pytest.mark.libvirtd

NOVA = "http://openstack.org/xmlns/libvirt/nova/1.1"


def _kvm_exits(conn: libvirt.virConnect, dom: libvirt.virDomain) -> int:
    stats = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_VCPU)[0][1]
    return sum(v for k, v in stats.items() if k.endswith(".exits.sum") and k.count(".") == 3)


def test_real_guest_exits_vcpu_times_and_versions(tmp_path, libvirtd, tiny_domain):
    name = tiny_domain.name()
    collector = libvirt_collector.build(make_ctx(tmp_path, libvirtd))
    per_vcpu = libvirt_collector.build(make_ctx(tmp_path, libvirtd, libvirt_per_vcpu=True))
    conn = collector.connection.get()
    try:
        before = _kvm_exits(conn, tiny_domain)
        text = exposition(collector)
        after = _kvm_exits(conn, tiny_domain)
        per_text = exposition(per_vcpu)
    finally:
        collector.stop()
        per_vcpu.stop()
    exits = {dict(lab)["reason"]: v for (metric, lab), v in samples(text).items()
             if metric == "tee_vm_exits_total" and dict(lab)["domain"] == name}
    if kvm_usable():  # KVM binary stats: this host runs the guest under (nested) KVM
        assert set(exits) == set(EXIT_REASON_LABELS)
        assert before <= sum(exits.values()) <= after  # the plain total, read between two direct reads
        assert value(per_text, "tee_vm_exits_total", domain=name, vcpu="0", reason="other") > 0
        assert value(text, "tee_vm_halt_wakeups_total", domain=name) is not None
    else:  # TCG: libvirt reports no KVM statistics, so there are no exit series (never zeros)
        assert exits == {} and before == after == 0
    assert value(text, "tee_domain_vcpu_delay_seconds_total", domain=name) >= 0
    assert value(per_text, "tee_domain_vcpu_cpu_seconds_total", domain=name, vcpu="0") > 0
    lib, daemon, hypervisor = _virsh_versions(libvirtd)
    assert value(text, "tee_libvirt_version_info", library=lib, daemon=daemon, hypervisor=hypervisor,
                 driver="QEMU") == 1
    assert promtool_check(text) == "" and promtool_check(per_text) == ""


def _virsh_versions(uri: str) -> tuple[str, str, str]:
    out = subprocess.run(["virsh", "-c", uri, "version", "--daemon"], capture_output=True, text=True, check=True).stdout
    last = {line.split(":")[0]: line.split()[-1] for line in out.splitlines() if ":" in line}
    return last["Using library"], last["Running against daemon"], last["Running hypervisor"]


def test_metadata_labels_follow_virsh_metadata(tmp_path, libvirtd, tiny_domain):
    collector = libvirt_collector.build(make_ctx(tmp_path, libvirtd, libvirt_metadata_labels="nova"))
    name, uuid = tiny_domain.name(), tiny_domain.UUIDString()
    try:
        text = exposition(collector)
        assert value(text, "tee_domain_metadata_info", domain=name, uuid=uuid, nova_project="", nova_flavor="") == 1
        tiny_domain.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            "<instance><flavor name='m1.tiny'/><owner><project uuid='p-1'>payments</project></owner></instance>",
            "nova", NOVA, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        # the METADATA_CHANGE event drops the cached definition; no lifecycle event is sent for it
        assert wait_for(lambda: value(exposition(collector), "tee_domain_metadata_info", domain=name, uuid=uuid,
                                      nova_project="payments", nova_flavor="m1.tiny") == 1)
    finally:
        collector.stop()


class SlowReader:
    """Reads a FIFO a few KiB at a time, so that a dump written into it stays in flight until ``release``."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.fast = threading.Event()
        self.read = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()  # opened before libvirt opens it: a writer's open of a FIFO waits for a reader

    def _run(self) -> None:
        with open(self.path, "rb") as fifo:
            while chunk := fifo.read(4096):
                self.read += len(chunk)
                if not self.fast.is_set():
                    time.sleep(0.05)

    def release(self) -> None:
        self.fast.set()


def test_dump_job_seen_in_flight_and_journaled_when_completed(tmp_path, libvirtd, tiny_domain):
    ctx = make_ctx(tmp_path, libvirtd)
    collector = libvirt_collector.build(ctx)
    events = lifecycle.build(ctx)
    events.start()
    name = tiny_domain.name()
    reader = SlowReader(tmp_path / "dump.fifo")
    dump = threading.Thread(target=tiny_domain.coreDumpWithFormat,
                            args=(str(reader.path), libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_RAW, 0))
    dump.start()
    try:
        in_flight = wait_for(lambda: value(exposition(collector), "tee_domain_job_data_processed_bytes",
                                           domain=name, operation="dump"), timeout=20)
        assert in_flight is not None and in_flight > 0
        reader.release()
        dump.join(60)
        done = lambda: [e for e in journal_lines(ctx) if e["event"]["action"] == "domain-job-completed"]
        assert wait_for(done, timeout=20)
        text = exposition(collector)
        counted = exposition(events)
    finally:
        reader.release()
        dump.join(60)
        collector.stop()
        events.stop()
    event = done()[0]
    assert event["tee"]["vm"]["name"] == name and event["tee"]["job"]["operation"] == "dump"
    assert event["tee"]["job"]["stats"]["data_processed"] >= in_flight
    assert event["event"]["outcome"] == "success" and event["event"]["duration"] > 0
    assert_schema_valid([event])
    assert value(text, "tee_domain_job_type", domain=name, operation="dump") is None  # over: no job series
    assert value(counted, "tee_domain_jobs_completed_total", operation="dump", tee_type="none") == 1
