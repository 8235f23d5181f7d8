"""SEV-SNP report verification: report -> VCEK/VLEK -> ASK/ASVK -> ARK (a shipped or configured root).

Follows AMD's "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface Specification" (pub. 57230):
the VCEK (or the CSP's VLEK, issued by the ASVK) carries the chip's hwID and the TCB it was issued for as X.509
extensions under 1.3.6.1.4.1.3704.1; both must agree with the report, so a VCEK for another chip or another TCB
cannot vouch for it. A VCEK without its hwID extension, or either leaf without the TCB extensions of its product,
is refused. The chain must have the AMD shape (``trust.amd_shape``) and end at an AMD root. For reports v3+, the
CPUID family/model in the report must name the same product as the certificate chain. Chain links are
RSA-PSS/SHA-384, checked by ``cryptography``; the report signature is ECDSA P-384/SHA-384 (r, s little-endian in the
report, re-encoded as DER here).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from exporter.attest import der
from exporter.attest.errors import EvidenceError
from exporter.attest.regular import read_regular
from exporter.attest.result import Verified
from exporter.attest.snp import SIGNING_KEY_VCEK, SIGNING_KEY_VLEK, SnpReport, parse_report
from exporter.attest.trust import (
    AMD,
    ChainVerifier,
    TrustStore,
    amd_shape,
    common_name,
    load_certificates,
    public_key,
)

_AMD = "1.3.6.1.4.1.3704.1."
OID_HWID = _AMD + "4"
OID_TCB = {"bootloader": _AMD + "3.1", "tee": _AMD + "3.2", "snp": _AMD + "3.3", "microcode": _AMD + "3.8",
           "fmc": _AMD + "3.9"}
REQUIRED_TCB = ("bootloader", "tee", "snp", "microcode")  # plus "fmc" on Turin (VCEK spec, table "VCEK extensions")
# snpguest's file names (``snpguest fetch ca/vcek``), PEM or DER.
CERT_NAMES = {"vcek": "leaf", "vlek": "leaf", "ask": "chain", "asvk": "chain", "ark": "chain",
              "cert_chain": "chain"}


@dataclass(frozen=True)
class SnpCerts:
    """The signing certificate (VCEK or VLEK) and whatever of its chain the evidence came with."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


def load_certs_dir(folder: Path) -> SnpCerts:
    """Read an ``snpguest``-layout folder: ``vcek.pem``/``vlek.der`` plus optional ``ask``/``asvk``/``ark``."""
    leaf: list[x509.Certificate] = []
    chain: list[x509.Certificate] = []
    for stem, role in CERT_NAMES.items():
        for suffix in (".pem", ".der", ".crt", ".cer"):
            path = Path(folder) / f"{stem}{suffix}"
            if not path.exists():
                continue
            try:
                data = read_regular(path, 1024 * 1024)
            except OSError as exc:
                raise EvidenceError("certificate", f"{path}: cannot read: {exc.strerror or exc}") from None
            (leaf if role == "leaf" else chain).extend(load_certificates(data, str(path)))
    if len(leaf) != 1:
        raise EvidenceError("certificate", f"{folder}: expected exactly one vcek or vlek certificate, "
                                           f"found {len(leaf)}")
    return SnpCerts(leaf[0], tuple(chain))


@dataclass(frozen=True)
class _LeafFacts:
    """What a VCEK/VLEK says, extracted once per certificate."""

    kind: str  # "vcek" | "vlek"
    product: str
    tcb: dict[str, int]
    hwid: bytes | None
    key: ec.EllipticCurvePublicKey


def _leaf_facts(cert: x509.Certificate) -> _LeafFacts:
    issuer = common_name(cert.issuer)
    if not issuer.startswith("SEV-"):
        raise EvidenceError("certificate", f"signing certificate issuer {issuer!r} is not an AMD ASK/ASVK")
    kind = "vlek" if issuer.startswith("SEV-VLEK-") else "vcek"
    product = issuer.removeprefix("SEV-VLEK-").removeprefix("SEV-")
    try:
        exts = {e.oid.dotted_string: e.value for e in cert.extensions}
    except (ValueError, x509.DuplicateExtension) as exc:  # not a ValueError (cryptography 42-46)
        raise EvidenceError("certificate", f"{kind.upper()} extensions unreadable: {exc}") from None
    required = (*REQUIRED_TCB, "fmc") if product == "Turin" else REQUIRED_TCB
    missing = [name for name in required if OID_TCB[name] not in exts]
    if missing:
        raise EvidenceError("certificate", f"{kind.upper()} lacks its TCB extension(s): {', '.join(missing)}")
    try:
        tcb = {name: der.integer(exts[oid].value) for name, oid in OID_TCB.items() if oid in exts}
    except (ValueError, AttributeError) as exc:
        raise EvidenceError("certificate", f"{kind.upper()} TCB extension malformed: {exc}") from None
    hwid = getattr(exts.get(OID_HWID), "value", None)
    hwid_size = 8 if product == "Turin" else 64  # Turin's chip id is 8 bytes (the report zero-pads CHIP_ID)
    if kind == "vcek" and (not isinstance(hwid, bytes) or len(hwid) != hwid_size):
        raise EvidenceError("certificate", f"VCEK lacks a {hwid_size}-byte hwID extension (1.3.6.1.4.1.3704.1.4)")
    key = public_key(cert, kind.upper())
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise EvidenceError("certificate", f"{kind.upper()} key is not ECDSA P-384")
    return _LeafFacts(kind, product, tcb, hwid, key)


class SnpVerifier:
    """Verifies reports; chains and per-certificate facts are cached across calls."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust
        self.chains = ChainVerifier(trust)
        self._facts: dict[x509.Certificate, _LeafFacts] = {}
        self._chains: dict[SnpCerts, list[x509.Certificate]] = {}

    def verify(self, data: bytes, certs: SnpCerts, at: dt.datetime) -> Verified:
        report = parse_report(data)
        facts = self._facts_for(certs.leaf)
        expected_kind = {SIGNING_KEY_VCEK: "vcek", SIGNING_KEY_VLEK: "vlek"}[report.signing_key]
        if facts.kind != expected_kind:
            raise EvidenceError("certificate", f"report is signed by a {expected_kind.upper()} but the "
                                               f"certificate given is a {facts.kind.upper()}")
        verify_signature(report, facts.key)
        chain = self._chains.get(certs)
        if chain is None:
            chain = self._chains[certs] = self._chain(certs)
            if len(self._chains) > 1024:
                self._chains.clear()
        self.chains.verify(chain, at, AMD, amd_shape)
        _check_binding(report, facts)
        return _verified(report, facts)

    def _facts_for(self, leaf: x509.Certificate) -> _LeafFacts:
        if leaf not in self._facts:
            if len(self._facts) > 1024:
                self._facts.clear()
            self._facts[leaf] = _leaf_facts(leaf)
        return self._facts[leaf]

    def _chain(self, certs: SnpCerts) -> list[x509.Certificate]:
        """leaf, then its issuer (from the evidence or the shipped intermediates), then the ARK if given."""
        chain = [certs.leaf]
        pool = list(certs.chain)
        while True:
            issuer = next((c for c in pool if c.subject == chain[-1].issuer and c not in chain), None)
            if issuer is None:
                break
            chain.append(issuer)
        if len(chain) == 1:
            shipped = self.trust.intermediate_for(certs.leaf)
            if shipped is None:
                raise EvidenceError("chain", f"no ASK/ASVK for {common_name(certs.leaf.issuer)!r} given or shipped")
            chain.append(shipped)
        return chain


def verify_signature(report: SnpReport, key: ec.EllipticCurvePublicKey) -> None:
    """ECDSA P-384/SHA-384 over bytes 0x000-0x29F (SNP ABI, "Signature Format")."""
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(signature, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise EvidenceError("signature", "SNP report signature does not verify with the "
                                         "VCEK/VLEK public key") from None


def _check_binding(report: SnpReport, facts: _LeafFacts) -> None:
    """The certificate vouches for this chip, this TCB and this product (VCEK spec 57230 section 3)."""
    tcb = report.reported_tcb(facts.product).components()
    mismatched = sorted(k for k, v in facts.tcb.items() if tcb.get(k) != v)
    if mismatched:
        raise EvidenceError("certificate", f"certificate TCB {facts.tcb} does not match the report's "
                                           f"reported TCB {tcb} ({', '.join(mismatched)})")
    if report.cpuid is not None and report.product != facts.product:
        family, model, _ = report.cpuid
        raise EvidenceError("certificate", f"report CPUID family {family:#x} model {model:#x} is not a "
                                           f"{facts.product} (the certificate's product)")
    # MASK_CHIP_KEY reports carry a zero CHIP_ID by construction (checked by the parser): nothing to bind then.
    # Otherwise a zero CHIP_ID (MASK_CHIP_ID) cannot equal a real hwID and is refused like any other mismatch.
    if facts.kind == "vcek" and not report.mask_chip_key and report.chip_id != (facts.hwid or b"").ljust(64, b"\0"):
        raise EvidenceError("certificate", "VCEK hwID does not match the report's chip_id")


def _verified(report: SnpReport, facts: _LeafFacts) -> Verified:
    return Verified(
        tee_type="sev-snp", evidence_format="snp-report", version=report.version,
        sha256=hashlib.sha256(report.raw).hexdigest(), measurement="sha384:" + report.measurement.hex(),
        debug=report.debug_allowed, tcb=report.reported_tcb(facts.product).components(),
        product=facts.product, signer=facts.kind,
        details={"report_data": report.report_data.hex(), "policy": f"{report.policy:#x}",
                 "vmpl": str(report.vmpl), "guest_svn": str(report.guest_svn),
                 "migrate_ma": str(report.migrate_ma_allowed).lower(),
                 "host_data": report.host_data.hex(), "chip_id": report.chip_id.hex()},
    )


def chain_from(certs: Sequence[x509.Certificate]) -> SnpCerts:
    """The first certificate is the VCEK/VLEK, the rest its chain (for callers that have a list)."""
    return SnpCerts(certs[0], tuple(certs[1:]))
