"""Attestation collector: evidence files verified from a watched directory, and attestation-service log results.

Each attempt (a file verified, or a verdict line in an attestation-service log) updates the counters below and
writes one journal event (dataset ``tee.attestation``). Unparseable evidence files are moved to the quarantine
directory and counted in ``tee_attestation_evidence_errors_total{reason}``. With neither an evidence directory nor
attestation log paths configured, the collector does nothing and exposes no series.

Metrics: ``tee_attestation_attempts_total{tee_type,outcome,reason}``, ``tee_attestation_duration_seconds{tee_type}``,
``tee_attestation_last_success_timestamp_seconds{tee_type}``, ``tee_attestation_reported_tcb{tee_type,component}``,
``tee_policy_violations_total{tee_type,rule}``, ``tee_attestation_evidence_errors_total{reason}``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

from exporter.attest.collateral import load_dir
from exporter.attest.errors import PARSE_REASONS
from exporter.attest.evidence import Attester, Outcome, certs_beside
from exporter.attest.policy import load_policy
from exporter.attest.trust import TrustStore
from exporter.attest.watch import EvidenceWatcher
from exporter.collectors.base import Collector, CollectorContext
from exporter.logs.follow import LogFollower, shared_unparsed, state_file_for
from exporter.logs.trustee import AttestationResult, LogLineError, parse_as_line

log = logging.getLogger(__name__)

DATASET = "tee.attestation"
SOURCE = "attestation_service"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AttestationStats:
    """prometheus_client metrics (thread-safe), not registered anywhere: ``collect`` hands their families over."""

    def __init__(self) -> None:
        self.attempts = Counter("tee_attestation_attempts", "Attestation attempts by TEE type, outcome and reason "
                                "(evidence files and attestation-service results).",
                                ["tee_type", "outcome", "reason"], registry=None)
        self.duration = Histogram("tee_attestation_duration_seconds",
                                  "Time to verify one evidence file (parse, chain, signatures, policy).",
                                  ["tee_type"], buckets=BUCKETS, registry=None)
        self.last_success = Gauge("tee_attestation_last_success_timestamp_seconds",
                                  "Unix time of the last successful attestation.", ["tee_type"], registry=None)
        self.tcb = Gauge("tee_attestation_reported_tcb", "TCB component version (SVN) of the latest verified "
                         "evidence.", ["tee_type", "component"], registry=None)
        self.violations = Counter("tee_policy_violations", "Verified evidence breaking a policy rule.",
                                  ["tee_type", "rule"], registry=None)
        self.evidence_errors = Counter("tee_attestation_evidence_errors",
                                       "Evidence files that could not be parsed or read (quarantined).", ["reason"],
                                       registry=None)

    def families(self) -> Iterable[Metric]:
        for metric in (self.attempts, self.duration, self.last_success, self.tcb, self.violations,
                       self.evidence_errors):
            yield from metric.collect()


class AttestationCollector(Collector):
    name = "attestation"

    def __init__(self, ctx: CollectorContext) -> None:
        s = ctx.settings
        self.journal = ctx.journal
        self.stats = AttestationStats()
        self.evidence_dir: Path | None = s.attestation_evidence_dir
        self.quarantine_dir: Path | None = s.attestation_quarantine_dir
        self.unparsed = shared_unparsed(ctx.shared, self.name)
        self.attester: Attester | None = None
        self.watcher: EvidenceWatcher | None = None
        if self.evidence_dir is not None:
            # Policy, collateral and extra roots are read now so a bad file is a start-up error naming it.
            policy = load_policy(s.attestation_policy_file) if s.attestation_policy_file else None
            collateral = load_dir(s.attestation_collateral_dir) if s.attestation_collateral_dir else None
            self.attester = Attester(TrustStore.default(s.attestation_trust_roots),
                                     policy.attestation if policy else None, collateral)
            self.watcher = EvidenceWatcher(self.evidence_dir, self.process_evidence, self._unreadable)
        self.follower = LogFollower("attestation-service", s.attestation_log_paths, self.handle_log_line,
                                    state_file_for(s.journal_path, "attestation-service"))
        if s.attestation_log_paths:
            self.unparsed.register(SOURCE)

    @property
    def configured(self) -> bool:
        return self.watcher is not None or bool(self.follower.tailers)

    def start(self) -> None:
        if self.watcher is not None:
            self.watcher.start()
        self.follower.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.follower.stop()

    # --- evidence files -------------------------------------------------------------------------------------

    def process_evidence(self, path: Path, data: bytes) -> Outcome:
        assert self.attester is not None
        start = time.perf_counter()
        outcome = self.attester.check(data, at=dt.datetime.now(dt.UTC), certs_dir=certs_beside(path))
        seconds = time.perf_counter() - start
        moved_to = None
        if outcome.error is not None and outcome.error.reason in PARSE_REASONS:
            moved_to = self._quarantine(path, outcome.error.reason, str(outcome.error))
        self._record(outcome, seconds)
        self.journal.append(self._evidence_event(path, hashlib.sha256(data).hexdigest(), outcome, seconds,
                                                 moved_to))
        return outcome

    def _record(self, outcome: Outcome, seconds: float) -> None:
        stats = self.stats
        stats.attempts.labels(outcome.tee_type, "success" if outcome.ok else "failure", outcome.reason).inc()
        stats.duration.labels(outcome.tee_type).observe(seconds)
        for violation in outcome.violations:
            stats.violations.labels(outcome.tee_type, violation.rule).inc()
        if outcome.verified is not None:
            for component, svn in outcome.verified.tcb.items():
                stats.tcb.labels(outcome.tee_type, component).set(svn)
        if outcome.ok:
            stats.last_success.labels(outcome.tee_type).set_to_current_time()

    def _quarantine(self, path: Path, reason: str, message: str) -> Path | None:
        self.stats.evidence_errors.labels(reason).inc()
        target = None
        if self.quarantine_dir is not None:
            try:
                self.quarantine_dir.mkdir(parents=True, exist_ok=True)
                target = self.quarantine_dir / f"{int(time.time())}-{path.name}"
                shutil.move(str(path), target)
            except OSError as exc:
                log.error("cannot quarantine evidence", extra={"file": str(path), "error": exc.strerror})
                target = None
        what = "evidence unparseable, quarantined" if target else "evidence unparseable, left in place (no quarantine dir)"
        log.warning(what, extra={"file": str(path), "offset": 0, "reason": reason, "detail": message,
                                 "moved_to": str(target or "")})
        return target

    def _unreadable(self, path: Path, exc: OSError) -> None:
        self.stats.evidence_errors.labels("unreadable").inc()
        detail = exc.strerror or str(exc)
        log.warning("evidence unreadable", extra={"file": str(path), "error": detail})
        self.journal.append(self.journal.event(  # every file the watcher sees gets a journal event, this one too
            action="attestation-evidence", category=["authentication"], type=["info", "denied"], dataset=DATASET,
            outcome="failure", reason="unreadable", message=f"evidence {path.name} unreadable: {detail}",
            tee={"type": "unknown", "policy": {"result": "not_evaluated"}, "attestation": {"source": "evidence"}},
            extra={"file": {"path": str(path)}}))

    def _evidence_event(self, path: Path, sha256: str, outcome: Outcome, seconds: float,
                        moved_to: Path | None) -> dict[str, Any]:
        tee: dict[str, Any] = {"type": outcome.tee_type,
                               "policy": {"result": outcome.policy_result,
                                          "violations": [v.rule for v in outcome.violations]},
                               "attestation": {"source": "evidence"}}
        v = outcome.verified
        if v is not None:
            tee["evidence"] = {"sha256": v.sha256, "format": v.evidence_format, "version": v.version}
            tee["measurement"] = v.measurement
            tee["tcb"] = {**v.tcb, **({"status": v.tcb_status} if v.tcb_status else {})}
            tee["attestation"].update(signer=v.signer, product=v.product or "", warnings=list(v.warnings))
        if outcome.ok:
            message = f"{outcome.tee_type} evidence {path.name} verified and within policy"
        elif outcome.error is not None:
            message = f"evidence {path.name} rejected: {outcome.error}"
            if moved_to is not None:
                message += f" (quarantined as {moved_to})"
        else:
            message = f"{outcome.tee_type} evidence {path.name} verified but out of policy: " + \
                "; ".join(f"{x.rule}: {x.message}" for x in outcome.violations)
        event = self.journal.event(
            action="attestation-evidence", category=["authentication"],
            type=["info", "allowed" if outcome.ok else "denied"], dataset=DATASET,
            outcome="success" if outcome.ok else "failure",
            reason=None if outcome.ok else outcome.reason, message=message, tee=tee,
            extra={"file": {"path": str(path), "hash": {"sha256": sha256}}},
        )
        event["event"]["duration"] = int(seconds * 1e9)
        return event

    # --- attestation-service logs ---------------------------------------------------------------------------

    def handle_log_line(self, path: Path, line: bytes) -> AttestationResult | None:
        try:
            result = parse_as_line(line)
        except LogLineError:
            self.unparsed.inc(SOURCE)
            return None
        if result is None:
            return None
        ok = result.outcome == "success"
        self.stats.attempts.labels(result.tee_type, result.outcome, result.reason).inc()
        if ok:
            self.stats.last_success.labels(result.tee_type).set_to_current_time()
        self.journal.append(self.journal.event(
            action="attestation-service-result", category=["authentication"],
            type=["info", "allowed" if ok else "denied"], dataset=DATASET, outcome=result.outcome,
            reason=None if ok else result.reason, message=result.message,
            tee={"type": result.tee_type if result.tee_type in _SCHEMA_TEE_TYPES else "unknown",
                 "policy": {"result": "not_evaluated"},
                 "attestation": {"source": SOURCE}},
            extra={"log": {"file": {"path": str(path)}}},
            timestamp=result.timestamp,
        ))
        return result

    # --- scrape ---------------------------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        if self.configured:
            yield from self.stats.families()
        if self.unparsed.owner == self.name:
            family = self.unparsed.family()
            if family is not None:
                yield family


_SCHEMA_TEE_TYPES = {"none", "sev", "sev-es", "sev-snp", "tdx", "unknown"}


def build(ctx: CollectorContext) -> Collector:
    return AttestationCollector(ctx)

