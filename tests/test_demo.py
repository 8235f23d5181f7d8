"""The README's main-job command, end to end: the demo host's series appear and the audit chain verifies."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from audit import proof
from audit.prove_cli import prove_store
from tests.fixtures.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


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
    # exactly "INTACT", as the whole verdict word at the start of verify's line ("NOT INTACT" contains it)
    verdicts = re.findall(r"^chain (\S+): (INTACT|NOT INTACT): (\d+) records", out, re.MULTILINE)
    assert len(verdicts) == 1, out[-2000:]
    (_chain, state, records), = verdicts
    assert state == "INTACT" and int(records) == len(journal), verdicts
    assert max(receipt_sizes(tmp_path / "demo" / "store", len(journal))) < 2048


def receipt_sizes(store: Path, records: int, depth: int = 24) -> list[int]:
    """Bytes of each record's receipt were the log ten million records long (24 proof hashes of 45 bytes) and the
    checkpoint cosigned by one witness (a cosignature line: em dash, name, 104 base64 characters)."""
    cosignature = len("\u2014 witness.example/w1 ".encode()) + 104 + 1
    sizes = []
    for seq in range(records):
        text = prove_store(store, None, seq)
        sizes.append(len(text.encode()) + (depth - len(proof.parse(text).proof)) * 45 + cosignature)
    print("receipt bytes at 10 M records, one cosignature:", sorted(sizes))
    return sizes
