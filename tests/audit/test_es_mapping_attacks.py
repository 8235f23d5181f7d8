"""Attacks on the mapping check (audit/esmapping.py) through the running shipper: input that parses and that
Elasticsearch takes, but that the check itself must not trip over. The cases Elasticsearch refuses or accepts are
in tests/audit/test_es_mapping.py, sent to a real Elasticsearch first."""

from __future__ import annotations

import json
import urllib.request

import pytest

from audit import esmapping
from tests.audit.kit import write_journal
from tests.audit.test_daemon import EVENTS, Shipper, _post_ok, _wait, shipper  # noqa: F401 (shipper: the fixture)


def test_an_alert_with_a_lone_surrogate_in_a_label_is_refused_by_the_sealing_not_a_crash(
        shipper: Shipper) -> None:  # noqa: F811
    """``"\\ud800"`` is valid JSON (Alertmanager relays what a rule templated) but has no UTF-8 form: the sealing
    refuses it (counted as ``not_utf8``). The mapping check runs first, on the alert's labels (flattened: it sizes
    each key path in UTF-8 bytes), and must leave it to the sealing rather than raise and take the ship loop down
    (the webhook then never answered, and nothing more was chained)."""
    alert = {"status": "firing", "labels": {"alertname": "Odd", "\ud800": "v"}, "annotations": {},
             "fingerprint": "00000000000000f1", "startsAt": "2026-11-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}
    payload = {"version": "4", "status": "firing", "receiver": "audit", "groupKey": "{}:{}",
               "alerts": [alert, {**alert, "fingerprint": "00000000000000f2", "labels": {"alertname": "Even"}}]}
    body = json.dumps(payload).encode()
    assert b"\\ud800" in body
    req = urllib.request.Request(f"http://127.0.0.1:{shipper.webhook_port}/alerts", method="POST", data=body,
                                 headers={"Content-Type": "application/json"})
    _wait(lambda: _post_ok(req), "the webhook")
    _wait(lambda: any(r.get("rule", {}).get("name") == "Even" for r in shipper.records()), "the good alert")
    assert not any(r.get("rule", {}).get("name") == "Odd" for r in shipper.records())
    assert shipper.sample("tee_audit_source_errors_total", source="alertmanager", reason="not_utf8") == 1
    write_journal(shipper.journal, 5, start=EVENTS)
    _wait(lambda: shipper.sample("tee_audit_records_shipped_total", sink="localstore") == EVENTS + 1 + 5, "tailing")


def test_a_metadata_name_is_refused_at_the_top_level_after_it_passed_inside_an_object() -> None:
    """Field names found good are remembered whatever their object; ``_id`` is good inside ``tee.vm`` but not at
    the top level, where Elasticsearch keeps it for the metadata field (the cases of test_es_mapping.py)."""
    esmapping.check_event({"@timestamp": "2026-11-01T00:00:00Z", "tee": {"vm": {"_id": "v", "_source": "w"}}})
    with pytest.raises(esmapping.Refused, match="_id"):
        esmapping.check_event({"@timestamp": "2026-11-01T00:00:00Z", "_id": "v"})
