"""One attestation attempt end to end: recognise the evidence, verify it, apply the policy.

The CLI and the daemon collector both go through ``Attester.check`` so they reach the same verdict on the same
bytes. ``Outcome`` is the verdict: what was verified (if anything), the rejection (if any), the policy violations.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from pathlib import Path

from exporter.attest import snp, tdx
from exporter.attest.collateral import CollateralSet
from exporter.attest.errors import EvidenceError
from exporter.attest.policy import AttestationPolicy, Violation, check_attestation
from exporter.attest.regular import read_regular
from exporter.attest.result import Verified
from exporter.attest.trust import TrustStore
from exporter.attest.verify_snp import SnpCerts, SnpVerifier, load_certs_dir
from exporter.attest.verify_tdx import TdxVerifier

MAX_EVIDENCE_BYTES = 1024 * 1024  # a quote with its PCK chain is ~5 KiB; nothing legitimate comes near this


def detect_format(data: bytes) -> str:
    """The format from the structure, not from one byte.

    An SEV-SNP report is exactly 1184 bytes; the smallest possible TDX quote (header, TD report, signature data
    with an empty certificate chain) is longer, so the length alone separates them and a report whose version or
    GUEST_SVN happens to look like a quote header (v5 with GUEST_SVN 0x81) stays a report. Anything else is a
    quote candidate only with the whole quote header: version 4/5, attestation key type 2, TEE type 0x81.
    """
    if len(data) == snp.REPORT_SIZE:
        return "sev-snp"
    if len(data) >= 8:
        version, key_type, tee_type = struct.unpack_from("<HHI", data, 0)
        if version in (4, 5) and key_type == tdx.ATT_KEY_TYPE_ECDSA_P256 and tee_type == tdx.TEE_TYPE_TDX:
            return "tdx"
    if len(data) < 8:
        raise EvidenceError("truncated", f"evidence of {len(data)} bytes is too short to be a report or quote")
    raise EvidenceError("malformed", "neither an SEV-SNP report (1184 bytes) nor a TDX quote (v4/v5 header)")


def read_evidence(path: Path) -> bytes:
    """An evidence file's bytes: a regular file of at most ``MAX_EVIDENCE_BYTES`` (else ``OSError``)."""
    return read_regular(path, MAX_EVIDENCE_BYTES)


@dataclass(frozen=True)
class Outcome:
    tee_type: str  # "sev-snp" | "tdx" | "unknown" (not even recognisable)
    verified: Verified | None
    error: EvidenceError | None
    violations: tuple[Violation, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None and not self.violations

    @property
    def reasons(self) -> list[str]:
        """Bounded metric reasons: the verification failure, else one per violated policy rule."""
        if self.error is not None:
            return [self.error.metric_reason]
        return [v.reason for v in self.violations]

    @property
    def reason(self) -> str:
        return self.reasons[0] if self.reasons else "none"

    @property
    def policy_result(self) -> str:
        if self.verified is None:
            return "not_evaluated"
        return "fail" if self.violations else "pass"


def certs_beside(evidence: Path) -> Path | None:
    """Where an evidence file's SNP certificates are when not given: ``<name>.certs/``, else its own folder."""
    for folder in (evidence.with_name(evidence.name + ".certs"), evidence.with_suffix(".certs"), evidence.parent):
        if any((folder / f"{stem}{sfx}").is_file() for stem in ("vcek", "vlek") for sfx in (".pem", ".der")):
            return folder
    return None


class Attester:
    """Holds the trust store, the verifiers (and their chain caches), the policy and the collateral."""

    def __init__(self, trust: TrustStore, policy: AttestationPolicy | None = None,
                 collateral: CollateralSet | None = None) -> None:
        self.policy = policy
        self.allow_missing = policy.allow_missing_collateral if policy else ()
        # A collateral folder without any TCB info, QE identity or CRL means "no collateral" (TCB status not
        # evaluated, said in the warnings), not "every quote lacks its TCB info"; any of them makes it a collateral
        # set, which must then be complete (or the policy must allow what is missing).
        has_items = collateral and (collateral.tcb_infos or collateral.qe_identities or collateral.crls)
        self.collateral = collateral if has_items else None
        self.snp = SnpVerifier(trust)
        self.tdx = TdxVerifier(trust)

    def check(self, data: bytes, *, at: dt.datetime, snp_certs: SnpCerts | None = None,
              certs_dir: Path | None = None) -> Outcome:
        tee_type = "unknown"
        try:
            tee_type = detect_format(data)
            verified = self._verify(tee_type, data, at, snp_certs, certs_dir)
        except EvidenceError as exc:
            return Outcome(tee_type, None, exc)
        violations = check_attestation(self.policy, verified) if self.policy else []
        return Outcome(tee_type, verified, None, tuple(violations))

    def _verify(self, tee_type: str, data: bytes, at: dt.datetime, snp_certs: SnpCerts | None,
                certs_dir: Path | None) -> Verified:
        if tee_type == "tdx":
            return self.tdx.verify(data, at, self.collateral, self.allow_missing)
        snp.parse_report(data)  # a malformed report is a parse error, whatever the certificates
        if snp_certs is None:
            if certs_dir is None:
                raise EvidenceError("certificate", "no VCEK/VLEK certificate given for the SNP report "
                                                   "(--certs DIR with vcek.pem or vlek.pem)")
            snp_certs = load_certs_dir(certs_dir)
        return self.snp.verify(data, snp_certs, at)
