"""Intel TDX quote verification (DCAP ECDSA, quote v4/v5), optionally with collateral.

Steps, after Intel's "Intel TDX DCAP Quote Verification" flow (QVL) and the PCS API's TCB info v3 definition:
1. quote signature: ECDSA P-256/SHA-256 over header+body with the attestation key carried in the quote;
2. QE report signature with the PCK leaf key, and the QE report binding the attestation key
   (report_data[0:32] == SHA-256(attestation key || QE auth data), report_data[32:64] zero);
3. PCK chain in exactly the Intel shape (leaf <- Platform/Processor CA <- Intel SGX Root CA), valid at the time;
4. with collateral:
   - CRLs of the PCK CA and of the root: signed by their issuer, current, not revoking the PCK leaf or its CA;
   - TCB info: a TDX TCB info v3 for the PCK's FMSPC and PCEID, and the QE identity (TD_QE v2), both signed by
     the "Intel SGX TCB Signing" certificate issued directly by the same Intel root as the PCK chain;
   - TCB status from Intel's ordered TCB-level matching (SGX components + PCESVN from the PCK certificate's SGX
     extension, TDX components from TEE_TCB_SVN), the TDX module identity (MRSIGNERSEAM and SEAMATTRIBUTES under
     the mask, from ``tdxModule`` when TEE_TCB_SVN[1] is 0, else ``tdxModuleIdentities`` "TDX_<svn[1]>" whose
     levels give the module's status), and the QE identity (MRSIGNER, ISVPRODID, MISCSELECT and ATTRIBUTES under
     their masks, ISVSVN levels).
   A CRL or QE identity missing from the collateral is a ``collateral`` rejection unless the policy names it in
   ``allow_missing_collateral``.
A TCB status of Revoked, or no matching TCB level ("not supported"), rejects the quote; OutOfDate and the
"...Needed" statuses are reported (``Verified.tcb_status``) for the policy (``allowed_tcb_status``) to judge.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
from collections.abc import Callable, Collection
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from exporter.attest import der
from exporter.attest.collateral import (
    TCB_STATUSES,
    CollateralSet,
    EnclaveLike,
    SignedJson,
    TdxTcbInfo,
    td_qe_identity,
    tdx_tcb_info,
)
from exporter.attest.errors import EvidenceError
from exporter.attest.result import Verified
from exporter.attest.tdx import TdxQuote, parse_quote
from exporter.attest.trust import (
    INTEL,
    INTEL_TCB_SIGNING_CN,
    ChainVerifier,
    TrustStore,
    common_name,
    intel_pck_shape,
    intel_tcb_signing_shape,
    issued_by,
    load_certificates,
    public_key,
)

OID_SGX = "1.2.840.113741.1.13.1"
OID_SGX_TCB, OID_SGX_PCEID, OID_SGX_FMSPC = OID_SGX + ".2", OID_SGX + ".3", OID_SGX + ".4"
STATUS_ORDER = TCB_STATUSES
# Collateral items a policy may allow to be absent (``allow_missing_collateral``).
OPTIONAL_COLLATERAL = ("pck_crl", "root_ca_crl", "qe_identity")
_CACHE_SIZE = 1024
# (CRL, its issuer, the certificate looked up, whether the CRL lists it): a CRL signature checked and a lookup made
_CrlVerdict = tuple[x509.CertificateRevocationList, x509.Certificate, x509.Certificate, bool]
# (item, PCK chain root, collateral set, signer chain valid from, valid until): a collateral signature checked
_SignedOk = tuple[SignedJson, x509.Certificate, CollateralSet, dt.datetime, dt.datetime]


def _ecdsa_p256(key: ec.EllipticCurvePublicKey, raw_sig: bytes, data: bytes, what: str) -> None:
    sig = encode_dss_signature(int.from_bytes(raw_sig[:32], "big"), int.from_bytes(raw_sig[32:], "big"))
    try:
        key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise EvidenceError("signature", f"{what} does not verify") from None


def attestation_key(quote: TdxQuote) -> ec.EllipticCurvePublicKey:
    return _p256_point(quote.attestation_key)


@functools.lru_cache(maxsize=256)
def _p256_point(raw: bytes) -> ec.EllipticCurvePublicKey:
    """x||y as a key; memoised because a host's Quoting Enclave signs all its quotes with one attestation key."""
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"),
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
    pce_id: str = "0000"


def pck_facts(chain_pem: bytes) -> PckFacts:
    """The PCK leaf's key and SGX extension (SGX PCK Certificate and CRL Profile, "SGX Extensions")."""
    chain = load_certificates(chain_pem, "PCK certificate chain")
    if len(chain) < 2:
        raise EvidenceError("chain", f"PCK chain has {len(chain)} certificate(s), need leaf and CA")
    key = public_key(chain[0], "PCK certificate")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise EvidenceError("certificate", "PCK key is not ECDSA P-256")
    try:
        ext = chain[0].extensions.get_extension_for_oid(x509.ObjectIdentifier(OID_SGX)).value
        _tag, seq, _ = der.read_tlv(ext.value)  # type: ignore[attr-defined]
        fields = der.oid_map(seq)
        tcb = der.oid_map(fields[OID_SGX_TCB][1])
        svns = tuple(der.decode_integer(tcb[f"{OID_SGX_TCB}.{i}"][1]) for i in range(1, 17))
        pcesvn = der.decode_integer(tcb[f"{OID_SGX_TCB}.17"][1])
        fmspc, pce_id = fields[OID_SGX_FMSPC][1].hex(), fields[OID_SGX_PCEID][1].hex()
    except (x509.ExtensionNotFound, KeyError, ValueError, AttributeError) as exc:
        raise EvidenceError("certificate", f"PCK certificate SGX extension unreadable: {exc!r}") from None
    if len(fmspc) != 12 or len(pce_id) != 4:
        raise EvidenceError("certificate", "PCK certificate FMSPC/PCEID of the wrong size")
    return PckFacts(tuple(chain), key, fmspc, svns, pcesvn, pce_id)


class TdxVerifier:
    """Verifies quotes; PCK chains, TCB-signing chains and collateral signatures are verified once and cached."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust
        self.chains = ChainVerifier(trust)
        self._pck: dict[bytes, PckFacts] = {}
        # Keyed by id() and holding the objects themselves, so an id reused after garbage collection never matches
        # (and no certificate is hashed, which means hashing its DER, on the hot path).
        self._signed_ok: dict[tuple[int, int, int], _SignedOk] = {}
        self._typed: dict[int, tuple[SignedJson, TdxTcbInfo | EnclaveLike]] = {}
        self._crl_ok: dict[tuple[int, int, int], _CrlVerdict] = {}

    def verify(self, data: bytes, at: dt.datetime, collateral: CollateralSet | None = None,
               allow_missing: Collection[str] = ()) -> Verified:
        quote = parse_quote(data)
        pck = self.pck(quote.pck_chain_pem)
        verify_quote_signatures(quote, pck.key)
        full_chain = self.chains.verify(pck.chain, at, INTEL, intel_pck_shape)
        warnings: list[str] = []
        status = None
        if collateral is not None:
            status = self._check_collateral(quote, pck, full_chain, collateral, at, warnings, allow_missing)
        else:
            warnings.append("no collateral: TCB status and revocation not checked")
        return _verified(quote, pck, status, warnings)

    def pck(self, chain_pem: bytes) -> PckFacts:
        facts = self._pck.get(chain_pem)
        if facts is None:
            if len(self._pck) > _CACHE_SIZE:
                self._pck.clear()
            facts = self._pck[chain_pem] = pck_facts(chain_pem)
        return facts

    def _check_collateral(self, quote: TdxQuote, pck: PckFacts, chain: tuple[x509.Certificate, ...],
                          collateral: CollateralSet, at: dt.datetime, warnings: list[str],
                          allow_missing: Collection[str]) -> str:
        _check_crls(chain, collateral, at, warnings, self._crl_ok, allow_missing)
        root = chain[-1]
        item = _select(collateral.tcb_infos, at, lambda d: _tcb_info_for(d, pck), _tcb_info_what(collateral, pck))
        self._check_signed(item, collateral, root, at)
        tcb_info = self._typed_view(item, tdx_tcb_info)
        assert isinstance(tcb_info, TdxTcbInfo)
        if tcb_info.pce_id != pck.pce_id:
            raise EvidenceError("collateral", f"TCB info PCEID {tcb_info.pce_id} is not the PCK's {pck.pce_id}")
        statuses = [platform_status(tcb_info, pck, quote), module_status(tcb_info, quote)]
        statuses.append(self._qe_status(quote, collateral, root, at, warnings, allow_missing))
        status = max((s for s in statuses if s), key=STATUS_ORDER.index)
        if status == "Revoked":
            raise EvidenceError("revoked", "TCB status is Revoked")
        if status != "UpToDate":
            warnings.append(f"TCB status {status}")
        return status

    def _qe_status(self, quote: TdxQuote, collateral: CollateralSet, root: x509.Certificate, at: dt.datetime,
                   warnings: list[str], allow_missing: Collection[str]) -> str | None:
        candidates = [q for q in collateral.qe_identities if q.doc.get("id") == "TD_QE"]
        if not candidates:
            if "qe_identity" not in allow_missing:
                raise EvidenceError("collateral", "no TD_QE identity in the collateral (the policy's "
                                                  "allow_missing_collateral does not name qe_identity)")
            warnings.append("no TD_QE identity in collateral: Quoting Enclave identity not checked")
            return None
        item = _select(candidates, at, lambda d: True, "TD_QE identity")
        self._check_signed(item, collateral, root, at)
        identity = self._typed_view(item, td_qe_identity)
        assert isinstance(identity, EnclaveLike)
        return qe_status(identity, quote)

    def _typed_view(self, item: SignedJson, parse: Callable[[dict], TdxTcbInfo | EnclaveLike]) \
            -> TdxTcbInfo | EnclaveLike:
        entry = self._typed.get(id(item))
        if entry is None or entry[0] is not item:
            if len(self._typed) > _CACHE_SIZE:
                self._typed.clear()
            entry = self._typed[id(item)] = (item, parse(item.doc))
        return entry[1]

    def _check_signed(self, item: SignedJson, collateral: CollateralSet, root: x509.Certificate,
                      at: dt.datetime) -> None:
        """Signed by the TCB Signing certificate directly under ``root`` (the PCK chain's root)."""
        memo_key = (id(item), id(root), id(collateral))
        done = self._signed_ok.get(memo_key)
        if done is not None and done[0] is item and done[1] is root and done[2] is collateral \
                and done[3] <= at <= done[4]:
            return  # these very objects were checked, and the signer chain is valid at ``at``; all are immutable
        signer = _signer_for(item, collateral, root)
        try:
            full = self.chains.verify([signer], at, INTEL, intel_tcb_signing_shape)
        except EvidenceError as exc:
            raise EvidenceError("expired" if exc.reason == "expired" else "collateral",
                                f"{item.kind} signer: {exc}") from None
        if full[-1] != root:
            raise EvidenceError("collateral", f"{item.kind}: TCB Signing certificate is not under the PCK "
                                              "chain's Intel root")
        try:
            key = public_key(signer, f"{item.kind} signer")
        except EvidenceError as exc:
            raise EvidenceError("collateral", str(exc)) from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise EvidenceError("collateral", f"{item.kind}: signing key is not ECDSA P-256")
        try:
            _ecdsa_p256(key, item.signature, item.body, f"{item.kind} signature")
        except EvidenceError as exc:
            raise EvidenceError("collateral", str(exc)) from None
        if len(self._signed_ok) > _CACHE_SIZE:
            self._signed_ok.clear()
        self._signed_ok[memo_key] = (item, root, collateral, max(c.not_valid_before_utc for c in full),
                                 min(c.not_valid_after_utc for c in full))


def _signer_for(item: SignedJson, collateral: CollateralSet, root: x509.Certificate) -> x509.Certificate:
    """The item's own issuer chain's leaf, else the collateral's TCB Signing certificate named as issued by ``root``."""
    if item.chain:
        return item.chain[0]
    named = [c for c in collateral.certs if common_name(c.subject) == INTEL_TCB_SIGNING_CN]
    # By signature, not only by name: two configured roots may share the Intel root's name (a test hierarchy).
    under_root = [c for c in named if c.issuer == root.subject and issued_by(c, root)]
    if not named:
        raise EvidenceError("collateral", f"{item.kind}: no {INTEL_TCB_SIGNING_CN} certificate in the collateral")
    return (under_root or named)[0]


def _tcb_info_for(doc: dict, pck: PckFacts) -> bool:
    return doc.get("id") == "TDX" and str(doc.get("fmspc", "")).lower() == pck.fmspc


def _tcb_info_what(collateral: CollateralSet, pck: PckFacts) -> str:
    """Names what is missing; says so when only an SGX (or other) TCB info exists for this FMSPC."""
    others = sorted({str(i.doc.get("id"))[:10] for i in collateral.tcb_infos
                     if str(i.doc.get("fmspc", "")).lower() == pck.fmspc and i.doc.get("id") != "TDX"})
    return f"TDX TCB info for FMSPC {pck.fmspc}" + (f" (only {', '.join(others)} TCB info)" if others else "")


def _select(items: list[SignedJson], at: dt.datetime, match: Callable[[dict], bool], what: str) -> SignedJson:
    """The matching item valid at ``at`` (newest first); only stale ones is ``expired``, only future ones or none
    at all is ``collateral``."""
    candidates = [i for i in items if match(i.doc)]
    if not candidates:
        raise EvidenceError("collateral", f"no {what} in the collateral")
    current = [i for i in candidates if i.issue_date <= at <= i.next_update]
    if current:
        return max(current, key=lambda i: i.issue_date)
    newest = max(candidates, key=lambda i: i.issue_date)
    if all(i.issue_date > at for i in candidates):
        raise EvidenceError("collateral", f"{what} is not yet valid at {at.isoformat()} (issued "
                                          f"{newest.issue_date.isoformat()})")
    raise EvidenceError("expired", f"{what} is not valid at {at.isoformat()} (issued "
                                   f"{newest.issue_date.isoformat()}, next update {newest.next_update.isoformat()})")


def _check_crls(chain: tuple[x509.Certificate, ...], collateral: CollateralSet, at: dt.datetime,
                warnings: list[str],
                checked: dict[tuple[int, int, int], _CrlVerdict],
                allow_missing: Collection[str]) -> None:
    """Each CA in the chain: its CRL signed by it, current, and not revoking the child (PCK CRL, Root CA CRL)."""
    for child, issuer in itertools.pairwise(chain):
        which = "root_ca_crl" if issuer is chain[-1] else "pck_crl"  # the full chain ends at the root
        crls = collateral.crls_from(issuer)
        if not crls:
            if which not in allow_missing:
                raise EvidenceError("collateral", f"no CRL from {common_name(issuer.subject)!r} in the collateral "
                                                  f"(the policy's allow_missing_collateral does not name {which})")
            warnings.append(f"no CRL from {common_name(issuer.subject)!r}: revocation not checked")
            continue
        crl = _current_crl(crls, issuer, at)
        done = checked.get((id(crl), id(issuer), id(child)))
        if done is None or done[0] is not crl or done[1] is not issuer or done[2] is not child:
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                raise EvidenceError("collateral", f"CRL of {common_name(issuer.subject)!r} has a bad signature")
            if len(checked) > _CACHE_SIZE:
                checked.clear()
            revoked = crl.get_revoked_certificate_by_serial_number(child.serial_number) is not None
            done = checked[(id(crl), id(issuer), id(child))] = (crl, issuer, child, revoked)
        if done[3]:
            raise EvidenceError("revoked", f"{common_name(child.subject)!r} (serial "
                                           f"{child.serial_number:x}) is revoked")


def _current_crl(crls: list[x509.CertificateRevocationList], issuer: x509.Certificate,
                 at: dt.datetime) -> x509.CertificateRevocationList:
    current = [c for c in crls if c.last_update_utc <= at <= (c.next_update_utc or at)]
    if current:
        return max(current, key=lambda c: c.last_update_utc)
    if all(c.last_update_utc > at for c in crls):
        raise EvidenceError("collateral", f"CRL of {common_name(issuer.subject)!r} is not yet valid at "
                                          f"{at.isoformat()}")
    raise EvidenceError("expired", f"CRL of {common_name(issuer.subject)!r} is not current at {at.isoformat()}")


def platform_status(tcb_info: TdxTcbInfo, pck: PckFacts, quote: TdxQuote) -> str:
    """First TCB level whose SGX, PCESVN and TDX components are all met (Intel's ordered matching)."""
    tee = quote.report.tee_tcb_svn
    skip = 2 if tee[1] > 0 else 0  # a versioned TDX module's SVNs are judged by its module identity instead
    for level in tcb_info.levels:
        if all(a <= b for a, b in zip(level.sgx, pck.sgx_svns, strict=True)) and level.pcesvn <= pck.pcesvn \
                and all(a <= b for a, b in list(zip(level.tdx, tee, strict=True))[skip:]):
            return level.status
    raise EvidenceError("tcb", f"TCB level not supported: the platform TCB is below every level in the TCB info "
                               f"(FMSPC {pck.fmspc})")


def _masked_equal(have: bytes, want: bytes, mask: bytes) -> bool:
    return len(have) == len(want) == len(mask) and all((h & m) == (w & m) for h, w, m in zip(have, want, mask,
                                                                                                strict=True))


def module_status(tcb_info: TdxTcbInfo, quote: TdxQuote) -> str | None:
    """TDX module identity (TCB info v3 ``tdxModule`` / ``tdxModuleIdentities``); its status when versioned."""
    tee, report = quote.report.tee_tcb_svn, quote.report
    if tee[1] == 0:
        identity, wanted = tcb_info.module, "tdxModule"
    else:
        wanted = f"TDX_{tee[1]:02X}"
        found = tcb_info.module_identities.get(wanted)
        if found is None:
            raise EvidenceError("tcb", f"TDX module identity {wanted} not in the TCB info")
        identity = found
    if report.mrsignerseam != identity.mrsigner:
        raise EvidenceError("tcb", f"TDX module MRSIGNERSEAM does not match {wanted}")
    if not _masked_equal(report.seam_attributes, identity.attributes, identity.attributes_mask):
        raise EvidenceError("tcb", f"TDX module SEAMATTRIBUTES do not match {wanted} under its mask")
    if tee[1] == 0:
        return None
    for isvsvn, status in identity.levels:
        if isvsvn <= tee[0]:
            return status
    raise EvidenceError("tcb", f"TDX module {wanted} SVN {tee[0]} below every level")


def qe_status(identity: EnclaveLike, quote: TdxQuote) -> str:
    """TD_QE identity: a mismatch means the collateral does not vouch for this QE (``collateral``)."""
    qe = quote.qe_report
    if identity.mrsigner != qe.mrsigner or identity.isvprodid != qe.isvprodid:
        raise EvidenceError("collateral", "Quoting Enclave MRSIGNER/ISVPRODID do not match the TD_QE identity")
    if qe.miscselect & identity.miscselect_mask != identity.miscselect & identity.miscselect_mask:
        raise EvidenceError("collateral", "Quoting Enclave MISCSELECT does not match the TD_QE identity")
    if not _masked_equal(qe.attributes, identity.attributes, identity.attributes_mask):
        raise EvidenceError("collateral", "Quoting Enclave ATTRIBUTES do not match the TD_QE identity")
    for isvsvn, status in identity.levels:
        if isvsvn <= qe.isvsvn:
            return status
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
