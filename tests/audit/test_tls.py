"""Elasticsearch behind a TLS-terminating, basic-auth proxy: shipping and verifying with a CA file and a password
file; a wrong CA or password stops ``--once`` with an error instead of retrying forever."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from audit.sinks.elasticsearch import data_stream_name
from tests.audit.kit import TEE_AUDIT, es_setup, keys, verify_json, write_journal
from tests.fixtures.elasticsearch import EsTls


@pytest.mark.elasticsearch
def test_ship_and_verify_through_tls_and_basic_auth(tmp_path: Path, elasticsearch_tls: EsTls,
                                                     es_namespace: str) -> None:
    key, public = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 120)
    tls = elasticsearch_tls
    auth = ["--es.ca-file", str(tls.ca_file), "--es.username", tls.username, "--es.password-file",
            str(tls.password_file)]
    setup = subprocess.run([*TEE_AUDIT, "setup", "--es", tls.url, "--es.namespace", es_namespace, *auth],
                           capture_output=True, text=True, check=False, timeout=120)
    assert setup.returncode == 0, setup.stderr
    assert tls.password not in setup.stdout + setup.stderr
    run = subprocess.run([*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", tls.url, *auth,
                          "--es.namespace", es_namespace, "--signing-key", str(key), "--chain", "h1",
                          "--spool.dir", str(tmp_path / "spool")], capture_output=True, text=True, check=False,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert tls.password not in run.stderr  # secrets never logged
    code, report = verify_json("--es", tls.url, "--data-stream", data_stream_name(es_namespace),
                               "--public-key", str(public), *auth)
    assert (code, report["records"], report["findings"]) == (0, 120, [])


@pytest.mark.elasticsearch
@pytest.mark.parametrize("fault", ["wrong password", "unknown CA"])
def test_bad_credentials_or_untrusted_certificate_stop_once_with_an_error(
        tmp_path: Path, elasticsearch_tls: EsTls, es_namespace: str, fault: str) -> None:
    key, _ = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 3)
    es_setup(elasticsearch_tls.url, es_namespace, ca_file=elasticsearch_tls.ca_file,
             username=elasticsearch_tls.username, password_file=elasticsearch_tls.password_file)
    password_file, ca_file = elasticsearch_tls.password_file, elasticsearch_tls.ca_file
    if fault == "wrong password":
        password_file = tmp_path / "wrong"
        password_file.write_text("not-the-password\n")
    else:
        ca_file = Path("/etc/ssl/certs/ca-certificates.crt")
    run = subprocess.run([*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", elasticsearch_tls.url,
                          "--es.ca-file", str(ca_file), "--es.username", "auditor", "--es.password-file",
                          str(password_file), "--es.namespace", es_namespace, "--signing-key", str(key),
                          "--spool.dir", str(tmp_path / "spool")], capture_output=True, text=True, check=False,
                         timeout=120)
    assert run.returncode == 1
    assert ("http_401" if fault == "wrong password" else "reason=tls") in run.stderr
    assert "not-the-password" not in run.stderr
