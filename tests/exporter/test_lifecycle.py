"""Lifecycle events from libvirt's event loop become counters and one schema-valid journal line per transition."""

from __future__ import annotations

from pathlib import Path

from exporter.collectors import lifecycle
from exporter.collectors.lifecycle import Histogram, process_age_seconds
from tests.exporter.helpers import (
    assert_schema_valid,
    exposition,
    journal_lines,
    make_ctx,
    promtool_check,
    value,
    wait_for,
)


def test_test_driver_transitions_become_counters_and_journal_lines(tmp_path):
    ctx = make_ctx(tmp_path)
    collector = lifecycle.build(ctx)
    collector.start()
    conn = collector.connection.get()
    snp = conn.lookupByName("snp-app")
    snp.suspend()
    snp.resume()
    snp.destroy()
    plain = conn.lookupByName("plain-spare")
    plain.create()
    xml = conn.lookupByName("snp-debug").XMLDesc(0)
    conn.lookupByName("snp-debug").undefine()
    conn.defineXML(xml)
    assert wait_for(lambda: len(journal_lines(ctx)) >= 6)
    text = exposition(collector)
    collector.stop()
    assert value(text, "tee_domain_lifecycle_events_total", event="suspended", tee_type="sev-snp") == 1
    assert value(text, "tee_domain_lifecycle_events_total", event="resumed", tee_type="sev-snp") == 1
    assert value(text, "tee_domain_lifecycle_events_total", event="stopped", tee_type="sev-snp") == 1
    assert value(text, "tee_domain_lifecycle_events_total", event="started", tee_type="none") == 1
    # the undefined domain's type comes from its last known definition
    assert value(text, "tee_domain_lifecycle_events_total", event="undefined", tee_type="sev-snp") == 1
    assert value(text, "tee_domain_lifecycle_events_total", event="defined", tee_type="sev-snp") == 1
    events = journal_lines(ctx)
    assert [e["event"]["action"] for e in events] == [
        "domain-suspended", "domain-resumed", "domain-stopped", "domain-started", "domain-undefined",
        "domain-defined"]
    assert {e["event"]["dataset"] for e in events} == {"tee.lifecycle"}
    assert events[0]["tee"]["vm"]["name"] == "snp-app" and events[0]["tee"]["type"] == "sev-snp"
    assert events[0]["tee"]["vm"]["debug_allowed"] is False
    assert "debug_allowed" not in events[3]["tee"]["vm"]  # plain-spare: no TEE, no debug policy
    assert_schema_valid(events)
    assert promtool_check(text) == ""


def test_histogram_buckets_are_cumulative():
    h = Histogram((1.0, 2.0))
    for v in (0.5, 1.5, 3.0):
        h.observe("sev-snp", v)
    text = exposition(_One(h.family("tee_vm_creation_duration_seconds", "x", "tee_type")))
    assert value(text, "tee_vm_creation_duration_seconds_bucket", tee_type="sev-snp", le="1.0") == 1
    assert value(text, "tee_vm_creation_duration_seconds_bucket", tee_type="sev-snp", le="2.0") == 2
    assert value(text, "tee_vm_creation_duration_seconds_bucket", tee_type="sev-snp", le="+Inf") == 3
    assert value(text, "tee_vm_creation_duration_seconds_count", tee_type="sev-snp") == 3
    assert value(text, "tee_vm_creation_duration_seconds_sum", tee_type="sev-snp") == 5.0


def test_process_age_from_proc_stat(tmp_path):
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "4242").mkdir()
    # field 2 holds spaces and parentheses on purpose; starttime (field 22) is 10 s after boot
    rest = " ".join(["S"] + ["0"] * 18 + [str(10 * ticks)] + ["0"] * 10)
    (tmp_path / "4242" / "stat").write_text(f"4242 (qemu (x) y) {rest}\n")
    (tmp_path / "uptime").write_text("12.50 3.00\n")
    assert process_age_seconds(tmp_path, 4242) == 2.5
    assert process_age_seconds(tmp_path, 9999) is None
    assert process_age_seconds(Path("/proc"), os.getpid()) >= 0


class _One:
    def __init__(self, family):
        self.family = family

    def collect(self):
        yield self.family
