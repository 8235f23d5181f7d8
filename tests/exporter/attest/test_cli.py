"""``tee-exporter attest``: exit 0 verified and within policy, 1 rejected with reasons, 2 could not run; --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from exporter.cli import main

from .vectors import ROOT, SNP, SNP_VECTORS, TDX, collateral_dir, snpguest_dir


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["attest", *args])
    return result.exit_code, result.stdout, result.stderr


def test_verified_evidence_exits_0(tmp_path) -> None:
    certs = snpguest_dir(tmp_path / "certs", *SNP_VECTORS["milan-report-3.bin"])
    code, out, _ = run(str(SNP / "milan-report-3.bin"), "--certs", str(certs), "--at", "2025-06-01")
    assert code == 0, out
    assert out.startswith("OK ")


def test_tdx_with_collateral_and_json(tmp_path) -> None:
    collateral = collateral_dir(tmp_path / "coll", "collateral-3.json")
    code, out, _ = run(str(TDX / "quote-v4-3.dat"), "--collateral", str(collateral), "--at", "2025-07-01T00:00:00Z",
                       "--json")
    assert code == 0
    doc = json.loads(out)
    [result] = doc["results"]
    assert result["ok"] and result["tcb_status"] == "UpToDate" and result["tee_type"] == "tdx"


def test_rejections_exit_1_and_list_every_reason(tmp_path) -> None:
    certs = snpguest_dir(tmp_path / "certs", "milan-vcek-2.der", None)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1.0", "attestation_policy": {"enforce_debug_disabled": True,
                                                                           "require_secure_boot": True}}))
    code, out, _ = run(str(SNP / "milan-report-2-tampered.bin"), str(TDX / "quote-v4-debug-5.dat"),
                       "--certs", str(certs), "--policy", str(policy), "--at", "2026-06-01", "--json")
    assert code == 1
    results = {Path(r["evidence"]).name: r for r in json.loads(out)["results"]}
    assert results["milan-report-2-tampered.bin"]["reasons"] == ["signature"]
    assert results["quote-v4-debug-5.dat"]["reasons"] == ["debug", "secure_boot"]
    code, text, _ = run(str(TDX / "quote-v4-3-truncated.dat"))
    assert code == 1 and "truncated" in text


def test_could_not_run_exits_2(tmp_path) -> None:
    code, _, err = run(str(tmp_path / "missing.bin"))
    assert code == 2 and "missing.bin" in err
    bad_policy = tmp_path / "policy.json"
    bad_policy.write_text('{"version": "1.0", "attestation_policy": {"enforce_debug": true}}')
    code, _, err = run(str(TDX / "quote-v4-3.dat"), "--policy", str(bad_policy))
    assert code == 2 and "attestation_policy.enforce_debug" in err
    code, _, err = run(str(TDX / "quote-v4-3.dat"), "--at", "yesterday")
    assert code == 2 and "--at" in err


def test_extra_trust_root_is_added(tmp_path) -> None:
    extra = tmp_path / "root.pem"
    extra.write_bytes((SNP / "milan-ask-ark.pem").read_bytes())
    code, _, _ = run(str(TDX / "quote-v4-3.dat"), "--trust-root", str(extra), "--at", "2026-06-01")
    assert code == 0  # Intel root still trusted next to the added one


def test_installed_command_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "exporter", "attest", str(TDX / "quote-v4-3.dat"),
                           "--at", "2026-06-01"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
