"""Alertmanager webhook receiver: each fired or resolved alert becomes one audit record.

Alertmanager retries a webhook until it gets a 2xx, so the receiver answers 200 only once the records are
durably in the spool (the ship loop calls ``done``), and 503 when that does not happen in time: at-least-once
delivery from Alertmanager, and the event id (fingerprint + status + times) lets an auditor spot a repeat.
Payload format: https://prometheus.io/docs/alerting/latest/configuration/#webhook_config (version 4).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter.journal import ECS_VERSION, utc_timestamp
from exporter.server import parse_listen_address

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024
WAIT_SECONDS = 10.0
MAX_PENDING = 10_000


class PayloadError(ValueError):
    """The webhook body is not an Alertmanager notification."""


def _timestamp(value: Any) -> str:
    """Alertmanager's RFC 3339 time normalised to the journal's UTC form; now when absent or zero."""
    import datetime as dt

    if isinstance(value, str) and not value.startswith("0001-"):
        try:
            return utc_timestamp(dt.datetime.fromisoformat(value))
        except ValueError:
            pass
    return utc_timestamp()


def alert_events(payload: Any, host: str) -> list[dict[str, Any]]:
    """Pure: an Alertmanager webhook payload (parsed JSON) -> ECS audit events, one per alert."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise PayloadError("expected an Alertmanager webhook payload with an 'alerts' list")
    events = []
    for alert in payload["alerts"]:
        if not isinstance(alert, dict):
            raise PayloadError("an alert is not an object")
        status = "resolved" if alert.get("status") == "resolved" else "firing"
        labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
        notes = {str(k): str(v) for k, v in (alert.get("annotations") or {}).items()}
        stamp = _timestamp(alert.get("endsAt") if status == "resolved" else alert.get("startsAt"))
        ident = "|".join([str(alert.get("fingerprint", "")), status, str(alert.get("startsAt", "")),
                          str(alert.get("endsAt", "")), json.dumps(labels, sort_keys=True)])
        event: dict[str, Any] = {
            "@timestamp": stamp, "ecs": {"version": ECS_VERSION},
            "event": {"id": hashlib.sha256(ident.encode()).hexdigest()[:32], "kind": "alert",
                      "category": ["intrusion_detection"], "type": ["info" if status == "firing" else "end"],
                      "action": f"alert-{status}", "dataset": "tee.alert", "module": "tee",
                      "reason": labels.get("alertname", "")},
            "host": {"name": host},
            "rule": {"name": labels.get("alertname", "")},
            "labels": labels,
            "tee": {"alert": {"status": status, "annotations": notes, "fingerprint": str(alert.get("fingerprint", "")),
                              "generator_url": str(alert.get("generatorURL", "")),
                              "receiver": str(payload.get("receiver", ""))}},
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

    def __init__(self, address: str, host: str) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._queue: deque[_Batch] = deque()
        self._taken: list[_Batch] = []
        self.httpd = ThreadingHTTPServer(parse_listen_address(address), self._handler())
        self.httpd.daemon_threads = True

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, name="alertmanager", daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

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

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "tee-audit"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length <= 0 or length > MAX_BODY:
                    self._reply(413 if length > MAX_BODY else 400, "bad body length")
                    return
                try:
                    events = alert_events(json.loads(self.rfile.read(length)), receiver.host)
                except (ValueError, PayloadError) as exc:
                    log.warning("bad Alertmanager webhook body", extra={"client": self.client_address[0],
                                                                         "error": str(exc)[:200]})
                    self._reply(400, "not an Alertmanager webhook payload")
                    return
                if receiver.submit(events):
                    self._reply(200, f"{len(events)} alerts recorded")
                else:
                    self._reply(503, "not yet durable, retry")

            def _reply(self, code: int, text: str) -> None:
                body = (text + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("webhook request", extra={"request": format % args})

        return Handler
