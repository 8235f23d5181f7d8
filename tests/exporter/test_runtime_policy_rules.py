"""Each runtime_policy rule on its own, on libvirt's test driver: breaking only that rule gives its metric series
and a journal event naming only it (the alert on the series is tested in alerts/tests/security_test.yml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.collectors import libvirt as libvirt_collector
from tests.exporter.helpers import assert_schema_valid, exposition, journal_lines, make_ctx, samples, wait_for

POLICY = {"version": "1.0",
          "runtime_policy": {"max_memory": "16GB", "max_cpus": 8, "allowed_devices": ["virtio-net", "virtio-blk"],
                             "network_policy": {"allow_egress": ["10.0.0.0/8"], "deny_egress": ["0.0.0.0/0"]}}}
VIRTIOFS = ("<filesystem type='mount'><driver type='virtiofs'/><source dir='/srv'/><target dir='srv'/>"
            "</filesystem></devices>")


@pytest.mark.parametrize(("rule", "edit"), [
    ("max_memory", lambda xml: xml.replace("<memory unit='KiB'>2097152</memory>",
                                           "<memory unit='KiB'>33554432</memory>")),
    ("max_cpus", lambda xml: xml.replace(">2</vcpu>", ">9</vcpu>")),
    ("allowed_devices", lambda xml: xml.replace("</devices>", VIRTIOFS)),
])
def test_each_runtime_rule_alone_gives_its_metric_and_journal_event(tmp_path: Path, rule: str, edit) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    ctx = make_ctx(tmp_path, attestation_policy_file=policy)
    collector = libvirt_collector.build(ctx)
    try:
        conn = collector.connection.get()
        dom = conn.lookupByName("snp-debug")  # shut off SEV-SNP domain within policy: 2 GiB, 2 vCPUs, virtio-blk
        exposition(collector)
        xml = dom.XMLDesc(0)
        changed = edit(xml)
        assert changed != xml
        conn.defineXML(changed)
        assert wait_for(lambda: not collector.cache.cached(dom.UUIDString()))
        text = exposition(collector)
    finally:
        collector.stop()
    rules = {dict(labels)["rule"] for (name, labels), v in samples(text).items()
             if name == "tee_runtime_policy_violation" and dict(labels)["domain"] == "snp-debug" and v == 1}
    assert rules == {rule}
    events = [e for e in journal_lines(ctx) if e["tee"]["vm"]["name"] == "snp-debug"]
    assert [(e["event"]["action"], e["tee"]["policy"]["violations"]) for e in events] == [
        ("runtime-policy-violation", [rule])]
    assert_schema_valid(events)
