"""Serving: exporter-toolkit web config (TLS with a generated certificate, bcrypt basic auth) and the endpoints."""

from __future__ import annotations

import datetime as dt
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

from exporter import webconfig
from exporter.config import ConfigError
from exporter.server import MetricsServer


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class One:
    def collect(self):
        yield GaugeMetricFamily("tee_test_value", "x", value=42)


@pytest.fixture
def serve():
    servers = []

    def start(web: webconfig.WebConfig | None) -> str:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(One())
        server = MetricsServer(registry, "127.0.0.1:0", "/metrics", web)
        server.start()
        servers.append(server)
        return f"{server.scheme}://localhost:{server.port}"

    yield start
    for server in servers:
        server.shutdown()


def write_config(tmp_path: Path, password: str = "s3cret") -> Path:
    self_signed(tmp_path)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
                    f"basic_auth_users:\n  prom: '{hashed}'\n")
    return path


def test_tls_and_basic_auth(tmp_path, serve):
    base = serve(webconfig.load(write_config(tmp_path)))
    ca = str(tmp_path / "tls.crt")
    assert base.startswith("https://")
    ok = requests.get(f"{base}/metrics", auth=("prom", "s3cret"), verify=ca, timeout=10)
    assert ok.status_code == 200 and "tee_test_value 42.0" in ok.text
    assert requests.get(f"{base}/metrics", auth=("prom", "wrong"), verify=ca, timeout=10).status_code == 401
    assert requests.get(f"{base}/metrics", auth=("nobody", "s3cret"), verify=ca, timeout=10).status_code == 401
    missing = requests.get(f"{base}/metrics", verify=ca, timeout=10)
    assert missing.status_code == 401 and "Basic" in missing.headers["WWW-Authenticate"]
    # the cached success must not let a different password through afterwards
    assert requests.get(f"{base}/metrics", auth=("prom", "s3cret2"), verify=ca, timeout=10).status_code == 401


def test_plain_http_is_refused_by_a_tls_listener(tmp_path, serve):
    base = serve(webconfig.load(write_config(tmp_path)))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(base.replace("https://", "http://") + "/metrics", timeout=10)


def test_endpoints_without_web_config(serve):
    base = serve(None)
    assert requests.get(f"{base}/healthz", timeout=10).text == "ok\n"
    assert 'href="/metrics"' in requests.get(f"{base}/", timeout=10).text
    assert requests.get(f"{base}/nope", timeout=10).status_code == 404


@pytest.mark.parametrize(("text", "message"), [
    ("basic_auth_users:\n  prom: plaintext\n", "expected a bcrypt hash"),
    ("tls_server_config:\n  cert_file: tls.crt\n", "cert_file and key_file are both required"),
    ("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  cipher_suites: [x]\n", "unsupported key"),
    ("tls_server_config:\n  cert_file: missing.crt\n  key_file: tls.key\n", "cannot load"),
    ("unknown_section: {}\n", "unsupported key"),
])
def test_bad_web_config_is_refused(tmp_path, text, message):
    self_signed(tmp_path)
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        webconfig.load(path)
