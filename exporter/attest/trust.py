"""Trust anchors per vendor and the exact X.509 chain shapes the SNP and TDX verifiers accept.

The shipped anchors are the AMD ARKs (Milan, Genoa, Turin) and the Intel SGX Root CA; their SHA-256 fingerprints
are pinned below so a corrupted package cannot silently widen trust. Extra roots (``--trust-root``, e.g. a private
test hierarchy) are *added*, and each is filed under its vendor by its name (``ARK-<product>`` or ``Intel SGX Root
CA``), so an AMD root can never anchor an Intel chain or the reverse; a root that is neither is refused.

A chain is accepted only in its vendor's shape, not merely because every signature verifies:
- AMD (VCEK spec 57230, section 2 "Certificate chain"): VCEK <- ASK <- ARK, or VLEK <- ASVK <- ARK, exactly three.
- Intel (SGX PCK Certificate and CRL Profile): PCK leaf <- PCK Platform/Processor CA <- Intel SGX Root CA, and the
  collateral signer "Intel SGX TCB Signing" directly under the Intel root.
Every issuer must be a CA (basicConstraints cA, pathLenConstraint large enough, keyUsage keyCertSign when the
extension is present); a leaf must not be one. So whoever holds one VCEK or PCK private key cannot mint more.

Chain results are cached by the certificates' identities, since the same chain signs every report a host
produces; validity periods are still checked against the verification time on every call.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from exporter.attest.errors import EvidenceError
from exporter.attest.regular import read_regular

ROOT_FINGERPRINT_PREFIXES = {
    "ARK-Milan": "69d063b45344d26a",
    "ARK-Genoa": "4c6598d19c18719c",
    "ARK-Turin": "1f084161a44bb6d9",
    "Intel SGX Root CA": "44a0196b2b99f889",
}
SHIPPED_FILES = ("amd-milan.pem", "amd-genoa.pem", "amd-turin.pem", "amd-milan-vlek.pem", "intel-sgx-root-ca.pem")
AMD, INTEL = "amd", "intel"
INTEL_ROOT_CN = "Intel SGX Root CA"
INTEL_PCK_CA_CNS = ("Intel SGX PCK Platform CA", "Intel SGX PCK Processor CA")
INTEL_PCK_CN = "Intel SGX PCK Certificate"
INTEL_TCB_SIGNING_CN = "Intel SGX TCB Signing"
_ARK_RE = re.compile(r"ARK-([A-Za-z]+)")
_CACHE_SIZE = 1024


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """PEM (one or many) or a single DER certificate; errors are ``EvidenceError("certificate")``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some real AMD certs have non-positive serials; still valid DER
        try:
            if b"-----BEGIN" in data:
                certs = x509.load_pem_x509_certificates(data.rstrip(b"\0"))
            else:
                certs = [x509.load_der_x509_certificate(data)]
            for cert in certs:  # cryptography decodes these lazily: make a malformed one fail here, typed
                _ = (cert.subject, cert.issuer, cert.extensions, cert.not_valid_before_utc, cert.not_valid_after_utc)
            return certs
        except (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension) as exc:
            raise EvidenceError("certificate", f"{what}: not a valid certificate: {str(exc)[:200]}") from None


def public_key(cert: x509.Certificate, what: str) -> CertificatePublicKeyTypes:
    """The certificate's key; an invalid point or unknown curve is ``EvidenceError("certificate")``."""
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EvidenceError("certificate", f"{what}: unusable public key: {exc}") from None


def common_name(name: x509.Name) -> str:
    try:
        attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except ValueError:
        return ""
    return str(attrs[0].value) if attrs else ""


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False


def check_validity(certs: Iterable[x509.Certificate], at: dt.datetime) -> None:
    for cert in certs:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise EvidenceError("expired", f"certificate {common_name(cert.subject)!r} is not valid at "
                                           f"{at.isoformat()} (valid {cert.not_valid_before_utc.isoformat()} "
                                           f"to {cert.not_valid_after_utc.isoformat()})")


def root_vendor(cert: x509.Certificate) -> str | None:
    """``amd`` for an ``ARK-<product>``, ``intel`` for the ``Intel SGX Root CA``, else ``None``."""
    name = common_name(cert.subject)
    if _ARK_RE.fullmatch(name):
        return AMD
    return INTEL if name == INTEL_ROOT_CN else None


@dataclass(frozen=True)
class TrustStore:
    """Self-signed anchors (each filed under its vendor) plus known intermediates (ASK/ASVK) for AMD chains."""

    anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]

    @classmethod
    def default(cls, extra_roots: Sequence[Path] = ()) -> TrustStore:
        anchors: list[x509.Certificate] = []
        intermediates: list[x509.Certificate] = []
        folder = resources.files("exporter.attest.roots")
        for name in SHIPPED_FILES:
            for cert in load_certificates(folder.joinpath(name).read_bytes(), name):
                (anchors if cert.subject == cert.issuer else intermediates).append(cert)
        _check_pins(anchors)
        for path in extra_roots:
            try:
                data = read_regular(Path(path), 1024 * 1024)
            except OSError as exc:
                raise EvidenceError("certificate", f"{path}: cannot read trust root: {exc.strerror}") from None
            for cert in load_certificates(data, str(path)):
                if cert.subject == cert.issuer:
                    _check_extra_root(cert, str(path))
                    anchors.append(cert)
                else:
                    intermediates.append(cert)
        return cls(tuple(_dedupe(anchors)), tuple(_dedupe(intermediates)))

    def anchors_of(self, vendor: str) -> tuple[x509.Certificate, ...]:
        return tuple(a for a in self.anchors if root_vendor(a) == vendor)

    def intermediate_for(self, leaf: x509.Certificate) -> x509.Certificate | None:
        for cert in self.intermediates:
            if cert.subject == leaf.issuer and issued_by(leaf, cert):
                return cert
        return None

    def anchor_for(self, cert: x509.Certificate, vendor: str) -> x509.Certificate | None:
        """The ``vendor`` anchor that is ``cert`` or directly issued it (never another vendor's root)."""
        for anchor in self.anchors_of(vendor):
            if cert == anchor or (anchor.subject == cert.issuer and issued_by(cert, anchor)):
                return anchor
        return None


def _check_extra_root(cert: x509.Certificate, what: str) -> None:
    if root_vendor(cert) is None:
        raise EvidenceError("certificate", f"{what}: trust root {common_name(cert.subject)!r} is neither an AMD "
                                           f"ARK (ARK-<product>) nor the {INTEL_ROOT_CN!r}")
    if not issued_by(cert, cert):
        raise EvidenceError("certificate", f"{what}: trust root self-signature does not verify")
    try:
        _check_ca(cert, 1)
    except EvidenceError as exc:
        raise EvidenceError("certificate", f"{what}: {exc}") from None


def _check_pins(anchors: list[x509.Certificate]) -> None:
    found = {common_name(a.subject): fingerprint(a)[:16] for a in anchors}
    for name, prefix in ROOT_FINGERPRINT_PREFIXES.items():
        if found.get(name) != prefix:
            raise RuntimeError(f"shipped trust root {name} is missing or does not match its pinned fingerprint")


def _dedupe(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    seen: dict[str, x509.Certificate] = {}
    for cert in certs:
        seen.setdefault(fingerprint(cert), cert)
    return list(seen.values())


# --- chain shape (RFC 5280 section 4.2.1.9 basicConstraints, 4.2.1.3 keyUsage; vendor naming profiles) -----------

def _extension(cert: x509.Certificate, kind: type) -> object | None:
    """The extension's value, or ``None``; undecodable extensions were refused by ``load_certificates``."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_ca(cert: x509.Certificate, cas_below: int) -> None:
    """An issuer: cA true, pathLen allowing ``cas_below`` CAs under it, keyCertSign if keyUsage is given."""
    name = common_name(cert.subject)
    bc = _extension(cert, x509.BasicConstraints)
    if not isinstance(bc, x509.BasicConstraints) or not bc.ca:
        raise EvidenceError("chain", f"{name!r} issues certificates but is not a CA (basicConstraints)")
    if bc.path_length is not None and bc.path_length < cas_below:
        raise EvidenceError("chain", f"{name!r} pathLenConstraint {bc.path_length} allows fewer than "
                                     f"{cas_below} CA(s) below it")
    ku = _extension(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not ku.key_cert_sign:
        raise EvidenceError("chain", f"{name!r} keyUsage does not allow certificate signing")


def _check_leaf(cert: x509.Certificate) -> None:
    """An end entity: not a CA, and when keyUsage is present it allows signatures but not certificate signing."""
    name = common_name(cert.subject)
    bc = _extension(cert, x509.BasicConstraints)
    if isinstance(bc, x509.BasicConstraints) and bc.ca:
        raise EvidenceError("chain", f"signing certificate {name!r} is a CA certificate")
    ku = _extension(cert, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and (ku.key_cert_sign or not ku.digital_signature):
        raise EvidenceError("chain", f"signing certificate {name!r} keyUsage is not that of a signing key")


def _names(full: Sequence[x509.Certificate], expected: Sequence[Callable[[str], bool]], what: str) -> None:
    if len(full) != len(expected):
        raise EvidenceError("chain", f"{what} chain has {len(full)} certificates, expected exactly {len(expected)}: "
                                     + " <- ".join(repr(common_name(c.subject)) for c in full))
    for cert, ok in zip(full, expected, strict=True):
        if not ok(common_name(cert.subject)):
            raise EvidenceError("chain", f"{what} chain: unexpected certificate {common_name(cert.subject)!r}")
    # That each certificate names its parent as issuer is already established: ``issued_by`` (cryptography's
    # verify_directly_issued_by) requires the issuer name to equal the parent's subject, and so does anchor_for.


def _check_roles(full: Sequence[x509.Certificate]) -> None:
    _check_leaf(full[0])
    for depth, cert in enumerate(full[1:]):
        _check_ca(cert, depth)


def amd_shape(full: Sequence[x509.Certificate]) -> None:
    """VCEK <- ASK(SEV-<P>) <- ARK-<P>, or VLEK <- ASVK(SEV-VLEK-<P>) <- ARK-<P>, one product throughout."""
    leaf_cn = common_name(full[0].subject)
    ark = _ARK_RE.fullmatch(common_name(full[-1].subject))
    p = ark.group(1) if ark else "?"  # no ARK at the end: the name checks below refuse the chain
    ca_cn = f"SEV-VLEK-{p}" if leaf_cn == "SEV-VLEK" else f"SEV-{p}"
    _names(full, (lambda n: n in ("SEV-VCEK", "SEV-VLEK"), lambda n: n == ca_cn, lambda n: n == f"ARK-{p}"), "AMD")
    _check_roles(full)


def intel_pck_shape(full: Sequence[x509.Certificate]) -> None:
    """PCK leaf <- PCK Platform/Processor CA <- Intel SGX Root CA."""
    _names(full, (lambda n: n == INTEL_PCK_CN, lambda n: n in INTEL_PCK_CA_CNS, lambda n: n == INTEL_ROOT_CN),
           "PCK")
    _check_roles(full)


def intel_tcb_signing_shape(full: Sequence[x509.Certificate]) -> None:
    """Intel SGX TCB Signing directly under the Intel SGX Root CA."""
    _names(full, (lambda n: n == INTEL_TCB_SIGNING_CN, lambda n: n == INTEL_ROOT_CN), "TCB signing")
    _check_roles(full)


@dataclass(frozen=True)
class _Chain:
    """A verified chain: the certificates given, the full chain to the anchor, and when all of them are valid."""

    given: tuple[x509.Certificate, ...]
    full: tuple[x509.Certificate, ...]
    valid_from: dt.datetime
    valid_until: dt.datetime


class ChainVerifier:
    """Verifies leaf -> ... -> anchor of one vendor in one shape, and caches the successful chains."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust
        self._cache: OrderedDict[tuple[object, ...], _Chain] = OrderedDict()

    def verify(self, chain: Sequence[x509.Certificate], at: dt.datetime, vendor: str,
               shape: Callable[[Sequence[x509.Certificate]], None]) -> tuple[x509.Certificate, ...]:
        """``chain`` starts at the leaf; returns the full chain ending at the ``vendor`` trust anchor."""
        # Keyed by object identity (callers cache their parsed certificates, so this is the hot path), confirmed by
        # identity of every element so a recycled id never matches another chain.
        key = (vendor, shape, *map(id, chain))
        entry = self._cache.get(key)
        if entry is None or any(a is not b for a, b in zip(entry.given, chain, strict=True)):
            full = self._build(chain, vendor)
            shape(full)
            entry = self._cache[key] = _Chain(tuple(chain), full, max(c.not_valid_before_utc for c in full),
                                              min(c.not_valid_after_utc for c in full))
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        if not entry.valid_from <= at <= entry.valid_until:
            check_validity(entry.full, at)  # names the certificate that is out of its validity
        return entry.full

    def _build(self, chain: Sequence[x509.Certificate], vendor: str) -> tuple[x509.Certificate, ...]:
        if not chain:
            raise EvidenceError("chain", "no certificates to verify")
        for child, parent in itertools.pairwise(chain):
            if not issued_by(child, parent):
                raise EvidenceError("chain", f"{common_name(child.subject)!r} is not signed by "
                                             f"{common_name(parent.subject)!r}")
        last = chain[-1]
        anchor = self.trust.anchor_for(last, vendor)
        if anchor is None:
            raise EvidenceError("chain", f"chain ends at {common_name(last.subject)!r}, which is not a trusted "
                                         f"{vendor.upper()} root and not issued by one")
        if not issued_by(anchor, anchor):
            raise EvidenceError("chain", f"trust root {common_name(anchor.subject)!r} self-signature invalid")
        return tuple(chain) if anchor == last else (*chain, anchor)

