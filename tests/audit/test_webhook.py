"""The Alertmanager webhook over real sockets: web config (TLS, basic auth), body bound, payload validation.

Whatever the receiver accepts is signed into the audit chain, so each refusal is tested with a request that would
pass every other check.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
from prometheus_client import CollectorRegistry

from audit.sources.alertmanager import MAX_BODY, AlertReceiver
from tests.exporter.test_web import make_cert

ALERT = {"status": "firing", "labels": {"alertname": "TEEAttestationFailures", "severity": "critical"},
         "annotations": {"summary": "attestation failing"}, "startsAt": "2026-11-28T10:00:00.000Z",
         "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph", "fingerprint": "0123456789abcdef"}
PAYLOAD = {"version": "4", "groupKey": "{}:{alertname=\"TEEAttestationFailures\"}", "truncatedAlerts": 0,
           "status": "firing", "receiver": "tee-audit", "groupLabels": {}, "commonLabels": {},
           "commonAnnotations": {}, "externalURL": "http://alertmanager", "alerts": [ALERT]}


class Receiver:
    def __init__(self, receiver: AlertReceiver, registry: CollectorRegistry, base: str, verify: str | bool):
        self.receiver, self.registry, self.base, self.verify = receiver, registry, base, verify
        self.chained: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._ship, daemon=True)
        self._loop.start()

    def _ship(self) -> None:  # the ship loop's side: take what arrived, make it "durable", acknowledge
        while not self._stop.wait(0.02):
            taken = self.receiver.take()
            self.chained.extend(event for _, event in taken)
            self.receiver.done(taken)

    def post(self, body: Any, auth: tuple[str, str] | None = ("alertmanager", "hunter2"), raw: bytes | None = None,
             ) -> requests.Response:
        data = raw if raw is not None else json.dumps(body).encode()
        return requests.post(f"{self.base}/alerts", data=data, auth=auth, verify=self.verify, timeout=15,
                             headers={"Content-Type": "application/json"})

    def rejected(self, reason: str) -> float:
        return self.registry.get_sample_value("tee_audit_webhook_rejected_total", {"reason": reason}) or 0.0

    def close(self) -> None:
        self._stop.set()
        self._loop.join()
        self.receiver.stop()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    make_cert(tmp_path)
    hashed = bcrypt.hashpw(b"hunter2", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
                   f"basic_auth_users:\n  alertmanager: '{hashed}'\n")
    registry = CollectorRegistry()
    am = AlertReceiver("127.0.0.1:0", "host-1", web, registry)
    am.start()
    r = Receiver(am, registry, f"https://localhost:{am.port}", str(tmp_path / "tls.crt"))
    yield r
    r.close()


def test_authenticated_alertmanager_payload_is_chained(receiver: Receiver) -> None:
    response = receiver.post(PAYLOAD)
    assert response.status_code == 200, response.text
    assert [e["event"]["action"] for e in receiver.chained] == ["alert-firing"]
    assert receiver.chained[0]["rule"]["name"] == "TEEAttestationFailures"


@pytest.mark.parametrize("auth", [None, ("alertmanager", "wrong"), ("mallory", "hunter2")])
def test_unauthenticated_post_is_refused_and_not_chained(receiver: Receiver, auth: tuple[str, str] | None) -> None:
    assert receiver.post(PAYLOAD, auth=auth).status_code == 401
    assert receiver.chained == []


def test_plain_http_post_is_refused(receiver: Receiver) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(receiver.base.replace("https", "http") + "/alerts", json=PAYLOAD, timeout=10)
    assert receiver.chained == []


def _forged(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    payload = copy.deepcopy(PAYLOAD)
    target: Any = payload
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return payload


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "message"), [
    (("version",), "3", "version"),
    (("version",), _DELETE, "version"),
    (("receiver",), 7, "receiver"),
    (("groupKey",), _DELETE, "groupKey"),
    (("status",), "pending", "status"),
    (("alerts",), [], "alerts"),
    (("alerts",), {"0": ALERT}, "alerts"),
    (("alerts", 0), "firing", "alerts[0]"),
    (("alerts", 0, "status"), "bogus", "alerts[0].status"),
    (("alerts", 0, "labels"), {"severity": "critical"}, "no alertname"),
    (("alerts", 0, "labels"), {"alertname": ["x"]}, "alerts[0].labels"),
    (("alerts", 0, "annotations"), {"summary": {"nested": 1}}, "alerts[0].annotations"),
    (("alerts", 0, "startsAt"), "yesterday", "startsAt"),
    (("alerts", 0, "endsAt"), _DELETE, "endsAt"),
    (("alerts", 0, "fingerprint"), "not-a-fingerprint", "fingerprint"),
])
def test_forged_payload_is_refused_counted_and_not_chained(receiver: Receiver, path: tuple[Any, ...], value: Any,
                                                          message: str) -> None:
    response = receiver.post(_forged(path, value))
    assert response.status_code == 400 and message in response.text
    assert receiver.rejected("not_alertmanager") == 1
    assert receiver.chained == []


def test_non_json_body_is_refused(receiver: Receiver) -> None:
    assert receiver.post(None, raw=b"alertname=x").status_code == 400
    assert receiver.rejected("not_json") == 1 and receiver.chained == []


def test_oversized_body_is_refused_before_it_is_read(receiver: Receiver) -> None:
    assert isinstance(receiver.verify, str)
    conn = http.client.HTTPSConnection("localhost", int(receiver.base.rsplit(":", 1)[1]), timeout=10,
                                       context=ssl.create_default_context(cafile=receiver.verify))
    conn.putrequest("POST", "/alerts")
    conn.putheader("Authorization", "Basic " + base64.b64encode(b"alertmanager:hunter2").decode())
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()  # the body is never sent: the bound is enforced on the declared length
    assert conn.getresponse().status == 413
    conn.close()
    assert receiver.chained == []


def test_get_is_refused(receiver: Receiver) -> None:
    response = requests.get(f"{receiver.base}/alerts", auth=("alertmanager", "hunter2"), verify=receiver.verify,
                            timeout=10)
    assert response.status_code == 405 and receiver.rejected("method") == 1


def test_webhook_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket
    import subprocess

    from tests.audit.kit import TEE_AUDIT

    subprocess.run([*TEE_AUDIT, "keygen", "--out", str(tmp_path / "k")], check=True, capture_output=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*TEE_AUDIT, "ship", "--store", str(tmp_path / "store"), "--signing-key",
                                 str(tmp_path / "k" / "audit.key"), "--source", str(tmp_path / "j.jsonl"),
                                 "--web.listen-address", "127.0.0.1:0",
                                 "--alertmanager.listen-address", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"Error: cannot listen on 127.0.0.1:{port}: " in result.stderr
