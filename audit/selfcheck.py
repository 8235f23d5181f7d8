"""Periodic self-verification: re-read what each sink holds and publish ``tee_audit_chain_intact{chain,sink}``.

Runs in its own thread with its own connections (the ship loop is never blocked by it); a verification that
cannot run, for whatever reason, leaves the gauge unchanged, logs why and counts ``tee_audit_selfcheck_errors_total``
(the thread itself never dies); ``tee_audit_selfcheck_last_run_timestamp_seconds`` says when a verdict was last
reached, so an alert sees a self-check that has stopped reaching verdicts.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from audit.config import ShipSettings
from audit.telemetry import Telemetry
from audit.verify import Report, VerifyError

log = logging.getLogger(__name__)


def verify_sink(s: ShipSettings, sink: str, key: Any) -> Report:
    from audit import verify_cli

    if sink == "localstore":
        assert s.store is not None
        return verify_cli.verify_store(s.store, s.chain, key, None)
    from audit.sinks.elasticsearch import data_stream_name

    conn = verify_cli.EsOptions(s.es, data_stream_name(s.es_namespace), s.es_ca_file, s.es_api_key_file,
                                s.es_username, s.es_password_file)
    return verify_cli.verify_es(conn, s.chain, key, None)


class SelfCheck:
    def __init__(self, s: ShipSettings, key: Any, metrics: Telemetry) -> None:
        self.s, self.key, self.metrics = s, key, metrics
        self.sinks = [name for name, on in (("localstore", s.store), ("elasticsearch", s.es)) if on]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="selfcheck", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> None:
        for sink in self.sinks:
            try:
                report = verify_sink(self.s, sink, self.key)
            except (VerifyError, OSError) as exc:
                self.metrics.selfcheck_errors.labels(sink).inc()
                log.warning("self-verification could not run", extra={"sink": sink, "error": str(exc)})
                continue
            except Exception as exc:  # noqa: BLE001 - whatever the stored data does, the thread must live on
                # and say so: a frozen tee_audit_chain_intact would hide tampering. TEEAuditSelfCheckFailing.
                self.metrics.selfcheck_errors.labels(sink).inc()
                log.error("self-verification failed unexpectedly; tee_audit_chain_intact is not current",
                          extra={"sink": sink, "error": f"{type(exc).__name__}: {exc}"[:500]})
                continue
            self.metrics.selfcheck_last_run.labels(sink).set_to_current_time()
            self.metrics.intact.labels(self.s.chain, sink).set(1 if report.intact else 0)
            if not report.intact:
                first = report.findings[0]
                log.error("self-verification found the chain NOT intact", extra={
                    "sink": sink, "findings": len(report.findings), "first_kind": first.kind,
                    "first_seq": first.seq})

    def _run(self) -> None:
        while not self._stop.wait(self.s.verify_every_seconds):
            self.run_once()
