"""The shipper as a daemon: its metrics (promtool-clean), Alertmanager alerts becoming audit records, and the
periodic self-verification flipping tee_audit_chain_intact when the store is tampered with."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from audit.config import ShipSettings, validate
from audit.ship import READ_BATCH, Pipeline, run
from tests.audit.forge import forged_records, last_stored
from tests.audit.kit import TEE_AUDIT, keys, ship_once, verify_json, write_journal
from tests.fixtures.prometheus import free_port
from tests.fixtures.tmpfs import mounted_tmpfs
from tests.jsonl import complete_json_lines

EVENTS = 300


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _wait(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Shipper:
    def __init__(self, tmp: Path) -> None:
        self.key, self.public = keys(tmp / "keys")
        self.journal, self.store = tmp / "journal.jsonl", tmp / "store"
        write_journal(self.journal, EVENTS)
        self.metrics_port, self.webhook_port = free_port(), free_port()
        self.metrics = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.proc = subprocess.Popen([
            *TEE_AUDIT, "ship", "--source", str(self.journal), "--store", str(self.store), "--chain", "h1",
            "--signing-key", str(self.key), "--spool.dir", str(tmp / "spool"),
            "--web.listen-address", f"127.0.0.1:{self.metrics_port}",
            "--alertmanager.listen-address", f"127.0.0.1:{self.webhook_port}",
            "--verify.every-seconds", "0.3", "--checkpoint.every-seconds", "0.3", "--source.poll-seconds", "0.1",
        ], stdout=subprocess.DEVNULL, stderr=(tmp / "shipper.log").open("wb"))

    def sample(self, name: str, **labels: str) -> float | None:
        try:
            return _scrape(self.metrics).get((name, tuple(sorted(labels.items()))))
        except OSError:
            return None

    def records(self) -> list[dict[str, Any]]:
        return [record for seg in sorted((self.store / "h1").glob("records-*.jsonl"))
                for record in complete_json_lines(seg)]


@pytest.fixture
def shipper(tmp_path: Path) -> Iterator[Shipper]:
    ship = Shipper(tmp_path)
    yield ship
    if ship.proc.poll() is None:
        ship.proc.send_signal(signal.SIGTERM)
        ship.proc.wait(timeout=30)


def test_metrics_are_exposed_with_contract_names_and_pass_promtool(shipper: Shipper) -> None:
    _wait(lambda: shipper.sample("tee_audit_records_shipped_total", sink="localstore") == EVENTS, "shipping")
    assert shipper.sample("tee_audit_records_in_total", source="journal.jsonl") == EVENTS
    _wait(lambda: shipper.sample("tee_audit_last_checkpoint_timestamp_seconds", chain="h1"), "a checkpoint")
    _wait(lambda: shipper.sample("tee_audit_spool_depth_records") == 0, "an empty spool")
    # the lag is the age of what was read but not yet shipped: zero once the shipper is idle, not at every instant
    _wait(lambda: shipper.sample("tee_audit_lag_seconds", source="journal.jsonl") == 0, "no lag")
    assert shipper.sample("tee_audit_spool_bytes") is not None
    with urllib.request.urlopen(shipper.metrics, timeout=5) as resp:
        text = resp.read()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    write_journal(shipper.journal, 5, start=EVENTS)
    _wait(lambda: shipper.sample("tee_audit_records_shipped_total", sink="localstore") == EVENTS + 5, "tailing")
    shipper.proc.send_signal(signal.SIGTERM)
    assert shipper.proc.wait(timeout=30) == 0


def test_self_verification_reports_intact_then_tampering(shipper: Shipper) -> None:
    _wait(lambda: shipper.sample("tee_audit_chain_intact", chain="h1", sink="localstore") == 1, "intact gauge")
    (segment,) = (shipper.store / "h1").glob("records-*.jsonl")
    lines = segment.read_text().splitlines()
    lines[10] = lines[10].replace("vm-10", "vm-evil")
    segment.write_text("\n".join(lines) + "\n")
    _wait(lambda: shipper.sample("tee_audit_chain_intact", chain="h1", sink="localstore") == 0, "tamper detected")


def test_alertmanager_fired_and_resolved_alerts_become_verified_records(
        shipper: Shipper, alertmanager_servers: Callable[[str], Any]) -> None:
    am = alertmanager_servers(
        "route:\n  receiver: audit\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n"
        "receivers:\n- name: audit\n  webhook_configs:\n"
        f"  - url: http://127.0.0.1:{shipper.webhook_port}/alerts\n    send_resolved: true\n")
    now = dt.datetime.now(dt.UTC)
    alert = {"labels": {"alertname": "TeeChainVerificationFailed", "severity": "critical"},
             "annotations": {"summary": "audit chain not intact"}, "startsAt": now.isoformat()}

    def post(body: list[dict[str, Any]]) -> None:
        req = urllib.request.Request(f"{am.url}/api/v2/alerts", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).close()

    post([alert])
    _wait(lambda: any(r.get("event", {}).get("action") == "alert-firing" for r in shipper.records()), "firing")
    post([{**alert, "endsAt": dt.datetime.now(dt.UTC).isoformat()}])
    _wait(lambda: any(r.get("event", {}).get("action") == "alert-resolved" for r in shipper.records()),
          "resolved", timeout=60)
    fired = next(r for r in shipper.records() if r["event"]["action"] == "alert-firing")
    assert fired["rule"]["name"] == "TeeChainVerificationFailed" and fired["message"] == "audit chain not intact"
    assert shipper.sample("tee_audit_records_in_total", source="alertmanager") >= 2
    shipper.proc.send_signal(signal.SIGTERM)
    assert shipper.proc.wait(timeout=30) == 0
    code, report = verify_json("--store", str(shipper.store), "--public-key", str(shipper.public))
    assert (code, report["findings"]) == (0, [])


def test_records_forged_into_the_store_under_the_running_shipper_stop_it_and_are_counted(shipper: Shipper) -> None:
    _wait(lambda: shipper.sample("tee_audit_records_shipped_total", sink="localstore") == EVENTS, "shipping")
    assert shipper.sample("tee_audit_sink_conflicts_total", sink="localstore") == 0
    assert shipper.sample("tee_audit_selfcheck_errors_total", sink="localstore") == 0
    _wait(lambda: shipper.sample("tee_audit_selfcheck_last_run_timestamp_seconds", sink="localstore"), "a verdict")
    forged = forged_records(last_stored(shipper.store), 5)
    with open(max((shipper.store / "h1").glob("records-*.jsonl")), "ab") as fh:
        fh.write(b"".join(doc + b"\n" for _, doc in forged))
    write_journal(shipper.journal, 5, start=EVENTS)
    _wait(lambda: (shipper.sample("tee_audit_sink_conflicts_total", sink="localstore") or 0) >= 5, "the conflict")
    assert shipper.sample("tee_audit_records_shipped_total", sink="localstore") == EVENTS
    assert len(shipper.records()) == EVENTS + 5  # nothing appended after the forged lines


def test_an_alert_elasticsearch_would_refuse_is_quarantined_and_its_neighbour_chained(
        shipper: Shipper, tmp_path: Path) -> None:
    """startsAt in year 9999 (Alertmanager sends what it is given) cannot be a date_nanos @timestamp."""
    alert = {"status": "firing", "labels": {"alertname": "Far"}, "annotations": {}, "fingerprint": "00000000000000f1",
             "startsAt": "9999-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}
    payload = {"version": "4", "status": "firing", "receiver": "audit", "groupKey": "{}:{}",
               "alerts": [alert, {**alert, "fingerprint": "00000000000000f2", "labels": {"alertname": "Near"},
                                  "startsAt": "2026-11-01T00:00:00Z"}]}
    req = urllib.request.Request(f"http://127.0.0.1:{shipper.webhook_port}/alerts", method="POST",
                                 data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    _wait(lambda: _post_ok(req), "the webhook")
    quarantine = tmp_path / "spool" / "quarantine" / "quarantine.jsonl"
    _wait(lambda: quarantine.exists() and quarantine.read_text().strip(), "the quarantine entry")
    (entry,) = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert (entry["file"], entry["reason"]) == ("alertmanager", "bad_timestamp")
    _wait(lambda: any(r.get("rule", {}).get("name") == "Near" for r in shipper.records()), "the good alert")
    assert not any(r.get("rule", {}).get("name") == "Far" for r in shipper.records())


def _post_ok(req: urllib.request.Request) -> bool:
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status == 200
    except OSError:
        return False


def _post_alert(port: int, fingerprint: str) -> int:
    """POST one Alertmanager notification to the shipper's webhook; the HTTP status."""
    body = {"version": "4", "groupKey": "{}:{alertname=\"TEEAuditLagHigh\"}", "truncatedAlerts": 0,
            "status": "firing", "receiver": "tee-audit", "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager",
            "alerts": [{"status": "firing", "labels": {"alertname": "TEEAuditLagHigh", "severity": "warning"},
                        "annotations": {"summary": "lag"}, "startsAt": "2026-11-28T10:00:00.000Z",
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
                        "fingerprint": fingerprint}]}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/alerts", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _spooled(spool: Path, text: str) -> bool:
    return any(text in seg.read_text(errors="replace") for seg in spool.glob("*.spool"))


def test_backpressure_bounds_the_spool_and_the_webhook_answers_503_while_it_cannot_spool(tmp_path: Path) -> None:
    """docs/audit.md: above spool.max-bytes reading pauses (tee_audit_backpressure 1) and the spool stays bounded,
    the backlog staying in the journal; the Alertmanager receiver answers 503 for what it cannot make durable (so
    Alertmanager retries). The sink is a local store on a real 64 KiB tmpfs: it fills, the sink fails and retries,
    and the chained records wait in the spool. Once the filesystem grows, reading resumes (under a bound smaller
    than one spool segment too) and every record arrives, in order, verified."""
    key, public = keys(tmp_path / "keys")
    journal, spool, bound = tmp_path / "journal.jsonl", tmp_path / "spool", 60_000
    write_journal(journal, 20_000)
    metrics_port, webhook_port = free_port(), free_port()
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    with mounted_tmpfs(tmp_path / "small", "64k") as store:
        proc = subprocess.Popen([
            *TEE_AUDIT, "ship", "--source", str(journal), "--store", str(store), "--chain", "h1",
            "--signing-key", str(key), "--spool.dir", str(spool), "--spool.max-bytes", str(bound),
            "--web.listen-address", f"127.0.0.1:{metrics_port}",
            "--alertmanager.listen-address", f"127.0.0.1:{webhook_port}", "--source.poll-seconds", "0.1",
        ], stdout=subprocess.DEVNULL, stderr=(tmp_path / "shipper.log").open("wb"))
        try:
            sample = lambda name, **labels: _scrape(metrics).get((name, tuple(sorted(labels.items()))))
            _wait(lambda: _post_ok(urllib.request.Request(metrics)) and sample("tee_audit_backpressure") == 1,
                  "backpressure")
            chained = sample("tee_audit_records_in_total", source="journal.jsonl")
            assert chained <= READ_BATCH  # the one read batch that crossed the bound
            # bounded: the spool holds that batch, not the 20000-line backlog (which stays in the journal)
            assert bound <= sample("tee_audit_spool_bytes") < journal.stat().st_size / 4
            # while reading is paused, an alert cannot become durable: 503 (after the receiver's wait), not chained
            assert _post_alert(webhook_port, "00000000000000aa") == 503
            assert not _spooled(spool, "00000000000000aa")
            assert sample("tee_audit_records_in_total", source="journal.jsonl") == chained
            assert sample("tee_audit_sink_errors_total", sink="localstore", reason="io") >= 1
            subprocess.run(["mount", "-o", "remount,size=64m", str(store)], check=True)
            # at-least-once: the refused alert stays queued and is chained once reading resumes (Alertmanager's
            # retry of it would be a second record with the same event id)
            _wait(lambda: sample("tee_audit_records_shipped_total", sink="localstore") == 20_001, "shipping",
                  timeout=120)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            code, report = verify_json("--store", str(store), "--public-key", str(public), "--chain", "h1")
            assert code == 0 and report["records"] == 20_001, report
            stored = [line for seg in sorted((store / "h1").glob("records-*.jsonl")) for line in seg.read_text()
                      .splitlines() if "00000000000000aa" in line]
            assert len(stored) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_webhook_answers_200_only_once_the_alert_is_in_the_spool(shipper: Shipper, tmp_path: Path) -> None:
    _wait(lambda: shipper.sample("tee_audit_records_shipped_total", sink="localstore") == EVENTS, "shipping")
    assert _post_alert(shipper.webhook_port, "00000000000000bb") == 200
    assert _spooled(tmp_path / "spool", "00000000000000bb")  # durable when the answer arrived, not later


def test_source_errors_are_counted_by_source_and_reason(shipper: Shipper) -> None:
    """docs/audit.md: quarantined input is counted in tee_audit_source_errors_total{source,reason}."""
    _wait(lambda: shipper.sample("tee_audit_records_shipped_total", sink="localstore") == EVENTS, "shipping")
    with shipper.journal.open("ab") as journal:
        journal.write(b"not json\n" + b'{"a": 1, "a": 2}\n' + b"not json either\n")
    _wait(lambda: shipper.sample("tee_audit_source_errors_total", source="journal.jsonl", reason="not_json") == 2,
          "two not_json lines counted")
    _wait(lambda: shipper.sample("tee_audit_source_errors_total", source="journal.jsonl",
                                 reason="duplicate_key") == 1, "the duplicate key counted")
    assert shipper.sample("tee_audit_records_in_total", source="journal.jsonl") == EVENTS  # none of them chained


def test_a_bug_in_the_ship_loop_ends_the_daemon_with_its_services_instead_of_leaving_it_hung(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A ship loop that raised used to leave the metrics, webhook and self-check threads holding the process up: it
    no longer shipped, its webhook hung, SIGTERM went unheard. Now the daemon exits 3 with the traceback logged
    once, its services stopped, and a rerun ships everything from the spool."""
    key, public = keys(tmp_path / "keys")
    journal, store, spool = tmp_path / "journal.jsonl", tmp_path / "store", tmp_path / "spool"
    write_journal(journal, EVENTS)
    metrics_port, webhook_port = free_port(), free_port()
    settings = validate(ShipSettings(
        sources=(journal,), store=store, signing_key=key, chain="h1", spool_dir=spool,
        web_listen_address=f"127.0.0.1:{metrics_port}", alertmanager_listen_address=f"127.0.0.1:{webhook_port}",
        source_poll_seconds=0.1))
    step, steps = Pipeline.step, []

    def failing_step(pipeline: Pipeline) -> bool:
        steps.append(1)
        if len(steps) == 3:
            raise RuntimeError("a bug")
        return step(pipeline)

    monkeypatch.setattr(Pipeline, "step", failing_step)
    assert run(settings) == 3
    failed = [r for r in caplog.records if r.getMessage().startswith("the ship loop failed")]
    assert len(failed) == 1 and failed[0].exc_info and "a bug" in str(failed[0].exc_info[1])
    for port in (metrics_port, webhook_port):
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    assert [t.name for t in threading.enumerate() if not t.daemon] == [threading.main_thread().name]
    monkeypatch.undo()
    assert ship_once([journal], key, spool, store=store) == 0
    code, report = verify_json("--store", str(store), "--chain", "h1", "--public-key", str(public))
    assert (code, report["records"]) == (0, EVENTS)
