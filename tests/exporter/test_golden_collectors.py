"""Golden expositions of the event-driven collectors (attestation, kbs, egress), fed the same inputs as their
behaviour tests: a reviewer sees every family, label set and help text they expose, and a change to any of them
shows up as a diff. Durations and wall-clock timestamps are masked (they differ every run); counts are not.
The host and qemu collectors' goldens are in test_platform.py / test_kata.py / test_host.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from exporter.collectors.attestation import AttestationCollector
from exporter.collectors.kbs import KbsCollector
from tests.exporter.attest.test_collectors import (
    AS_LINES,
    KBS_LINES,
    drop,
    journal_events,
    make_ctx,
    wait_for,
)
from tests.exporter.attest.vectors import SNP, TDX
from tests.exporter.egress.test_egress_collector import collector as egress_collector
from tests.exporter.egress.test_egress_collector import flow
from tests.exporter.helpers import check_golden, exposition, promtool_check

_VARIABLE = re.compile(r"^(\w+(?:_duration_seconds_(?:bucket|sum)|_timestamp_seconds|_created)(?:\{[^}]*\})?) "
                       r"\S+$", re.MULTILINE)


def masked(text: str) -> str:
    """Timing values masked, and each family's samples sorted: events reach the collectors from several threads
    (file watcher, log tailers), so the order a label set first appeared in is not part of the contract."""
    blocks: list[list[str]] = []
    for line in _VARIABLE.sub(r"\1 <varies>", text).splitlines():
        if line.startswith("# HELP") or not blocks:
            blocks.append([])
        blocks[-1].append(line)
    out = []
    for block in blocks:
        headers = [line for line in block if line.startswith("#")]
        out += headers + sorted(line for line in block if not line.startswith("#"))
    return "\n".join(out) + "\n"


def test_masking_keeps_counts():
    text = ('# HELP x h\nx_duration_seconds_count 3.0\nx_duration_seconds_bucket{le="0.1"} 3.0\n'
            '# HELP y h\ny_last_success_timestamp_seconds{tee_type="tdx"} 1.7e9\ny_total 2.0\ny_created 1.7e9\n')
    assert masked(text) == ('# HELP x h\nx_duration_seconds_bucket{le="0.1"} <varies>\nx_duration_seconds_count 3.0\n'
                            '# HELP y h\ny_created <varies>\ny_last_success_timestamp_seconds{tee_type="tdx"} <varies>\n'
                            'y_total 2.0\n')


def test_kbs_collector_golden(tmp_path: Path) -> None:
    log = tmp_path / "kbs.log"
    log.write_bytes(b"\n".join(KBS_LINES) + b"\n")
    ctx, journal = make_ctx(tmp_path, kbs_log_paths=(log,))
    kbs = KbsCollector(ctx)
    kbs.start()
    try:
        assert wait_for(lambda: len(journal_events(journal, "tee.kbs")) == 4)
        text = exposition(kbs)
    finally:
        kbs.stop()
    assert promtool_check(text) == ""
    check_golden("kbs_logs.prom", masked(text))


@pytest.fixture
def attestation_run(tmp_path: Path):
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1.0", "attestation_policy": {"enforce_debug_disabled": True}}))
    as_log = tmp_path / "as.log"
    as_log.write_bytes(b"\n".join(AS_LINES) + b"\n")
    ctx, journal = make_ctx(tmp_path, attestation_evidence_dir=evidence, attestation_quarantine_dir=tmp_path / "q",
                            attestation_policy_file=policy, attestation_log_paths=(as_log,))
    collector = AttestationCollector(ctx)
    collector.start()
    yield collector, evidence, journal
    collector.stop()


def test_attestation_collector_golden(attestation_run) -> None:
    collector, evidence, journal = attestation_run
    drop(evidence, "good.bin", SNP / "milan-report-2.bin", {"vcek.der": SNP / "milan-vcek-2.der"})
    drop(evidence, "debug.bin", SNP / "milan-report-1.bin", {"vcek.der": SNP / "milan-vcek-1.der"})
    drop(evidence, "tampered.bin", SNP / "milan-report-2-tampered.bin", {"vcek.der": SNP / "milan-vcek-2.der"})
    drop(evidence, "quote.dat", TDX / "quote-v4-3.dat")
    drop(evidence, "cut.dat", TDX / "quote-v4-3-truncated.dat")
    assert wait_for(lambda: len(journal_events(journal, "tee.attestation")) >= 5 + 3)  # files + service log lines
    assert wait_for(lambda: collector.watcher.idle.is_set())
    text = exposition(collector)
    assert promtool_check(text) == ""
    check_golden("attestation_evidence_and_logs.prom", masked(text))


def test_egress_collector_golden(tmp_path: Path) -> None:
    egress = egress_collector(tmp_path)
    egress.on_flow(flow("192.168.122.50", "10.1.2.3"))
    egress.on_flow(flow("192.168.122.50", "203.0.113.9", 53, "udp"))
    egress.on_flow(flow("192.168.122.50", "203.0.113.9", None, "icmp"))
    text = exposition(egress)
    assert promtool_check(text) == ""
    check_golden("egress_flows.prom", masked(text))
