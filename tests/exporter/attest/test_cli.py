"""``tee-exporter attest``: exit 0 verified and within policy, 1 rejected with reasons, 2 could not run; --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from exporter.cli import main

from . import forge
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


def forged_snp(tmp_path: Path) -> tuple[Path, Path]:
    """A forged report with its certificates (snpguest layout) and the test ARK as a trust-root file."""
    amd = forge.amd_pki()
    key, vcek = amd.vcek()
    report = tmp_path / "report.bin"
    report.write_bytes(forge.snp_report(key))
    certs = tmp_path / "report.bin.certs"
    certs.mkdir()
    (certs / "vcek.pem").write_bytes(forge.pem(vcek))
    (certs / "ask.pem").write_bytes(forge.pem(amd.ask))
    ark = tmp_path / "ark.pem"
    ark.write_bytes(forge.pem(amd.ark))
    return report, ark


def forged_tdx(tmp_path: Path, world: forge.TdxWorld | None = None) -> tuple[Path, Path, Path]:
    world = world or forge.tdx_world()
    quote = tmp_path / "quote.dat"
    quote.write_bytes(world.quote())
    root = tmp_path / "intel-root.pem"
    root.write_bytes(forge.pem(world.pki.root))
    return quote, world.write(tmp_path / "collateral"), root


def test_trust_root_option_is_honoured(tmp_path) -> None:
    report, ark = forged_snp(tmp_path)
    quote, collateral, root = forged_tdx(tmp_path)
    common = ("--collateral", str(collateral), "--at", "2025-06-01", "--json")
    code, out, _ = run(str(report), str(quote), *common)
    assert code == 1
    assert [r["reasons"] for r in json.loads(out)["results"]] == [["chain"], ["chain"]]
    code, out, _ = run(str(report), str(quote), *common, "--trust-root", str(ark), "--trust-root", str(root))
    assert code == 0, out
    assert [r["tcb_status"] for r in json.loads(out)["results"]] == [None, "UpToDate"]


def test_unusable_trust_root_is_a_start_up_error(tmp_path) -> None:
    code, _, err = run(str(TDX / "quote-v4-3.dat"), "--trust-root", str(SNP))  # a directory
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_policy_can_refuse_an_out_of_date_tcb(tmp_path) -> None:
    levels = [forge.tcb_level(sgx=(9,) * 16), forge.tcb_level(status="OutOfDate")]
    world = forge.tdx_world().replace(
        tcb_info=forge.signed_json("tcbInfo", forge.tcb_info_doc(levels=levels), forge.intel_pki().signing_key))
    quote, collateral, root = forged_tdx(tmp_path, world)
    args = (str(quote), "--collateral", str(collateral), "--trust-root", str(root), "--at", "2025-06-01")
    code, out, _ = run(*args)
    assert code == 0 and "tcb_status=OutOfDate" in out  # without a policy the status is reported, not judged
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1.0", "attestation_policy": {"allowed_tcb_status": ["UpToDate"]}}))
    code, out, _ = run(*args, "--policy", str(policy))
    assert code == 1 and "REJECT" in out and "allowed_tcb_status: TCB status OutOfDate" in out


def test_batch_keeps_every_verdict_and_never_reads_a_fifo(tmp_path) -> None:
    report, ark = forged_snp(tmp_path)
    fifo = tmp_path / "fifo.bin"
    os.mkfifo(fifo)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x04\x00\x02\x00\x81\x00\x00\x00" + bytes(100))
    proc = subprocess.run([sys.executable, "-m", "exporter", "attest", str(report), str(fifo), "/dev/zero",
                           str(tmp_path / "missing.bin"), str(garbage), "--trust-root", str(ark),
                           "--at", "2025-06-01", "--json"],
                          capture_output=True, text=True, cwd=ROOT, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    results = [(Path(r["evidence"]).name, r["reasons"]) for r in json.loads(proc.stdout)["results"]]
    assert results == [("report.bin", []), ("fifo.bin", ["unreadable"]), ("zero", ["unreadable"]),
                       ("missing.bin", ["unreadable"]), ("garbage.bin", ["parse"])]
    assert "not a regular file" in proc.stderr


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "2025-13-01"])
def test_out_of_range_at_is_a_clean_error(when: str) -> None:
    code, _, err = run(str(TDX / "quote-v4-3.dat"), "--at", when)
    assert code == 2 and "--at" in err and len(err.strip().splitlines()) == 1


def test_deeply_nested_collateral_is_a_clean_error(tmp_path) -> None:
    folder = tmp_path / "coll"
    folder.mkdir()
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run(str(TDX / "quote-v4-3.dat"), "--collateral", str(folder))
    assert code == 2 and "deep.json" in err and len(err.strip().splitlines()) == 1


def test_deeply_nested_policy_is_a_clean_error(tmp_path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text('{"version": "1.0", "attestation_policy": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, _, err = run(str(TDX / "quote-v4-3.dat"), "--policy", str(policy))
    assert code == 2 and "policy.json" in err and len(err.strip().splitlines()) == 1


def test_malformed_signed_tcb_info_is_a_collateral_rejection(tmp_path) -> None:
    level = dict(forge.tcb_level(), tcbStatus="Mostly")
    world = forge.tdx_world().replace(
        tcb_info=forge.signed_json("tcbInfo", forge.tcb_info_doc(levels=[level]), forge.intel_pki().signing_key))
    quote, collateral, root = forged_tdx(tmp_path, world)
    code, out, _ = run(str(quote), "--collateral", str(collateral), "--trust-root", str(root), "--at", "2025-06-01")
    assert code == 1 and "REJECT" in out and "collateral: " in out and "unknown tcbStatus" in out


def test_oversized_evidence_is_not_read(tmp_path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x04\x00\x02\x00\x81\x00\x00\x00" + bytes(2 * 1024 * 1024))
    code, out, err = run(str(big), "--json")
    assert code == 2 and "larger than" in err
    assert json.loads(out)["results"][0]["reasons"] == ["unreadable"]
