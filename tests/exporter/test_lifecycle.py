"""Lifecycle events from libvirt's event loop become counters and one schema-valid journal line per transition."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from exporter.collectors import lifecycle
from exporter.collectors.lifecycle import process_age_seconds
from exporter.virt.lifecycle_events import is_boot_resume, transition
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


@pytest.mark.parametrize(("event", "detail", "named", "outcome"), [
    # kill -9 of QEMU: a stop, but a crash, and a failure
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED, ("crashed", "crashed", "end"),
     "failure"),
    # ...which libvirt 11 actually reports as "host emulator failed"
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED, ("crashed", "failed", "end"),
     "failure"),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED, ("stopped", "destroyed", "end"),
     "success"),
    (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED, ("crashed", "panicked", "error"),
     "failure"),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR,
     ("suspended", "io_error", "change"), "failure"),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED, ("suspended", "paused", "change"),
     "success"),
    (libvirt.VIR_DOMAIN_EVENT_STARTED, 99, ("started", "unknown_99", "start"), "unknown"),
])
def test_every_event_and_detail_is_named_with_its_outcome(event, detail, named, outcome):
    t = transition(event, detail)
    assert t is not None and (t.event, t.detail, t.ecs_type) == named and t.outcome == outcome


def test_every_libvirt_detail_constant_has_a_name():
    """A libvirt upgrade that adds a detail shows up here, not as ``unknown_N`` in an audit trail."""
    for prefix, event in (("STOPPED", libvirt.VIR_DOMAIN_EVENT_STOPPED), ("STARTED", libvirt.VIR_DOMAIN_EVENT_STARTED),
                          ("SUSPENDED", libvirt.VIR_DOMAIN_EVENT_SUSPENDED),
                          ("RESUMED", libvirt.VIR_DOMAIN_EVENT_RESUMED),
                          ("DEFINED", libvirt.VIR_DOMAIN_EVENT_DEFINED),
                          ("UNDEFINED", libvirt.VIR_DOMAIN_EVENT_UNDEFINED),
                          ("SHUTDOWN", libvirt.VIR_DOMAIN_EVENT_SHUTDOWN),
                          ("PMSUSPENDED", libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED),
                          ("CRASHED", libvirt.VIR_DOMAIN_EVENT_CRASHED)):
        for name in dir(libvirt):
            if name.startswith(f"VIR_DOMAIN_EVENT_{prefix}_") and not name.endswith("_LAST"):
                t = transition(event, getattr(libvirt, name))
                assert t is not None and not t.detail.startswith("unknown"), name


def test_boot_time_resume_is_recognised():
    assert is_boot_resume(libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_RUNNING_BOOTED)
    assert not is_boot_resume(libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_RUNNING_UNPAUSED)
    assert not is_boot_resume(libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_RUNNING_BOOTED)


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
