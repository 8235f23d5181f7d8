"""The attestation and KBS collectors as daemons: a real watched directory, real log files rotated under the
reader; the metrics and the journal must tell the same story, and bad input must never stop them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from exporter.attest.errors import EvidenceError
from exporter.collectors.attestation import AttestationCollector
from exporter.collectors.base import CollectorContext
from exporter.collectors.kbs import KbsCollector
from exporter.config import Settings
from exporter.journal import Journal, load_schema
from exporter.logs.tail import Tailer
from tests.jsonl import complete_json_lines

from ..helpers import exposition, promtool_check, samples, value
from . import forge
from .vectors import SNP, TDX

KBS_LINES = [
    (b'[2026-11-26T09:00:05Z INFO  actix_web::middleware::logger] 10.0.3.21 "POST /kbs/v0/attest HTTP/1.1" 200 '
    b'1422 "-" "attestation-agent-kbs-client/0.1.0" 0.031877'),
    (b'[2026-11-26T09:00:05Z INFO  actix_web::middleware::logger] 10.0.3.21 "GET /kbs/v0/resource/default/key/1 '
    b'HTTP/1.1" 200 530 "-" "attestation-agent-kbs-client/0.1.0" 0.001934'),
    b"[2026-11-26T09:00:07Z ERROR kbs::error] TokenNotFound",
    (b'[2026-11-26T09:00:07Z INFO  actix_web::middleware::logger] 10.0.7.4 "GET /kbs/v0/resource/default/key/1 '
    b'HTTP/1.1" 401 170 "-" "curl/8.5.0" 0.000233'),
    (b'2026-11-26T09:00:09.118311Z  INFO actix_web::middleware::logger: 10.0.3.22 "GET /kbs/v0/resource/prod/secret/'
    b'db HTTP/1.1" 403 160 "-" "confidential-data-hub/0.1.0" 0.004411'),
    (b'2026-11-26T09:00:11.502090Z  INFO actix_web::middleware::logger: 10.0.3.22 "GET /kbs/v0/resource/prod/cert/'
    b'tls HTTP/1.1" 404 151 "-" "confidential-data-hub/0.1.0" 0.000871'),
]
AS_LINES = [
    (b'2026-11-26T09:00:05.201455Z  INFO attestation_service: Verifier/endorsement check passed. claims = {}, '
    b'initdata claims = null, runtime claims = {} tee=Snp tee_class="cpu"'),
    b"[2024-03-01T10:00:00Z INFO  attestation_service] Tdx Verifier/endorsement check passed.",
    (b"2026-11-26T09:00:08.771002Z ERROR kbs::error: AttestationError(RcarAttestFailed { source: verify TEE evidence "
    b"failed: Verifier evaluate failed: TCB status is OutOfDate })"),
    b"Caused by:",
]


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def journal_events(path: Path, dataset: str) -> list[dict]:
    return [e for e in complete_json_lines(path) if e["event"]["dataset"] == dataset]


def make_ctx(tmp_path: Path, **settings) -> tuple[CollectorContext, Path]:
    journal_path = tmp_path / "journal.jsonl"
    s = Settings()
    for key, val in settings.items():
        setattr(s, key, val)
    return CollectorContext(settings=s, journal=Journal(journal_path, host="test-host")), journal_path


def test_unconfigured_collectors_expose_nothing_and_do_not_fail(tmp_path) -> None:
    ctx, journal = make_ctx(tmp_path)
    collectors = [AttestationCollector(ctx), KbsCollector(ctx)]
    for c in collectors:
        c.start()
    try:
        assert [m for c in collectors for m in c.collect()] == []
    finally:
        for c in collectors:
            c.stop()
    assert not journal.exists()


@pytest.fixture
def attestation(tmp_path):
    evidence, quarantine = tmp_path / "evidence", tmp_path / "quarantine"
    evidence.mkdir()
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1.0", "attestation_policy": {"enforce_debug_disabled": True}}))
    ctx, journal = make_ctx(tmp_path, attestation_evidence_dir=evidence, attestation_quarantine_dir=quarantine,
                            attestation_policy_file=policy)
    collector = AttestationCollector(ctx)
    collector.start()
    yield collector, evidence, quarantine, journal
    collector.stop()


def drop(evidence: Path, name: str, source: Path, certs: dict[str, Path] | None = None) -> None:
    """Certificates first, then the evidence renamed into place (how a producer should write)."""
    if certs:
        folder = evidence / f"{name}.certs"
        folder.mkdir()
        for target, src in certs.items():
            shutil.copy(src, folder / target)
    tmp = evidence / f".{name}.tmp"
    shutil.copy(source, tmp)
    os.rename(tmp, evidence / name)


def test_watched_directory_metrics_and_journal_agree(attestation) -> None:
    collector, evidence, quarantine, journal = attestation
    drop(evidence, "good.bin", SNP / "milan-report-2.bin", {"vcek.der": SNP / "milan-vcek-2.der"})
    drop(evidence, "debug.bin", SNP / "milan-report-1.bin", {"vcek.der": SNP / "milan-vcek-1.der"})
    drop(evidence, "tampered.bin", SNP / "milan-report-2-tampered.bin", {"vcek.der": SNP / "milan-vcek-2.der"})
    (evidence / "quote.dat").write_bytes((TDX / "quote-v4-3.dat").read_bytes())  # plain write + close
    drop(evidence, "cut.dat", TDX / "quote-v4-3-truncated.dat")
    (evidence / "notes.txt").write_text("not evidence")
    assert wait_for(lambda: len(journal_events(journal, "tee.attestation")) >= 5)
    assert wait_for(lambda: collector.watcher.idle.is_set())

    text = exposition(collector)
    assert promtool_check(text) == ""
    events = journal_events(journal, "tee.attestation")
    assert len(events) == 5  # one per evidence file, none for notes.txt
    from_journal = Counter((e["tee"]["type"], e["event"]["outcome"], e["event"].get("reason", "none"))
                           for e in events)
    from_metrics = {(dict(k[1])["tee_type"], dict(k[1])["outcome"], dict(k[1])["reason"]): v
                    for k, v in samples(text).items() if k[0] == "tee_attestation_attempts_total"}
    assert from_metrics == dict(from_journal)
    assert from_journal == Counter({("sev-snp", "success", "none"): 1, ("sev-snp", "failure", "debug"): 1,
                                    ("sev-snp", "failure", "signature"): 1, ("tdx", "success", "none"): 1,
                                    ("tdx", "failure", "parse"): 1})
    assert value(text, "tee_policy_violations_total", tee_type="sev-snp", rule="enforce_debug_disabled") == 1
    assert value(text, "tee_attestation_evidence_errors_total", reason="truncated") == 1
    assert value(text, "tee_attestation_duration_seconds_count", tee_type="sev-snp") == 3
    assert value(text, "tee_attestation_reported_tcb", tee_type="sev-snp", component="microcode") is not None
    assert value(text, "tee_attestation_last_success_timestamp_seconds", tee_type="tdx") > 0
    # the unparseable file is quarantined, the others stay
    assert not (evidence / "cut.dat").exists()
    assert [p.name.split("-", 1)[1] for p in quarantine.iterdir()] == ["cut.dat"]
    schema = load_schema()
    for event in events:
        jsonschema.validate(event, schema)
    good = next(e for e in events if e["file"]["path"].endswith("good.bin"))
    assert good["tee"]["measurement"].startswith("sha384:7a1e5c26")
    assert good["tee"]["evidence"]["sha256"] == good["file"]["hash"]["sha256"]
    assert good["tee"]["policy"] == {"result": "pass", "violations": []}


def test_same_file_is_verified_once(attestation) -> None:
    collector, evidence, _, journal = attestation
    (evidence / "quote.dat").write_bytes((TDX / "quote-v5-2.dat").read_bytes())
    assert wait_for(lambda: len(journal_events(journal, "tee.attestation")) == 1)
    os.utime(evidence / "quote.dat")
    with open(evidence / "quote.dat", "ab"):
        pass  # closed again without a change
    (evidence / "other.dat").write_bytes((TDX / "quote-v5-7.dat").read_bytes())
    assert wait_for(lambda: len(journal_events(journal, "tee.attestation")) >= 2)
    assert wait_for(lambda: collector.watcher.idle.is_set())
    names = sorted(Path(e["file"]["path"]).name for e in journal_events(journal, "tee.attestation"))
    assert names == ["other.dat", "quote.dat"]


def rotate(path: Path) -> None:
    os.rename(path, path.with_name(path.name + ".1"))


def count_polls(follower) -> Callable[[], int]:
    """Counts the follower's completed polls (its thread calls ``self.poll_once``), so a test waits for polls
    instead of sleeping for a guessed number of poll intervals."""
    done = [0]
    poll = follower.poll_once

    def counted() -> int:
        handled = poll()
        done[0] += 1
        return handled

    follower.poll_once = counted
    return lambda: done[0]


def test_logs_rotated_while_read_lose_and_repeat_nothing(tmp_path) -> None:
    kbs_log, as_log = tmp_path / "kbs.log", tmp_path / "as.log"
    kbs_log.write_bytes(b"\n".join(KBS_LINES[:3]) + b"\n")
    as_log.write_bytes(AS_LINES[0] + b"\n")
    ctx, journal = make_ctx(tmp_path, kbs_log_paths=(kbs_log,), attestation_log_paths=(as_log,))
    att, kbs = AttestationCollector(ctx), KbsCollector(ctx)
    polls = {"att": count_polls(att.follower), "kbs": count_polls(kbs.follower)}
    att.start()
    kbs.start()
    try:
        assert wait_for(lambda: len(journal_events(journal, "tee.kbs")) == 1)
        # a line written to the old file just before rotation, a partial line completed after, then the new file
        with open(kbs_log, "ab") as f:
            f.write(KBS_LINES[3] + b"\n" + KBS_LINES[4][:40])
        rotate(kbs_log)
        with open(tmp_path / "kbs.log.1", "ab") as f:
            f.write(KBS_LINES[4][40:] + b"\n")
        kbs_log.write_bytes(KBS_LINES[5] + b"\n")
        rotate(as_log)
        as_log.write_bytes(b"\n".join(AS_LINES[1:]) + b"\n")
        assert wait_for(lambda: len(journal_events(journal, "tee.kbs")) == 4)
        assert wait_for(lambda: len(journal_events(journal, "tee.attestation")) == 3)
        seen = {name: count() for name, count in polls.items()}  # two more polls of each: nothing read twice
        assert wait_for(lambda: all(count() >= seen[name] + 2 for name, count in polls.items()))
        text = exposition(att, kbs)
    finally:
        att.stop()
        kbs.stop()
    assert promtool_check(text) == ""
    kbs_events = journal_events(journal, "tee.kbs")
    assert len(kbs_events) == 4
    decisions = Counter((e["tee"]["kbs"]["decision"], e["event"].get("reason", "none")) for e in kbs_events)
    metric = {(dict(k[1])["outcome"], dict(k[1])["reason"]): v for k, v in samples(text).items()
              if k[0] == "tee_kbs_resource_requests_total"}
    assert metric == dict(decisions) == {("released", "none"): 1, ("denied", "unattested"): 1,
                                         ("denied", "policy"): 1, ("denied", "not_found"): 1}
    assert {e["tee"]["kbs"]["resource"] for e in kbs_events} == {
        "kbs:///default/key/1", "kbs:///prod/secret/db", "kbs:///prod/cert/tls"}
    assert kbs_events[0]["tee"]["kbs"]["requester"] == "10.0.3.21"
    as_events = journal_events(journal, "tee.attestation")
    assert Counter((e["tee"]["type"], e["event"]["outcome"]) for e in as_events) == Counter(
        {("sev-snp", "success"): 1, ("tdx", "success"): 1, ("unknown", "failure"): 1})
    assert value(text, "tee_attestation_attempts_total", tee_type="unknown", outcome="failure", reason="tcb") == 1
    assert value(text, "tee_exporter_log_lines_unparsed_total", source="attestation_service") == 1
    assert value(text, "tee_exporter_log_lines_unparsed_total", source="kbs") == 0
    schema = load_schema()
    for event in kbs_events + as_events:
        jsonschema.validate(event, schema)


def test_resource_type_label_is_bounded(tmp_path) -> None:
    ctx, _ = make_ctx(tmp_path, kbs_log_paths=(tmp_path / "kbs.log",))
    kbs = KbsCollector(ctx)
    labels = {kbs.type_label(f"type{i}") for i in range(100)}
    assert len(labels) == 21 and "other" in labels
    assert kbs.type_label("Weird Type!") == "other"


def test_restarted_collector_continues_where_it_stopped(tmp_path) -> None:
    kbs_log = tmp_path / "kbs.log"
    kbs_log.write_bytes(b"\n".join(KBS_LINES[:2]) + b"\n" + KBS_LINES[3][:30])  # ends in a partial line
    ctx, journal = make_ctx(tmp_path, kbs_log_paths=(kbs_log,))
    first = KbsCollector(ctx)
    first.start()
    assert wait_for(lambda: len(journal_events(journal, "tee.kbs")) == 1)
    first.stop()
    with open(kbs_log, "ab") as f:
        f.write(KBS_LINES[3][30:] + b"\n")
    second = KbsCollector(make_ctx(tmp_path, kbs_log_paths=(kbs_log,))[0])
    second.start()
    try:
        assert wait_for(lambda: len(journal_events(journal, "tee.kbs")) >= 2)
        second.follower.poll_once()
    finally:
        second.stop()
    events = journal_events(journal, "tee.kbs")
    assert [e["event"].get("reason", "none") for e in events] == ["none", "unattested"]


def test_copytruncate_restarts_at_the_beginning(tmp_path) -> None:
    log = tmp_path / "as.log"
    log.write_bytes(b"one\ntwo\n")
    tailer = Tailer(log)
    assert tailer.poll() == [b"one", b"two"]
    with open(log, "r+b") as f:
        f.truncate(0)
    with open(log, "ab") as f:
        f.write(b"3\n")
    assert tailer.poll() == [b"3"]
    tailer.close()


def test_quarantined_file_event_keeps_its_hash(attestation) -> None:
    _, evidence, quarantine, journal = attestation
    drop(evidence, "cut.dat", TDX / "quote-v4-3-truncated.dat")
    assert wait_for(lambda: len(journal_events(journal, "tee.attestation")) == 1)
    [event] = journal_events(journal, "tee.attestation")
    assert event["file"]["hash"]["sha256"] == hashlib.sha256((TDX / "quote-v4-3-truncated.dat").read_bytes()).hexdigest()
    assert event["event"]["reason"] == "parse" and "quarantined" in event["message"]
    assert len(list(quarantine.iterdir())) == 1


def test_fifo_and_unreadable_evidence_get_an_event_and_do_not_block(tmp_path) -> None:
    """A FIFO present at start-up is never opened for reading (it would block the worker); it and the files after
    it each get a metric and a journal event."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    os.mkfifo(evidence / "a-fifo.dat")
    ctx, journal = make_ctx(tmp_path, attestation_evidence_dir=evidence)
    collector = AttestationCollector(ctx)
    collector.start()
    try:
        (evidence / "quote.dat").write_bytes((TDX / "quote-v4-3.dat").read_bytes())
        assert wait_for(lambda: len(journal_events(journal, "tee.attestation")) >= 2)
        assert wait_for(lambda: collector.watcher.idle.is_set())
        text = exposition(collector)
    finally:
        collector.stop()
    events = {Path(e["file"]["path"]).name: e for e in journal_events(journal, "tee.attestation")}
    assert events["a-fifo.dat"]["event"]["reason"] == "unreadable"
    assert "not a regular file" in events["a-fifo.dat"]["message"]
    assert events["quote.dat"]["event"]["outcome"] == "success"
    assert value(text, "tee_attestation_evidence_errors_total", reason="unreadable") == 1
    for event in events.values():
        jsonschema.validate(event, load_schema())


def test_trust_root_of_no_vendor_stops_the_collector_at_start_up(tmp_path) -> None:
    """The daemon turns this EvidenceError into its one-line start-up error (exporter.cli.STARTUP_ERRORS)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = forge.intel_name("Some Private CA")
    root = tmp_path / "root.pem"
    root.write_bytes(forge.pem(forge.issue(name, name, key.public_key(), key, ca=True, usage=forge.CA_USAGE)))
    ctx, _ = make_ctx(tmp_path, attestation_evidence_dir=tmp_path / "evidence", attestation_trust_roots=[root])
    with pytest.raises(EvidenceError) as err:
        AttestationCollector(ctx)
    assert "neither an AMD ARK" in str(err.value)
