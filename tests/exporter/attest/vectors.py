"""Paths and pinned times for the real attestation vectors (copied into ./data; see data/SOURCES.md)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from exporter.attest.trust import load_certificates
from exporter.attest.verify_snp import SnpCerts

ROOT = Path(__file__).resolve().parents[3]
# A verbatim copy of shared/testdata/attestation (SOURCES.md there gives provenance, licenses and decoded facts).
TESTDATA = Path(__file__).parent / "data"
SNP = TESTDATA / "snp"
TDX = TESTDATA / "tdx"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


# Inside every SNP certificate's validity, except the VLEK's (2024-12-10..2025-12-10), which it is also inside.
SNP_AT = utc(2025, 6, 1)

# report, signing certificate, chain file (None: rely on the shipped ASK/ARK)
SNP_VECTORS = {
    "milan-report-1.bin": ("milan-vcek-1.der", "milan-ask-ark.pem"),
    "milan-report-2.bin": ("milan-vcek-2.der", None),
    "milan-report-3.bin": ("milan-vcek-3.der", "milan-ask-ark.pem"),
    "milan-vlek-report-4.bin": ("milan-vlek-4.der", "milan-vlek-asvk-ark.pem"),
    "genoa-report-5.bin": ("genoa-vcek-5.pem", "genoa-ask-ark.pem"),
}

TDX_QUOTES = ["spr-quote-v4-1.dat", "quote-v5-2.dat", "quote-v4-3.dat", "quote-v5-4.dat", "quote-v4-debug-5.dat",
              "quote-v4-6.dat", "quote-v5-7.dat"]
TDX_AT = utc(2026, 6, 1)  # inside every PCK chain's validity (the newest leaf is from 2026-01-27)


def snp_certs(leaf: str, chain: str | None) -> SnpCerts:
    leaf_cert = load_certificates((SNP / leaf).read_bytes(), leaf)[0]
    rest = tuple(load_certificates((SNP / chain).read_bytes(), chain)) if chain else ()
    return SnpCerts(leaf_cert, rest)


def snpguest_dir(target: Path, leaf: str, chain: str | None) -> Path:
    """An snpguest-layout folder (vcek.der/vlek.der + ask/ark) for a vector."""
    target.mkdir(parents=True, exist_ok=True)
    kind = "vlek" if "vlek" in leaf else "vcek"
    shutil.copy(SNP / leaf, target / f"{kind}{Path(leaf).suffix}")
    if chain:
        certs = (SNP / chain).read_text().split("-----END CERTIFICATE-----")
        names = ("asvk" if kind == "vlek" else "ask", "ark")
        for name, pem in zip(names, certs, strict=False):
            (target / f"{name}.pem").write_text(pem.strip() + "\n-----END CERTIFICATE-----\n")
    return target


def collateral_dir(target: Path, *names: str) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(TDX / name, target / name)
    return target
