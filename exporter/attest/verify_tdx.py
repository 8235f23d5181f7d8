"""Intel TDX quote verification (DCAP ECDSA, quote v4/v5), optionally with collateral.

Steps, after Intel's "Intel TDX DCAP Quote Verification" flow:
1. quote signature: ECDSA P-256/SHA-256 over header+body with the attestation key carried in the quote;
2. QE report signature with the PCK leaf key, and the QE report binding the attestation key
   (report_data[0:32] == SHA-256(attestation key || QE auth data), report_data[32:64] zero);
3. PCK chain (leaf <- Platform/Processor CA <- Intel SGX Root CA) to a trusted root, valid at the given time;
4. with collateral: TCB info and QE identity signatures (TCB Signing chain to the root), CRL revocation of the
   PCK leaf and CA, and the TCB status from Intel's TCB-level matching (SGX components + PCESVN from the PCK
   certificate's SGX extension, TDX components from TEE_TCB_SVN; TDX module identity by TEE_TCB_SVN[1]).
A TCB status of Revoked, or no matching TCB level ("not supported"), rejects the quote; OutOfDate and the
"...Needed" statuses are reported (``Verified.tcb_status``) for the policy and the operator to judge.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from exporter.attest import der
from exporter.attest.collateral import CollateralSet, SignedJson
from exporter.attest.errors import EvidenceError
from exporter.attest.result import Verified
from exporter.attest.tdx import TdxQuote, parse_quote
from exporter.attest.trust import ChainVerifier, TrustStore, common_name, fingerprint, load_certificates

OID_SGX = "1.2.840.113741.1.13.1"
OID_SGX_TCB, OID_SGX_FMSPC = OID_SGX + ".2", OID_SGX + ".4"
STATUS_ORDER = ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
                "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked")


def _ecdsa_p256(key: ec.EllipticCurvePublicKey, raw_sig: bytes, data: bytes, what: str) -> None:
    sig = encode_dss_signature(int.from_bytes(raw_sig[:32], "big"), int.from_bytes(raw_sig[32:], "big"))
    try:
        key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise EvidenceError("signature", f"{what} does not verify") from None


def attestation_key(quote: TdxQuote) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(quote.attestation_key[:32], "big"),
                                             int.from_bytes(quote.attestation_key[32:], "big"),
                                             ec.SECP256R1()).public_key()
    except ValueError:
        raise EvidenceError("signature", "attestation key is not a valid P-256 point") from None


def verify_quote_signatures(quote: TdxQuote, pck_key: ec.EllipticCurvePublicKey) -> None:
    """The raw signature checks (steps 1-2); the benchmark measures these alone as the baseline."""
    _ecdsa_p256(attestation_key(quote), quote.signature, quote.signed_bytes, "quote signature")
    _ecdsa_p256(pck_key, quote.qe_report_signature, quote.qe_report.raw, "QE report signature (PCK key)")
    binding = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest()
    if quote.qe_report.report_data != binding + bytes(32):
        raise EvidenceError("signature", "QE report does not bind the attestation key")


@dataclass(frozen=True)
class PckFacts:
    chain: tuple[x509.Certificate, ...]
    key: ec.EllipticCurvePublicKey
    fmspc: str
    sgx_svns: tuple[int, ...]
    pcesvn: int


def pck_facts(chain_pem: bytes) -> PckFacts:
    chain = load_certificates(chain_pem, "PCK certificate chain")
    if len(chain) < 2:
        raise EvidenceError("chain", f"PCK chain has {len(chain)} certificate(s), need leaf and CA")
    key = chain[0].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise EvidenceError("certificate", "PCK key is not ECDSA")
    try:
        ext = chain[0].extensions.get_extension_for_oid(x509.ObjectIdentifier(OID_SGX)).value
        _tag, seq, _ = der.read_tlv(ext.value)  # type: ignore[attr-defined]
        fields = der.oid_map(seq)
        tcb = der.oid_map(fields[OID_SGX_TCB][1])
        svns = tuple(der.decode_integer(tcb[f"{OID_SGX_TCB}.{i}"][1]) for i in range(1, 17))
        pcesvn = der.decode_integer(tcb[f"{OID_SGX_TCB}.17"][1])
        fmspc = fields[OID_SGX_FMSPC][1].hex()
    except (x509.ExtensionNotFound, KeyError, ValueError) as exc:
        raise EvidenceError("certificate", f"PCK certificate SGX extension unreadable: {exc!r}") from None
    return PckFacts(tuple(chain), key, fmspc, svns, pcesvn)


class TdxVerifier:
    """Verifies quotes; PCK chains and TCB-signing chains are verified once and cached."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust
        self.chains = ChainVerifier(trust)
        self._pck: dict[bytes, PckFacts] = {}
        # id -> the object itself, so an id reused by a new object after garbage collection never matches
        self._signed_ok: dict[int, SignedJson] = {}
        self._crl_ok: dict[tuple[int, x509.Certificate], x509.CertificateRevocationList] = {}

    def verify(self, data: bytes, at: dt.datetime, collateral: CollateralSet | None = None) -> Verified:
        quote = parse_quote(data)
        pck = self.pck(quote.pck_chain_pem)
        verify_quote_signatures(quote, pck.key)
        full_chain = self.chains.verify(pck.chain, at)
        warnings: list[str] = []
        status = None
        if collateral is not None:
            status = self._check_collateral(quote, pck, full_chain, collateral, at, warnings)
        else:
            warnings.append("no collateral: TCB status and revocation not checked")
        return _verified(quote, pck, status, warnings)

    def pck(self, chain_pem: bytes) -> PckFacts:
        facts = self._pck.get(chain_pem)
        if facts is None:
            if len(self._pck) > 1024:
                self._pck.clear()
            facts = self._pck[chain_pem] = pck_facts(chain_pem)
        return facts

    def _check_collateral(self, quote: TdxQuote, pck: PckFacts, chain: tuple[x509.Certificate, ...],
                          collateral: CollateralSet, at: dt.datetime, warnings: list[str]) -> str:
        _check_crls(chain, collateral, at, warnings, self._crl_ok)
        tcb_info = _select(collateral.tcb_infos, at, lambda d: str(d.get("fmspc", "")).lower() == pck.fmspc,
                           f"TCB info for FMSPC {pck.fmspc}")
        self._check_signed(tcb_info, collateral, at)
        statuses = [platform_status(tcb_info.doc, pck, quote), module_status(tcb_info.doc, quote)]
        qe_candidates = [q for q in collateral.qe_identities if q.doc.get("id") == "TD_QE"]
        if qe_candidates:
            qe = _select(qe_candidates, at, lambda d: True, "TD_QE identity")
            self._check_signed(qe, collateral, at)
            statuses.append(qe_status(qe.doc, quote))
        else:
            warnings.append("no TD_QE identity in collateral: Quoting Enclave identity not checked")
        status = max((s for s in statuses if s), key=STATUS_ORDER.index, default="UpToDate")
        if status == "Revoked":
            raise EvidenceError("revoked", "TCB status is Revoked")
        if status != "UpToDate":
            warnings.append(f"TCB status {status}")
        return status

    def _check_signed(self, item: SignedJson, collateral: CollateralSet, at: dt.datetime) -> None:
        signer_chain = list(item.chain) or [c for c in collateral.certs
                                            if common_name(c.subject) == "Intel SGX TCB Signing"][:1]
        if not signer_chain:
            raise EvidenceError("collateral", f"{item.kind}: no Intel SGX TCB Signing certificate in collateral")
        signer_chain = [c for c in signer_chain if c.subject != c.issuer] or signer_chain
        self.chains.verify(signer_chain, at)
        if self._signed_ok.get(id(item)) is item:
            return  # this very object's signature was checked already; collateral objects are immutable
        key = signer_chain[0].public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise EvidenceError("collateral", f"{item.kind}: signing key is not ECDSA")
        try:
            _ecdsa_p256(key, item.signature, item.body, f"{item.kind} signature")
        except EvidenceError as exc:
            raise EvidenceError("collateral", str(exc)) from None
        if len(self._signed_ok) > 1024:
            self._signed_ok.clear()
        self._signed_ok[id(item)] = item


def _select(items: list[SignedJson], at: dt.datetime, match: Any, what: str) -> SignedJson:
    """The matching item valid at ``at``; stale-only is ``expired``, none is ``collateral``."""
    candidates = [i for i in items if match(i.doc)]
    if not candidates:
        raise EvidenceError("collateral", f"no {what} in the collateral")
    current = [i for i in candidates if i.issue_date <= at <= i.next_update]
    if not current:
        newest = max(candidates, key=lambda i: i.issue_date)
        raise EvidenceError("expired", f"{what} is not valid at {at.isoformat()} (issued "
                                       f"{newest.issue_date.isoformat()}, next update "
                                       f"{newest.next_update.isoformat()})")
    return max(current, key=lambda i: i.issue_date)


def _check_crls(chain: tuple[x509.Certificate, ...], collateral: CollateralSet, at: dt.datetime,
                warnings: list[str], checked: dict[tuple[int, x509.Certificate], Any]) -> None:
    """Each CA in the chain with a CRL in the collateral: CRL signed by it, current, and not revoking the child."""
    for child, issuer in itertools.pairwise(chain):
        crls = collateral.crls_from(issuer)
        if not crls:
            warnings.append(f"no CRL from {common_name(issuer.subject)!r}: revocation not checked")
            continue
        current = [c for c in crls if c.last_update_utc <= at <= (c.next_update_utc or at)]
        if not current:
            raise EvidenceError("expired", f"CRL of {common_name(issuer.subject)!r} is not current at "
                                           f"{at.isoformat()}")
        crl = max(current, key=lambda c: c.last_update_utc)
        if checked.get((id(crl), issuer)) is not crl:
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                raise EvidenceError("collateral", f"CRL of {common_name(issuer.subject)!r} has a bad signature")
            if len(checked) > 1024:
                checked.clear()
            checked[(id(crl), issuer)] = crl
        if crl.get_revoked_certificate_by_serial_number(child.serial_number) is not None:
            raise EvidenceError("revoked", f"{common_name(child.subject)!r} (serial "
                                           f"{child.serial_number:x}) is revoked")


def _svn_list(components: Any) -> list[int]:
    return [int(c.get("svn", 0)) for c in components or []]


def platform_status(tcb_info: dict[str, Any], pck: PckFacts, quote: TdxQuote) -> str:
    """First TCB level whose SGX, PCESVN and TDX components are all met (Intel's ordered matching)."""
    tee = quote.report.tee_tcb_svn
    skip = 2 if tee[1] > 0 else 0  # TDX module SVNs are judged by the module identity instead
    for level in tcb_info.get("tcbLevels", []):
        tcb = level.get("tcb", {})
        sgx, tdx = _svn_list(tcb.get("sgxtcbcomponents")), _svn_list(tcb.get("tdxtcbcomponents"))
        if all(a <= b for a, b in zip(sgx, pck.sgx_svns, strict=False)) and int(tcb.get("pcesvn", 0)) <= pck.pcesvn \
                and all(a <= b for a, b in list(zip(tdx, tee, strict=False))[skip:]):
            return str(level.get("tcbStatus"))
    raise EvidenceError("tcb", f"TCB level not supported: the platform TCB is below every level in the TCB info "
                               f"(FMSPC {pck.fmspc})")


def module_status(tcb_info: dict[str, Any], quote: TdxQuote) -> str | None:
    tee = quote.report.tee_tcb_svn
    if tee[1] == 0:
        return None
    wanted = f"TDX_{tee[1]:02X}"
    for identity in tcb_info.get("tdxModuleIdentities", []):
        if str(identity.get("id", "")).upper() != wanted:
            continue
        if bytes.fromhex(identity.get("mrsigner", "")) != quote.report.mrsignerseam:
            raise EvidenceError("tcb", f"TDX module signer does not match identity {wanted}")
        for level in identity.get("tcbLevels", []):
            if int(level.get("tcb", {}).get("isvsvn", 0)) <= tee[0]:
                return str(level.get("tcbStatus"))
        raise EvidenceError("tcb", f"TDX module {wanted} SVN {tee[0]} below every level")
    raise EvidenceError("tcb", f"TDX module identity {wanted} not in the TCB info")


def qe_status(identity: dict[str, Any], quote: TdxQuote) -> str:
    qe = quote.qe_report
    if bytes.fromhex(identity.get("mrsigner", "")) != qe.mrsigner or \
            int(identity.get("isvprodid", -1)) != qe.isvprodid:
        raise EvidenceError("tcb", "Quoting Enclave signer/product does not match the TD_QE identity")
    mask = int(identity.get("miscselectMask", "0"), 16)
    if qe.miscselect & mask != int(identity.get("miscselect", "0"), 16) & mask:
        raise EvidenceError("tcb", "Quoting Enclave MISCSELECT does not match the TD_QE identity")
    attr_mask = bytes.fromhex(identity.get("attributesMask", "00" * 16))
    attrs = bytes.fromhex(identity.get("attributes", "00" * 16))
    if any((a & m) != (b & m) for a, b, m in zip(qe.attributes, attrs, attr_mask, strict=False)):
        raise EvidenceError("tcb", "Quoting Enclave ATTRIBUTES do not match the TD_QE identity")
    for level in identity.get("tcbLevels", []):
        if int(level.get("tcb", {}).get("isvsvn", 0)) <= qe.isvsvn:
            return str(level.get("tcbStatus"))
    raise EvidenceError("tcb", f"Quoting Enclave ISVSVN {qe.isvsvn} below every TD_QE level")


def _verified(quote: TdxQuote, pck: PckFacts, status: str | None, warnings: list[str]) -> Verified:
    r = quote.report
    tcb = {f"tee_tcb_svn_{i}": v for i, v in enumerate(r.tee_tcb_svn[:3])}
    tcb["qe_isvsvn"] = quote.qe_report.isvsvn
    tcb["pcesvn"] = pck.pcesvn
    details = {"report_data": r.report_data.hex(), "mrseam": r.mrseam.hex(), "td_attributes":
               f"{r.td_attributes:#018x}", "tee_tcb_svn": r.tee_tcb_svn.hex(), "fmspc": pck.fmspc,
               # SGX TCB comp 01..16 SVNs of the (chain-verified) PCK certificate, for min_tcb_level.sgx_tcb;
               # the profile defines each as INTEGER 0..255; DER INTEGERs are signed and a certificate under an
               # operator-added root may say anything, so clamp to keep bytes() total (negative reads as 0).
               "sgx_tcb_svn": bytes(max(0, min(v, 255)) for v in pck.sgx_svns).hex(),
               **{f"rtmr{i}": m.hex() for i, m in enumerate(r.rtmrs)}}
    return Verified(
        tee_type="tdx", evidence_format="tdx-quote", version=quote.version,
        sha256=hashlib.sha256(quote.raw).hexdigest(), measurement="sha384:" + r.mrtd.hex(), debug=r.debug,
        tcb=tcb, tcb_status=status, product=pck.fmspc, signer="pck", warnings=tuple(warnings),
        details=details,
    )


def pck_fingerprint(chain: tuple[x509.Certificate, ...]) -> str:
    return fingerprint(chain[0])
