"""A security alert that fires and then resolves leaves two audit records: the real Alertmanager, configured
from alerts/alertmanager.yml (``send_resolved: true`` on the tee-audit receiver), posts both notifications to a
real ``tee-audit ship --alertmanager.listen-address``, and ``tee-audit verify`` finds both in an intact chain.

The alert is raised and ended through Alertmanager's v2 API exactly as Prometheus does it: the same labels,
re-sent with ``endsAt`` in the future while it fires and with ``endsAt`` = now once the rule stops matching.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import alertmanager_config
from tests.fixtures.prometheus import AlertmanagerServer, Daemon, free_port, process_env, venv_bin, wait_until

CHAIN = "e2e-resolved"


@dataclass
class Shipper:
    daemon: Daemon
    store: Path
    webhook: str
    public_key: Path


@pytest.fixture
def shipper(tmp_path: Path) -> Iterator[Shipper]:
    """``tee-audit ship`` as a daemon into a local store, with its Alertmanager receiver on a free port."""
    keys = tmp_path / "keys"
    subprocess.run([venv_bin("tee-audit"), "keygen", "--out", str(keys)], check=True, capture_output=True,
                   timeout=60)
    metrics, webhook, store = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", tmp_path / "store"
    daemon = Daemon("tee-audit ship", [
        venv_bin("tee-audit"), "ship", "--store", str(store), "--signing-key", str(keys / "audit.key"),
        "--chain", CHAIN, "--spool.dir", str(tmp_path / "spool"), "--checkpoint.every-seconds", "1",
        "--source.poll-seconds", "0.2", "--web.listen-address", metrics, "--alertmanager.listen-address", webhook,
    ], tmp_path / "ship.log", env=process_env())
    daemon.start()
    try:
        daemon.wait_ready(f"http://{metrics}/metrics")
        yield Shipper(daemon, store, f"http://{webhook}/alerts", keys / "audit.pub")
    finally:
        daemon.stop()


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _send(alertmanager: AlertmanagerServer, labels: dict[str, str], ends_at: dt.datetime,
          starts_at: dt.datetime) -> None:
    """What Prometheus' notifier posts for one alert on every evaluation."""
    alert = {"labels": labels, "startsAt": _rfc3339(starts_at), "endsAt": _rfc3339(ends_at),
             "annotations": {"summary": "SEV-SNP evidence failed verification (signature)",
                             "runbook_url": "docs/runbooks.md#teeattestationintegrityfailure"},
             "generatorURL": "http://prometheus.example/graph"}
    requests.post(f"{alertmanager.url}/api/v2/alerts", json=[alert], timeout=10).raise_for_status()


def _alert_records(store: Path) -> list[dict[str, Any]]:
    """Alert records of the chain in the local store, in chain order (a partly written last line is skipped)."""
    records = []
    for segment in sorted((store / CHAIN).glob("records-*.jsonl")):
        for line in segment.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event", {}).get("kind") == "alert":
                records.append(record)
    return sorted(records, key=lambda r: r["chain"]["seq"])


def _actions(store: Path, alertname: str) -> list[str]:
    return [r["event"]["action"] for r in _alert_records(store) if r["rule"]["name"] == alertname]


def test_fired_then_resolved_alert_are_both_audit_records_in_an_intact_chain(
        shipper: Shipper, alertmanager_servers: Callable[[str], AlertmanagerServer]) -> None:
    alertmanager = alertmanager_servers(alertmanager_config(shipper.webhook))
    alertname = "TEEAttestationIntegrityFailure"
    labels = {"alertname": alertname, "category": "security", "severity": "critical", "tee_type": "sev-snp",
              "reason": "signature", "instance": f"host-{uuid.uuid4().hex[:8]}:9940"}
    started = dt.datetime.now(dt.UTC)

    _send(alertmanager, labels, started + dt.timedelta(hours=1), started)
    wait_until(lambda: _actions(shipper.store, alertname) == ["alert-firing"], 30,
               "the firing alert as an audit record")

    _send(alertmanager, labels, dt.datetime.now(dt.UTC), started)
    wait_until(lambda: _actions(shipper.store, alertname) == ["alert-firing", "alert-resolved"], 30,
               "the resolved alert as a second audit record")

    firing, resolved = _alert_records(shipper.store)
    assert firing["tee"]["alert"]["fingerprint"] == resolved["tee"]["alert"]["fingerprint"] != ""
    assert (firing["tee"]["alert"]["status"], resolved["tee"]["alert"]["status"]) == ("firing", "resolved")
    assert resolved["event"]["type"] == ["end"] and resolved["labels"] == labels
    assert firing["tee"]["alert"]["receiver"] == resolved["tee"]["alert"]["receiver"] == "tee-audit"

    shipper.daemon.stop()  # SIGTERM: the shipper seals what it holds with a last signed checkpoint
    result = subprocess.run([venv_bin("tee-audit"), "verify", "--store", str(shipper.store), "--public-key",
                             str(shipper.public_key), "--chain", CHAIN, "--json"], capture_output=True, text=True,
                            timeout=60, check=False)
    report = json.loads(result.stdout)
    assert (result.returncode, report["intact"], report["findings"]) == (0, True, []), result.stdout
    assert report["records"] >= resolved["chain"]["seq"] + 1 and report["unsealed_tail"] == 0
