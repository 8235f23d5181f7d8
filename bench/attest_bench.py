"""Attestation verification throughput on one core, against the raw signature checks alone in the same run.

    .venv/bin/python bench/attest_bench.py [--seconds 2]

For each TEE type it measures (1) the full verifier (parse, chain to the vendor root with the chain cache warm,
certificate/TCB binding, signatures, and for TDX also collateral: CRLs, TCB info and QE identity signatures and
TCB matching, all under the exact chain shapes) and (2) only the ECDSA signature verifications the verifier cannot avoid (SNP: the report signature;
TDX: quote signature + QE report signature), with keys and DER signatures prepared beforehand. The two sides
alternate over several rounds; it prints the median and spread (min-max) of the rates and of the per-round
overhead ratio full/raw (time per item). Targets: >= 500 SNP reports/s, >= 100 TDX quotes/s, overhead < 2x.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from exporter.attest.collateral import load_dir
from exporter.attest.snp import parse_report
from exporter.attest.tdx import parse_quote
from exporter.attest.trust import TrustStore, load_certificates
from exporter.attest.verify_snp import SnpCerts, SnpVerifier
from exporter.attest.verify_tdx import TdxVerifier, attestation_key, pck_facts

DATA = ROOT / "tests" / "exporter" / "attest" / "data"
SNP_AT = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
TDX_AT = dt.datetime(2025, 7, 1, tzinfo=dt.UTC)
SNP_SET = [("milan-report-2.bin", "milan-vcek-2.der", "milan-ask-ark.pem"),
           ("milan-report-3.bin", "milan-vcek-3.der", "milan-ask-ark.pem"),
           ("genoa-report-5.bin", "genoa-vcek-5.pem", "genoa-ask-ark.pem"),
           ("milan-vlek-report-4.bin", "milan-vlek-4.der", "milan-vlek-asvk-ark.pem")]


def per_item(fn: Callable[[int], None], items: int, seconds: float) -> float:
    """CPU seconds per item of ``fn(i)`` over a slice of about ``seconds`` of this process's CPU time (so time the
    process spends preempted by other load on the host is not counted; the work is single-threaded)."""
    done, start = 0, time.process_time()
    while True:
        for i in range(items):
            fn(i)
        done += items
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return elapsed / done


@dataclass(frozen=True)
class Result:
    """Per-round rates (items/s) of both sides and the per-round overhead ratios (time full / time raw)."""

    full: list[float]
    raw: list[float]

    @property
    def ratios(self) -> list[float]:
        return [r / f for f, r in zip(self.full, self.raw, strict=True)]


def rates(full: Callable[[int], None], raw: Callable[[int], None], items: int, seconds: float,
          rounds: int = 7) -> Result:
    """Both sides measured in alternating slices over ``rounds`` rounds, so load on the host hits both alike."""
    per_item(full, items, 0.05)
    per_item(raw, items, 0.05)
    slice_ = seconds / rounds
    out = Result([], [])
    for _ in range(rounds):
        out.full.append(1 / per_item(full, items, slice_))
        out.raw.append(1 / per_item(raw, items, slice_))
    return out


def spread(values: list[float], fmt: str) -> str:
    """``median (min-max)``."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def snp_cases() -> tuple[Callable[[int], None], Callable[[int], None], int]:
    verifier = SnpVerifier(TrustStore.default())
    blobs, certs, raw = [], [], []
    for report, leaf, chain in SNP_SET:
        data = (DATA / "snp" / report).read_bytes()
        leaf_cert = load_certificates((DATA / "snp" / leaf).read_bytes(), leaf)[0]
        blobs.append(data)
        certs.append(SnpCerts(leaf_cert, tuple(load_certificates((DATA / "snp" / chain).read_bytes(), chain))))
        parsed = parse_report(data)
        raw.append((leaf_cert.public_key(), encode_dss_signature(parsed.signature_r, parsed.signature_s),
                    parsed.signed_bytes))

    def full(i: int) -> None:
        verifier.verify(blobs[i], certs[i], SNP_AT)

    def signatures(i: int) -> None:
        key, sig, data = raw[i]
        key.verify(sig, data, ec.ECDSA(hashes.SHA384()))

    return full, signatures, len(blobs)


def _der(raw: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def tdx_cases(with_collateral: bool) -> tuple[Callable[[int], None], Callable[[int], None], int]:
    verifier = TdxVerifier(TrustStore.default())
    data = (DATA / "tdx" / "quote-v4-3.dat").read_bytes()
    collateral = None
    if with_collateral:
        folder = DATA / "tdx"
        import shutil
        import tempfile
        tmp = Path(tempfile.mkdtemp())
        shutil.copy(folder / "collateral-3.json", tmp / "collateral-3.json")
        collateral = load_dir(tmp)
        shutil.rmtree(tmp)
    quote = parse_quote(data)
    pck_key = pck_facts(quote.pck_chain_pem).key
    att_key = attestation_key(quote)
    raw = [(att_key, _der(quote.signature), quote.signed_bytes),
           (pck_key, _der(quote.qe_report_signature), quote.qe_report.raw)]

    def full(_: int) -> None:
        verifier.verify(data, TDX_AT, collateral)

    def signatures(_: int) -> None:
        for key, sig, signed in raw:
            key.verify(sig, signed, ec.ECDSA(hashes.SHA256()))

    return full, signatures, 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per case and side")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per case")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    rows = []
    for name, (full, raw, n) in (("SNP reports", snp_cases()), ("TDX quotes", tdx_cases(False)),
                                 ("TDX quotes + collateral", tdx_cases(True))):
        rows.append((name, rates(full, raw, n, args.seconds, args.rounds)))
    print(f"median (min-max) over {args.rounds} alternating rounds")
    print(f"{'case':<26}{'verified/s':>22}{'raw sigs/s':>22}{'overhead':>22}")
    for name, r in rows:
        print(f"{name:<26}{spread(r.full, '.0f'):>22}{spread(r.raw, '.0f'):>22}{spread(r.ratios, '.2f'):>22}")
    snp, tdx, tdx_coll = (statistics.median(r.full) for _, r in rows)
    worst = max(statistics.median(r.ratios) for _, r in rows)
    print(f"targets: SNP >= 500/s: {'met' if snp >= 500 else 'MISSED'}; TDX >= 100/s: "
          f"{'met' if min(tdx, tdx_coll) >= 100 else 'MISSED'}; overhead < 2x (median, every case): "
          f"{'met' if worst < 2 else 'MISSED'}")


if __name__ == "__main__":
    main()
