"""Serving over real sockets: the exporter-toolkit web config (TLS, bcrypt basic auth) re-read while running,
handshakes off the accepting thread, bounded concurrency, HTTP/1.1 details, listen addresses."""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import logging
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from common import http as common_http
from common import webconfig
from common.http import MetricsServer, ServeError, parse_listen_address
from common.settings import ConfigError

Serve = Callable[..., MetricsServer]


def make_cert(directory: Path, stem: str = "tls", cn: str = "localhost",
              issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None) -> tuple[Path, Path]:
    """A certificate for ``cn`` (self-signed CA when ``issuer`` is None), written as ``<stem>.crt``/``.key``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    issuer_name, signer = (name, key) if issuer is None else (issuer[0].subject, issuer[1])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
            .sign(signer, hashes.SHA256()))
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def load_cert(path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    key = serialization.load_pem_private_key(path.with_suffix(".key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


class One:
    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("tee_test_value", "x", value=42)


class Many:
    """A ~2 MB exposition, as 5,000 domains make."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("tee_test_big", "x", labels=["domain"])
        for i in range(40_000):
            family.add_metric([f"domain-{i:06d}-with-a-longish-name"], i)
        yield family


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[MetricsServer] = []

    def start(path: Path | None = None, address: str = "127.0.0.1:0", collector: object = None,
              **kwargs: object) -> MetricsServer:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector or One())
        server = MetricsServer(registry, address, "/metrics", webconfig.WebConfigSource(path), **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


def url(server: MetricsServer, path: str = "/metrics") -> str:
    return f"{server.scheme}://localhost:{server.port}{path}"


def bcrypt_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def write_config(tmp_path: Path, password: str = "s3cret", tls: str = "") -> Path:
    if not (tmp_path / "tls.crt").exists():
        make_cert(tmp_path)
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n{tls}"
                    f"basic_auth_users:\n  prom: '{bcrypt_hash(password)}'\n")
    return path


def test_tls_and_basic_auth(tmp_path: Path, serve: Serve) -> None:
    server = serve(write_config(tmp_path))
    ca = str(tmp_path / "tls.crt")
    assert server.scheme == "https"
    ok = requests.get(url(server), auth=("prom", "s3cret"), verify=ca, timeout=10)
    assert ok.status_code == 200 and "tee_test_value 42.0" in ok.text
    assert requests.get(url(server), auth=("prom", "wrong"), verify=ca, timeout=10).status_code == 401
    assert requests.get(url(server), auth=("nobody", "s3cret"), verify=ca, timeout=10).status_code == 401
    missing = requests.get(url(server), verify=ca, timeout=10)
    assert missing.status_code == 401 and "Basic" in missing.headers["WWW-Authenticate"]
    # the cached success must not let a different password through afterwards
    assert requests.get(url(server), auth=("prom", "s3cret2"), verify=ca, timeout=10).status_code == 401


def test_revoked_password_is_refused_on_the_next_request(tmp_path: Path, serve: Serve) -> None:
    path = write_config(tmp_path, "old-password")
    server = serve(path)
    ca = str(tmp_path / "tls.crt")
    with requests.Session() as session:  # one kept-alive connection: the revocation applies to it too
        assert session.get(url(server), auth=("prom", "old-password"), verify=ca, timeout=10).status_code == 200
        path.write_text(path.read_text().split("basic_auth_users")[0]
                        + f"basic_auth_users:\n  prom: '{bcrypt_hash('new-password')}'\n")
        assert session.get(url(server), auth=("prom", "old-password"), verify=ca, timeout=10).status_code == 401
        assert session.get(url(server), auth=("prom", "new-password"), verify=ca, timeout=10).status_code == 200


def test_rotated_certificate_is_served_to_the_next_client(tmp_path: Path, serve: Serve) -> None:
    path = write_config(tmp_path)
    server = serve(path)
    first = ssl.get_server_certificate(("127.0.0.1", server.port))
    rotated = tmp_path / "rotated"
    rotated.mkdir()
    make_cert(rotated)
    for suffix in ("crt", "key"):  # what cert-manager does: new files replace the old ones
        (rotated / f"tls.{suffix}").replace(tmp_path / f"tls.{suffix}")
    second = ssl.get_server_certificate(("127.0.0.1", server.port))
    assert first != second
    assert second == (tmp_path / "tls.crt").read_text()
    assert requests.get(url(server), auth=("prom", "s3cret"), verify=str(tmp_path / "tls.crt"),
                        timeout=10).status_code == 200


def test_web_config_broken_while_running_fails_closed(tmp_path: Path, serve: Serve) -> None:
    path = write_config(tmp_path)
    server = serve(path)
    ca = str(tmp_path / "tls.crt")
    with requests.Session() as session:
        assert session.get(url(server), auth=("prom", "s3cret"), verify=ca, timeout=10).status_code == 200
        path.write_text(path.read_text() + "basic_auth_users_typo: {}\n")
        # not the old settings (which may hold a revoked password): refuse until the file is fixed
        assert session.get(url(server), auth=("prom", "s3cret"), verify=ca, timeout=10).status_code == 500


def test_idle_tls_client_does_not_block_others(tmp_path: Path, serve: Serve) -> None:
    server = serve(write_config(tmp_path))
    ca = str(tmp_path / "tls.crt")
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]  # connect, send nothing
    try:
        start = time.monotonic()
        for path in ("/metrics", "/healthz"):
            assert requests.get(url(server, path), auth=("prom", "s3cret"), verify=ca, timeout=5).ok
        assert time.monotonic() - start < 1.0
    finally:
        for sock in idle:
            sock.close()


def test_half_handshake_client_does_not_block_others(tmp_path: Path, serve: Serve) -> None:
    """A client that sends a few bytes of a ClientHello and stops holds one worker, not the server."""
    server = serve(write_config(tmp_path))
    ca = str(tmp_path / "tls.crt")
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
    try:
        for sock in stalled:
            sock.sendall(b"\x16\x03\x01\x02\x00")  # a TLS record header announcing 512 bytes that never come
        start = time.monotonic()
        assert requests.get(url(server), auth=("prom", "s3cret"), verify=ca, timeout=5).ok
        assert time.monotonic() - start < 1.0
    finally:
        for sock in stalled:
            sock.close()


def test_failed_handshake_is_logged(tmp_path: Path, serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = serve(write_config(tmp_path))
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url(server), timeout=10)  # the self-signed server certificate is not trusted: client aborts
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("TLS handshake failed" in r.message for r in caplog.records):
        time.sleep(0.05)
    assert next(r for r in caplog.records if r.message == "TLS handshake failed").client == "127.0.0.1"


def test_plain_http_is_refused_by_a_tls_listener(tmp_path: Path, serve: Serve) -> None:
    server = serve(write_config(tmp_path))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url(server).replace("https://", "http://"), timeout=10)


def client_ca_config(tmp_path: Path, auth: str) -> tuple[Path, Path]:
    """A server config with ``client_auth_type: auth`` trusting a client CA; returns (config, client cert)."""
    make_cert(tmp_path)
    ca_cert, _ = make_cert(tmp_path, "client-ca", "client CA")
    client_cert, _ = make_cert(tmp_path, "client", "prometheus", issuer=load_cert(ca_cert))
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
                    f"  client_auth_type: {auth}\n  client_ca_file: client-ca.crt\n")
    return path, client_cert


@pytest.mark.parametrize("auth", ["RequireAndVerifyClientCert", "RequireAnyClientCert"])
def test_client_certificate_required(tmp_path: Path, serve: Serve, auth: str) -> None:
    path, client = client_ca_config(tmp_path, auth)
    server = serve(path)
    ca = str(tmp_path / "tls.crt")
    assert requests.get(url(server), verify=ca, cert=(str(client), str(client.with_suffix(".key"))),
                        timeout=10).status_code == 200
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(url(server), verify=ca, timeout=10)
    # a certificate the client CA did not sign, built so that it is otherwise valid
    stranger, _ = make_cert(tmp_path, "stranger", "prometheus")
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(url(server), verify=ca, cert=(str(stranger), str(stranger.with_suffix(".key"))), timeout=10)


def test_verify_client_cert_if_given_admits_clients_without_one(tmp_path: Path, serve: Serve) -> None:
    path, _ = client_ca_config(tmp_path, "VerifyClientCertIfGiven")
    server = serve(path)
    assert requests.get(url(server), verify=str(tmp_path / "tls.crt"), timeout=10).status_code == 200


def test_endpoints_without_web_config(serve: Serve) -> None:
    server = serve()
    health = requests.get(url(server, "/healthz"), timeout=10)
    assert health.text == "ok\n"
    assert "python" not in health.headers["Server"].lower() and health.headers["Server"] == "tee-exporter"
    assert 'href="/metrics"' in requests.get(url(server, "/"), timeout=10).text
    assert requests.get(url(server, "/nope"), timeout=10).status_code == 404


def test_head_keepalive_and_gzip(serve: Serve) -> None:
    server = serve(collector=Many())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200 and response.getheader("Content-Encoding") == "gzip"
    plain = gzip.decompress(body)
    assert len(plain) > 2_000_000 and len(body) < len(plain) / 5
    sock = conn.sock
    conn.request("HEAD", "/metrics")  # the same connection: HTTP/1.1 keep-alive
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b"" and conn.sock is sock
    conn.close()


class Gated:
    """A collector that waits for ``gate`` and counts its collections."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.calls += 1
        self.gate.wait(10)
        yield GaugeMetricFamily("tee_test_slow", "x", value=1)


def get_in_background(target: str, results: list[int]) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(requests.get(target, timeout=20).status_code))
    thread.start()
    return thread


def test_beyond_max_requests_answers_503(serve: Serve) -> None:
    slow = Gated()
    server = serve(collector=slow, max_requests=2)
    results: list[int] = []
    threads = [get_in_background(url(server, f"/metrics?n={i}"), results) for i in range(2)]  # distinct scrapes
    assert wait_until(lambda: slow.calls == 2)  # both slots taken
    assert requests.get(url(server, "/metrics?n=3"), timeout=10).status_code == 503
    assert requests.get(url(server, "/healthz"), timeout=10).status_code == 200  # health is not a scrape
    slow.gate.set()
    for thread in threads:
        thread.join()
    assert results == [200, 200]


class _CountedEvent(threading.Event):
    """An Event that counts the threads that began waiting on it."""

    waiting = 0

    def wait(self, timeout: float | None = None) -> bool:
        type(self).waiting += 1
        return super().wait(timeout)


def test_simultaneous_identical_scrapes_share_one_collection(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    # scrapes that join a running collection wait on its Event: count them instead of sleeping until they arrive
    monkeypatch.setattr(_CountedEvent, "waiting", 0)
    flight = common_http._Flight
    monkeypatch.setattr(common_http, "_Flight", lambda: flight(done=_CountedEvent()))
    slow = Gated()
    server = serve(collector=slow, max_requests=1)
    results: list[int] = []
    first = get_in_background(url(server), results)
    assert wait_until(lambda: slow.calls == 1)
    # would be 503 with one slot if not shared (3: the pool has max_requests + 4 workers, and waiters hold one)
    others = [get_in_background(url(server), results) for _ in range(3)]
    assert wait_until(lambda: _CountedEvent.waiting == 3)
    slow.gate.set()
    for thread in (first, *others):
        thread.join()
    assert results == [200] * 4 and slow.calls == 1
    assert requests.get(url(server), timeout=10).status_code == 200 and slow.calls == 2  # later: a fresh one


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# Run in a separate process so that 300 client threads do not compete with the server for this process's GIL.
LOAD = """
import http.client, sys, threading
port, n = int(sys.argv[1]), int(sys.argv[2])
barrier = threading.Barrier(n)
codes = []
def client():
    barrier.wait()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        response.read()
        codes.append(response.status)
    except OSError:
        codes.append(0)
threads = [threading.Thread(target=client) for _ in range(n)]
for t in threads: t.start()
print("started", flush=True)
for t in threads: t.join()
print(" ".join(map(str, codes)), flush=True)
"""


def test_300_concurrent_clients_bounded_threads(serve: Serve) -> None:
    server = serve()
    before = threading.active_count()
    load = subprocess.Popen([sys.executable, "-c", LOAD, str(server.port), "300"], stdout=subprocess.PIPE, text=True)
    assert load.stdout is not None
    assert load.stdout.readline().strip() == "started"
    start = time.monotonic()
    response = requests.get(url(server), timeout=5)
    latency = time.monotonic() - start
    threads_under_load = threading.active_count()
    codes = [int(c) for c in load.stdout.readline().split()]
    load.wait(30)
    assert response.status_code == 200 and latency < 1.0
    assert threads_under_load <= before + 2  # the server's own pool did not grow with the load
    assert len(codes) == 300 and set(codes) <= {200, 503} and codes.count(200) > 0


@pytest.mark.parametrize("address", ["[::]:0", ":0"])
def test_all_interfaces_are_dual_stack(serve: Serve, address: str) -> None:
    server = serve(address=address)
    for host in ("127.0.0.1", "[::1]"):
        assert requests.get(f"http://{host}:{server.port}/healthz", timeout=5).ok


def test_port_in_use_is_one_line(serve: Serve) -> None:
    first = serve()
    with pytest.raises(ServeError, match=rf"^cannot listen on 127.0.0.1:{first.port}: .*[Aa]ddress already in use"):
        serve(address=f"127.0.0.1:{first.port}")


@pytest.mark.parametrize(("address", "message"), [
    ("9940", "expected host:port"), ("::1:9940", "in brackets"), ("[::1:9940", "unbalanced"),
    (":99999", "expected host:port"),
])
def test_bad_listen_address(address: str, message: str) -> None:
    with pytest.raises(ServeError, match=message):
        parse_listen_address(address)


@pytest.mark.parametrize(("text", "message"), [
    ("basic_auth_users:\n  prom: plaintext\n", "expected a bcrypt hash"),
    ("tls_server_config:\n  cert_file: tls.crt\n", "missing key_file"),
    ("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  cipher_suites: [x]\n", "unsupported key"),
    ("tls_server_config:\n  cert_file: missing.crt\n  key_file: tls.key\n", "cannot load"),
    ("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  client_auth_type: RequireAnyClientCert\n",
     "needs client_ca_file"),
    ("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  client_ca_file: tls.crt\n",
     "client_auth_type is NoClientCert"),
    ("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  client_auth_type: Maybe\n",
     "invalid value 'Maybe'"),
    ("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  min_version: TLS99\n", "invalid value"),
    ("http_server_config:\n  headers:\n    Set-Cookie: x\n", "may not be set"),
    ("unknown_section: {}\n", "unsupported key"),
])
def test_bad_web_config_is_refused_at_start(tmp_path: Path, text: str, message: str) -> None:
    make_cert(tmp_path)
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        webconfig.WebConfigSource(path)


def test_aborted_scrape_is_not_a_stack_trace(serve: Serve, caplog: pytest.LogCaptureFixture,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    """A client that hangs up mid-scrape (a Prometheus scrape timeout) costs no traceback in a logfmt log."""
    caplog.set_level(logging.DEBUG)
    server = serve(collector=Many())
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
        sock.close()
    assert requests.get(url(server, "/healthz"), timeout=10).ok  # the server is fine
    # every worker back to idle: the aborted scrapes (each reached a worker, recv(1) above) are finished and logged
    pool = server.server.wsgi.requests
    assert wait_until(lambda: pool.idle == pool.min and pool.qsize == 0)
    for record in caplog.records:
        assert record.exc_info is None and "\n" not in record.getMessage(), record.getMessage()
    assert "Traceback" not in capfd.readouterr().err  # nor written past the logger (cheroot's own error log)
