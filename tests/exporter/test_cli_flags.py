"""Flags and web-config features the docs promise, on the real daemons (``tee-exporter`` on the demo host,
``tee-audit ship``) over real sockets: --web.telemetry-path, --log.format json, TLS versions, client certificates
and response headers from the web config, the shipper's metrics port behind TLS, and start-up refusals of a bad
policy, collateral directory or trust root as one error line, never a traceback."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.audit.kit import TEE_AUDIT, keys, write_journal
from tests.exporter.helpers import value
from tests.exporter.test_daemon import exporter_args
from tests.exporter.test_web import make_cert
from tests.fixtures.ports import free_port


def _start(args: list[str], url: str, **get: object) -> subprocess.Popen[str]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url, timeout=5, **get)  # type: ignore[arg-type]
            return proc
        except requests.exceptions.SSLError:
            return proc  # it answers: the handshake is what the test looks at
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "the daemon did not come up"
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator:
    procs: list[subprocess.Popen[str]] = []

    def start(*extra: str, scheme: str = "http", **get: object) -> tuple[str, subprocess.Popen[str]]:
        port = free_port()
        base = f"{scheme}://localhost:{port}"
        proc = _start(exporter_args(tmp_path, f"127.0.0.1:{port}", "--no-collector.attestation",
                                    "--no-collector.kbs", *extra), f"{base}/healthz", **get)
        procs.append(proc)
        return base, proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_telemetry_path_moves_the_metrics(exporter) -> None:
    base, proc = exporter("--web.telemetry-path", "/custom/metrics")
    text = requests.get(f"{base}/custom/metrics", timeout=10).text
    assert value(text, "tee_exporter_collector_success", collector="libvirt") == 1
    assert requests.get(f"{base}/metrics", timeout=10).status_code == 404
    assert 'href="/custom/metrics"' in requests.get(base, timeout=10).text  # the landing page links it
    _stop(proc)


def test_log_format_json_writes_one_json_object_per_line(exporter) -> None:
    base, proc = exporter("--log.format", "json")
    requests.get(f"{base}/metrics", timeout=10)
    lines = _stop(proc).splitlines()
    records = [json.loads(line) for line in lines]  # every line, or this raises
    assert {"listening", "shutting down"} <= {r.get("message") for r in records}, lines  # ECS field names
    assert all(r.get("log.level") and r.get("@timestamp") for r in records), lines


def _web(tmp_path: Path, tls: str, http: str = "") -> Path:
    make_cert(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {tmp_path}/tls.crt\n  key_file: {tmp_path}/tls.key\n{tls}{http}")
    return web


def _handshake(base: str, ca: Path, version: ssl.TLSVersion) -> str | None:
    """None when a client limited to ``version`` gets a response; else the TLS error."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ctx.maximum_version = version
    host, port = base.removeprefix("https://").split(":")
    import http.client

    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        return None
    except ssl.SSLError as exc:
        return exc.reason or str(exc)
    finally:
        conn.close()


@pytest.mark.parametrize(("setting", "refused", "admitted"), [
    ("  min_version: TLS13\n", ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
    ("  max_version: TLS12\n", ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2),
])
def test_tls_versions_of_the_web_config(tmp_path: Path, exporter, setting: str, refused: ssl.TLSVersion,
                                        admitted: ssl.TLSVersion) -> None:
    web = _web(tmp_path, setting)
    base, proc = exporter("--web.config.file", str(web), scheme="https", verify=str(tmp_path / "tls.crt"))
    assert _handshake(base, tmp_path / "tls.crt", admitted) is None
    assert _handshake(base, tmp_path / "tls.crt", refused) is not None
    _stop(proc)


def test_client_certificates_and_headers_of_the_web_config(tmp_path: Path, exporter) -> None:
    web = _web(tmp_path, f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {tmp_path}/ca.crt\n",
               "http_server_config:\n  headers:\n    X-Frame-Options: DENY\n"
               "    Strict-Transport-Security: max-age=31536000\n")
    ca_cert, _ = make_cert(tmp_path, "ca", cn="client CA")
    from tests.exporter.test_web import load_cert

    make_cert(tmp_path, "client", cn="prometheus", issuer=load_cert(ca_cert))
    make_cert(tmp_path, "stranger", cn="prometheus")  # self-signed: not from the client CA
    base, proc = exporter("--web.config.file", str(web), scheme="https", verify=str(tmp_path / "tls.crt"),
                          cert=(str(tmp_path / "client.crt"), str(tmp_path / "client.key")))
    ok = requests.get(f"{base}/metrics", verify=str(tmp_path / "tls.crt"), timeout=10,
                      cert=(str(tmp_path / "client.crt"), str(tmp_path / "client.key")))
    assert ok.status_code == 200 and "tee_domain_info" in ok.text
    assert ok.headers["X-Frame-Options"] == "DENY"
    assert ok.headers["Strict-Transport-Security"] == "max-age=31536000"
    for cert in (None, (str(tmp_path / "stranger.crt"), str(tmp_path / "stranger.key"))):
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{base}/metrics", verify=str(tmp_path / "tls.crt"), timeout=10, cert=cert)
    _stop(proc)


def test_shipper_metrics_port_serves_tls_from_the_web_config(tmp_path: Path) -> None:
    key, _ = keys(tmp_path / "keys")
    write_journal(tmp_path / "journal.jsonl", 20)
    web = _web(tmp_path, "")
    port = free_port()
    args = [*TEE_AUDIT, "ship", "--source", str(tmp_path / "journal.jsonl"), "--store", str(tmp_path / "store"),
            "--chain", "h1", "--signing-key", str(key), "--web.listen-address", f"127.0.0.1:{port}",
            "--web.config.file", str(web)]
    proc = _start(args, f"https://localhost:{port}/metrics", verify=str(tmp_path / "tls.crt"))
    try:
        text = requests.get(f"https://localhost:{port}/metrics", verify=str(tmp_path / "tls.crt"), timeout=10).text
        assert "tee_audit_records_in_total" in text
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP gets no metrics
            requests.get(f"http://localhost:{port}/metrics", timeout=10).raise_for_status()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def _refused(tmp_path: Path, *extra: str) -> str:
    (tmp_path / "evidence").mkdir(exist_ok=True)
    result = subprocess.run(exporter_args(tmp_path, f"127.0.0.1:{free_port()}", "--attestation.evidence-dir",
                                          str(tmp_path / "evidence"), *extra),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_a_bad_policy_stops_start_up_with_one_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text('{"version": "1.0", "attestation_policy": {"enforce_debug": true}}')
    line = _refused(tmp_path, "--attestation.policy-file", str(policy))
    assert str(policy) in line and "enforce_debug" in line


def test_a_missing_collateral_directory_stops_start_up_with_one_line(tmp_path: Path) -> None:
    line = _refused(tmp_path, "--attestation.collateral-dir", str(tmp_path / "nowhere"))
    assert line == f"Error: {tmp_path / 'nowhere'}: cannot read the collateral directory: No such file or directory"


def test_a_malformed_collateral_file_stops_start_up_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "collateral").mkdir()
    (tmp_path / "collateral" / "pck.crl").write_bytes(b"not a CRL")
    line = _refused(tmp_path, "--attestation.collateral-dir", str(tmp_path / "collateral"))
    assert str(tmp_path / "collateral" / "pck.crl") in line and "not a valid CRL" in line


def test_a_bad_trust_root_stops_start_up_with_one_line(tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    root.write_text("not a certificate\n")
    line = _refused(tmp_path, "--attestation.trust-root", str(root))
    assert str(root) in line
