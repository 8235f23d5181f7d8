"""Elasticsearch's own HTTPS and authentication, failing the three ways deployments do: a CA file that did not sign
the server certificate, a server certificate that has expired, a wrong password. Each gives the running shipper
one clear log line (no traceback, never the password) and a count in
``tee_audit_sink_errors_total{sink="elasticsearch",reason}``; the spool keeps every record, and once the
configuration is fixed the same records ship and verify intact, each exactly once."""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from audit.sinks.elasticsearch import EsError, connect, data_stream_name
from audit.sinks.elasticsearch import request as es_request
from tests.audit.kit import TEE_AUDIT, es_setup, keys, verify_json, write_journal
from tests.fixtures.elasticsearch import _certificates
from tests.fixtures.elasticsearch_secure import SecureEs
from tests.fixtures.prometheus import free_port

EVENTS = 40


def _wait(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _sample(url: str, name: str, **labels: str) -> float | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def _served_not_after(es: SecureEs) -> dt.datetime:
    """``notAfter`` of the certificate the node presents right now."""
    host, port = es.url.removeprefix("https://").split(":")
    pem = ssl.get_server_certificate((host, int(port)))
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc


def _expired_like(es: SecureEs) -> bytes:
    """The node's own certificate (same key, names and CA) with a validity that ended yesterday."""
    current = x509.load_pem_x509_certificate(es.http_cert.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(es.ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(es.ca_key.read_bytes(), None)
    node_key = serialization.load_pem_private_key(es.http_key.read_bytes(), None)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(current.subject).issuer_name(ca_cert.subject)
               .public_key(node_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now - dt.timedelta(days=1)))
    for ext in current.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def _install_cert(es: SecureEs, pem: bytes, expired: bool) -> None:
    tmp = es.http_cert.with_suffix(".tmp")
    tmp.write_bytes(pem)
    tmp.chmod(0o644)
    tmp.replace(es.http_cert)
    now = dt.datetime.now(dt.UTC)
    _wait(lambda: (_served_not_after(es) < now) == expired, "the node to reload its certificate", 30)


@pytest.fixture
def expired_server_certificate(elasticsearch_secure: SecureEs) -> Iterator[Callable[[], None]]:
    """Swaps in an expired server certificate; the returned callable (and teardown) puts the good one back."""
    es = elasticsearch_secure
    good = es.http_cert.read_bytes()
    _install_cert(es, _expired_like(es), expired=True)
    restored = False

    def restore() -> None:
        nonlocal restored
        if not restored:
            _install_cert(es, good, expired=False)
            restored = True

    yield restore
    restore()


def _ship(es: SecureEs, tmp: Path, namespace: str, ca_file: Path, password_file: Path, *extra: str) -> list[str]:
    key, _ = keys(tmp / "keys")
    return [*TEE_AUDIT, "ship", "--source", str(tmp / "journal.jsonl"), "--es", es.url, "--es.ca-file",
            str(ca_file), "--es.username", "shipper", "--es.password-file", str(password_file), "--es.namespace",
            namespace, "--signing-key", str(key), "--spool.dir", str(tmp / "spool"), "--chain", "h1", *extra]


def _spooled(spool: Path) -> int:
    return int(json.loads((spool / "state.json").read_text())["next_seq"])


def _issue(name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, sans: list[x509.GeneralName],
           days: tuple[int, int] = (-1, 1)) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``name`` (self-signed CA when ``issuer`` is None), valid from/to ``days`` from now."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer[0] if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + dt.timedelta(days=days[0])).not_valid_after(now + dt.timedelta(days=days[1])))
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@contextmanager
def _tls_server(tmp: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Iterator[int]:
    """A TLS server on a free port presenting ``cert`` to whoever connects (handshakes only), stopped on exit:
    later tests (the forking verifier's) need a process without stray threads."""
    (tmp / "srv.pem").write_bytes(_pem(cert) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "srv.pem")
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # shut down
            try:
                ctx.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        server.close()
        thread.join(10)


@pytest.mark.parametrize(("case", "reason"), [
    ("signed by another CA", "tls_untrusted"), ("expired", "tls_expired"), ("not yet valid", "tls_expired"),
    ("issued for another host", "tls_hostname")])
def test_each_certificate_fault_has_its_own_bounded_reason(tmp_path: Path, case: str, reason: str) -> None:
    """A real handshake against a server presenting a certificate built to fail one check and pass the others."""
    ca = _issue("trusted CA", None, [])
    signer = _issue("another CA", None, []) if case == "signed by another CA" else ca
    ip = [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
    sans = [x509.DNSName("elsewhere.example")] if case == "issued for another host" else ip
    days = {"expired": (-30, -1), "not yet valid": (1, 30)}.get(case, (-1, 1))
    cert, key = _issue("server", (signer[0].subject, signer[1]), sans, days)
    (tmp_path / "ca.pem").write_bytes(_pem(ca[0]))
    with _tls_server(tmp_path, cert, key) as port, pytest.raises(EsError) as caught:
        es_request(connect(f"https://127.0.0.1:{port}", ca_file=tmp_path / "ca.pem"), "GET", "/")
    assert (caught.value.reason, caught.value.retryable) == (reason, False)
    assert caught.value.hint


@pytest.mark.elasticsearch
@pytest.mark.parametrize(("fault", "reason", "says"), [
    ("wrong CA", "tls_untrusted", "not signed by a CA in es.ca-file"),
    ("expired server certificate", "tls_expired", "expired or not yet valid"),
    ("wrong password", "http_401", "refused the credentials"),
])
def test_tls_and_credential_faults_log_one_line_count_and_lose_nothing(
        request: pytest.FixtureRequest, tmp_path: Path, elasticsearch_secure: SecureEs, fault: str, reason: str,
        says: str) -> None:
    es, namespace = elasticsearch_secure, "f" + uuid.uuid4().hex[:10]
    es_setup(es.url, namespace, ca_file=es.ca_file, username="setup", password_file=es.password_files["setup"])
    write_journal(tmp_path / "journal.jsonl", EVENTS)
    ca_file, password_file = es.ca_file, es.password_files["shipper"]
    restore: Callable[[], None] = lambda: None  # nothing to undo but for the expired certificate
    if fault == "wrong CA":
        ca_file, _, _ = _certificates(tmp_path)  # a valid CA, just not the one that signed the node's certificate
    elif fault == "wrong password":
        password_file = tmp_path / "wrong-password"
        password_file.write_text("not-the-password\n")
    else:
        restore = request.getfixturevalue("expired_server_certificate")

    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "ship.log"
    daemon = subprocess.Popen(_ship(es, tmp_path, namespace, ca_file, password_file, "--web.listen-address",
                                    f"127.0.0.1:{port}", "--checkpoint.every-seconds", "0.2"),
                              stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        _wait(lambda: (_sample(metrics, "tee_audit_sink_errors_total", sink="elasticsearch", reason=reason) or 0) >= 1,
              f"a sink error with reason {reason}")
        _wait(lambda: _spooled(tmp_path / "spool") == EVENTS, "every record in the spool")
        assert daemon.poll() is None  # neither fatal nor a crash: the daemon keeps spooling
        assert _sample(metrics, "tee_audit_records_shipped_total", sink="elasticsearch") == 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    text = log.read_text()
    problems = [line for line in text.splitlines() if "level=error" in line or "level=warning" in line]
    assert len(problems) == 1, problems
    assert f"reason={reason}" in problems[0] and says in problems[0]
    assert "Traceback" not in text
    assert es.password("shipper") not in text and "not-the-password" not in text

    restore()
    fixed = subprocess.run(_ship(es, tmp_path, namespace, es.ca_file, es.password_files["shipper"], "--once"),
                           capture_output=True, text=True, timeout=120, check=False)
    assert fixed.returncode == 0, fixed.stderr
    stream = data_stream_name(namespace)
    code, report = verify_json("--es", es.url, "--es.ca-file", str(es.ca_file), "--es.username", "auditor",
                               "--es.password-file", str(es.password_files["auditor"]), "--data-stream", stream,
                               "--public-key", str(tmp_path / "keys" / "audit.pub"))
    assert (code, report["records"], report["findings"]) == (0, EVENTS, []), report
    admin = connect(es.url, ca_file=es.ca_file, username="admin", password_file=es.password_files["admin"])
    es_request(admin, "POST", f"/{stream}/_refresh")
    count = es_request(admin, "POST", f"/{stream}/_count", {"query": {"exists": {"field": "chain.seq"}}})["count"]
    assert count == EVENTS
