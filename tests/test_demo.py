"""The README's main-job command, end to end: the demo host's series appear and the audit chain verifies."""

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.libvirtd
def test_readme_demo_serves_metrics_and_verifies_its_audit_chain(tmp_path: Path) -> None:
    env = {**os.environ, "DEMO_ONCE": "1", "DEMO_DIR": str(tmp_path / "demo"),
           "DEMO_PORT": str(free_port()), "DEMO_AUDIT_PORT": str(free_port())}
    result = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert 'tee_domain_info{' in out and 'tee_type="sev-snp"' in out
    assert "tee_attestation_attempts_total{" in out
    assert "tee_kbs_resource_requests_total{" in out
    journal = (tmp_path / "demo" / "journal.jsonl").read_text().splitlines()
    assert journal, "the demo wrote no journal events"
    verdict = re.search(r"^chain \S+: (\S+): (\d+) records", out, re.MULTILINE)
    assert verdict, out[-2000:]
    assert verdict[1] == "INTACT" and int(verdict[2]) == len(journal), verdict[0]
