"""The lifecycle collector's golden exposition, and completed domain jobs (VIR_DOMAIN_EVENT_ID_JOB_COMPLETED) as
counters and schema-valid journal events."""

from __future__ import annotations

import json
import os
from pathlib import Path

from exporter.collectors import lifecycle
from exporter.virt.cache import shared_cache
from exporter.virt.connection import shared_connection
from tests.exporter.helpers import (
    assert_schema_valid,
    check_golden,
    exposition,
    journal_lines,
    make_ctx,
    promtool_check,
    wait_for,
)

# The JOB_COMPLETED parameters libvirt 11.3 sent for a real dump of a KVM guest here (tests/exporter/data).
COMPLETED = json.loads((Path(__file__).parent / "data" / "dump_job.json").read_text())["completed"]


def fake_qemu(tmp_path: Path, name: str, age: float) -> tuple[Path, Path]:
    """A /proc with one QEMU process started ``age`` seconds ago, and libvirt's pid file naming it."""
    proc, pids = tmp_path / "proc", tmp_path / "pids"
    (proc / "4242").mkdir(parents=True)
    pids.mkdir()
    (proc / "uptime").write_text("1000.00 1900.00\n")
    start = round((1000.0 - age) * os.sysconf("SC_CLK_TCK"))
    (proc / "4242" / "stat").write_text(f"4242 (qemu-system-x86) S 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 4 0 "
                                        f"{start} 0 0\n")
    (pids / f"{name}.pid").write_text("4242\n")
    return proc, pids


def test_demo_host_transitions_and_a_completed_job_match_golden(tmp_path):
    ctx = make_ctx(tmp_path)
    proc, pids = fake_qemu(tmp_path, "plain-spare", age=2.5)
    connection = shared_connection(ctx.shared, ctx.settings.libvirt_uri)
    collector = lifecycle.LifecycleCollector(connection, shared_cache(ctx.shared, connection), ctx.journal,
                                             proc_root=proc, pid_dir=pids)
    collector.start()
    conn = collector.connection.get()
    try:
        snp = conn.lookupByName("snp-app")
        snp.suspend()
        snp.resume()
        conn.lookupByName("plain-spare").create()
        assert wait_for(lambda: len(journal_lines(ctx)) >= 3)
        # the test driver runs no jobs: deliver the recorded event's parameters for a real domain object
        collector.on_job_completed(conn, snp, dict(COMPLETED), None)
        text = exposition(collector)
    finally:
        collector.stop()
    check_golden("lifecycle_demo.prom", text)
    assert promtool_check(text) == ""
    event = journal_lines(ctx)[-1]
    assert event["event"]["action"] == "domain-job-completed" and event["event"]["reason"] == "dump"
    assert event["event"]["duration"] == 69 * 1_000_000  # time_elapsed 69 ms
    assert event["tee"] == {"type": "sev-snp", "vm": {"name": "snp-app", "uuid": snp.UUIDString()},
                            "job": {"operation": "dump", "stats": COMPLETED}}
    assert_schema_valid([event])


def test_job_event_with_unknown_operation_and_non_numeric_parameter_stays_schema_valid(tmp_path):
    ctx = make_ctx(tmp_path)
    collector = lifecycle.build(ctx)
    conn = collector.connection.get()
    try:
        dom = conn.lookupByName("plain-web")
        # a newer libvirt: an operation number this table lacks, a string parameter, a negative elapsed time
        collector.on_job_completed(conn, dom, {"operation": 99, "disk_bps": 5, "note": "x", "time_elapsed": -1}, None)
    finally:
        collector.stop()
    event = journal_lines(ctx)[0]
    assert event["tee"]["job"] == {"operation": "unknown", "stats": {"operation": 99, "disk_bps": 5,
                                                                      "time_elapsed": -1}}
    assert "duration" not in event["event"]  # never a negative ECS duration
    assert_schema_valid([event])
