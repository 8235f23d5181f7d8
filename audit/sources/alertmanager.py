"""Alertmanager webhook receiver: each fired or resolved alert becomes one audit record.

Alertmanager retries a webhook until it gets a 2xx, so the receiver answers 200 only once the records are
durably in the spool (the ship loop calls ``done``), and 503 when that does not happen in time: at-least-once
delivery from Alertmanager, and the event id (fingerprint + status + times) lets an auditor spot a repeat.

Whatever is accepted here is signed into the chain, so the endpoint is guarded like ``/metrics``: the
``--web.config.file`` (TLS, client certificates, basic auth) applies, the body is bounded, and anything that is
not an Alertmanager notification (webhook_config payload, version 4:
https://prometheus.io/docs/alerting/latest/configuration/#webhook_config) is answered 400, counted in
``tee_audit_webhook_rejected_total{reason}`` and never chained.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from common.http import Environ, Server, StartResponse
from common.webconfig import WebConfigSource
from exporter.schema import ECS_VERSION, utc_timestamp

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024
WAIT_SECONDS = 10.0
MAX_PENDING = 10_000
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
_STATUSES = ("firing", "resolved")


class PayloadError(ValueError):
    """The webhook body is not an Alertmanager notification; ``reason`` is the bounded metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _timestamp(value: str) -> str:
    """Alertmanager's RFC 3339 time normalised to the journal's UTC form; now when zero (an unset endsAt)."""
    if value.startswith("0001-"):
        return utc_timestamp()
    return utc_timestamp(dt.datetime.fromisoformat(value))


def _string_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PayloadError("not_alertmanager", f"{where}: expected an object of strings")
    return value


def _text(alert: dict[str, Any], key: str, where: str) -> str:
    value = alert.get(key)
    if not isinstance(value, str):
        raise PayloadError("not_alertmanager", f"{where}.{key}: expected a string")
    return value


def _time(alert: dict[str, Any], key: str, where: str) -> str:
    value = _text(alert, key, where)
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError("not_alertmanager", f"{where}.{key}: not an RFC 3339 time") from None
    return value


def validate(payload: Any) -> dict[str, Any]:
    """The checks that make a body an Alertmanager notification; raises PayloadError naming the first failure."""
    if not isinstance(payload, dict):
        raise PayloadError("not_alertmanager", "expected a JSON object")
    if payload.get("version") != "4":
        raise PayloadError("not_alertmanager", "version: expected \"4\" (Alertmanager webhook payload)")
    for key in ("receiver", "groupKey"):
        if not isinstance(payload.get(key), str):
            raise PayloadError("not_alertmanager", f"{key}: expected a string")
    if payload.get("status") not in _STATUSES:
        raise PayloadError("not_alertmanager", "status: expected firing or resolved")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise PayloadError("not_alertmanager", "alerts: expected a non-empty list")
    for index, alert in enumerate(alerts):
        where = f"alerts[{index}]"
        if not isinstance(alert, dict):
            raise PayloadError("not_alertmanager", f"{where}: expected an object")
        if alert.get("status") not in _STATUSES:
            raise PayloadError("not_alertmanager", f"{where}.status: expected firing or resolved")
        if "alertname" not in _string_map(alert.get("labels"), f"{where}.labels"):
            raise PayloadError("not_alertmanager", f"{where}.labels: no alertname")
        _string_map(alert.get("annotations", {}), f"{where}.annotations")
        _time(alert, "startsAt", where)
        _time(alert, "endsAt", where)
        if not _FINGERPRINT.fullmatch(_text(alert, "fingerprint", where)):
            raise PayloadError("not_alertmanager", f"{where}.fingerprint: expected 16 hex digits")
    return payload


def alert_events(payload: Any, host: str) -> list[dict[str, Any]]:
    """Pure: an Alertmanager webhook payload (parsed JSON) -> ECS audit events, one per alert."""
    events = []
    for alert in validate(payload)["alerts"]:
        status = alert["status"]
        labels, notes = alert["labels"], alert.get("annotations", {})
        stamp = _timestamp(alert["endsAt"] if status == "resolved" else alert["startsAt"])
        ident = "|".join([alert["fingerprint"], status, alert["startsAt"], alert["endsAt"],
                          json.dumps(labels, sort_keys=True)])
        event: dict[str, Any] = {
            "@timestamp": stamp, "ecs": {"version": ECS_VERSION},
            "event": {"id": hashlib.sha256(ident.encode()).hexdigest()[:32], "kind": "alert",
                      "category": ["intrusion_detection"], "type": ["info" if status == "firing" else "end"],
                      "action": f"alert-{status}", "dataset": "tee.alert", "module": "tee",
                      "reason": labels["alertname"]},
            "host": {"name": host},
            "rule": {"name": labels["alertname"]},
            "labels": labels,
            "tee": {"alert": {"status": status, "annotations": notes, "fingerprint": alert["fingerprint"],
                              "generator_url": str(alert.get("generatorURL", "")),
                              "receiver": payload["receiver"]}},
        }
        if notes.get("summary") or notes.get("description"):
            event["message"] = notes.get("summary") or notes.get("description")
        events.append(event)
    return events


class _Batch:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.durable = threading.Event()


class AlertReceiver:
    """HTTP receiver (POST any path) feeding the ship loop through ``take``/``done``/``giveback``."""

    def __init__(self, address: str, host: str, web_config_file: Path | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._queue: deque[_Batch] = deque()
        self._taken: list[_Batch] = []
        self.rejected = Counter("tee_audit_webhook_rejected", "Alertmanager webhook requests refused, by reason "
                                "(never chained).", ["reason"], registry=registry)
        for reason in ("not_json", "not_alertmanager", "method", "too_large"):
            self.rejected.labels(reason)
        self.server = Server(self._app, address, WebConfigSource(web_config_file), "tee-audit",
                             max_body_bytes=MAX_BODY)

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.shutdown()

    def submit(self, events: list[dict[str, Any]], timeout: float = WAIT_SECONDS) -> bool:
        batch = _Batch(events)
        with self._lock:
            if sum(len(b.events) for b in self._queue) >= MAX_PENDING:
                return False
            self._queue.append(batch)
        return batch.durable.wait(timeout)

    # -- ship-loop side ---------------------------------------------------------------------------------------
    def take(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            self._taken = list(self._queue)
            self._queue.clear()
        return [("alertmanager", e) for b in self._taken for e in b.events]

    def done(self, _: list[Any]) -> None:
        for batch in self._taken:
            batch.durable.set()
        self._taken = []

    def giveback(self, _: list[Any]) -> None:
        with self._lock:
            self._queue.extendleft(reversed(self._taken))
        self._taken = []

    # -- HTTP side (behind the web config) ----------------------------------------------------------------------
    def _app(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return self._refuse(start_response, environ, PayloadError("method", "only POST"), "405 Method Not Allowed")
        body = environ["wsgi.input"].read(MAX_BODY + 1)  # cheroot already answers 413 to a larger Content-Length
        if len(body) > MAX_BODY:
            return self._refuse(start_response, environ, PayloadError("too_large", "body too large"),
                                "413 Payload Too Large")
        try:
            payload = json.loads(body)
        except ValueError:
            return self._refuse(start_response, environ, PayloadError("not_json", "body is not JSON"))
        try:
            events = alert_events(payload, self.host)
        except PayloadError as exc:
            return self._refuse(start_response, environ, exc)
        if self.submit(events):
            return _reply(start_response, "200 OK", f"{len(events)} alerts recorded")
        return _reply(start_response, "503 Service Unavailable", "not yet durable, retry")

    def _refuse(self, start_response: StartResponse, environ: Environ, exc: PayloadError,
                status: str = "400 Bad Request") -> list[bytes]:
        self.rejected.labels(exc.reason).inc()
        log.warning("webhook request refused", extra={"client": environ.get("REMOTE_ADDR", ""),
                                                      "reason": exc.reason, "error": str(exc)[:200]})
        return _reply(start_response, status, f"not an Alertmanager webhook payload: {exc}"[:300])


def _reply(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
