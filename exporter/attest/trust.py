"""Trust anchors and X.509 chain checks shared by the SNP and TDX verifiers.

The shipped anchors are the AMD ARKs (Milan, Genoa, Turin) and the Intel SGX Root CA; their SHA-256 fingerprints
are pinned below so a corrupted package cannot silently widen trust. Extra roots (``--trust-root``, e.g. a private
CA in tests) are *added*: they never replace or weaken the vendor ones. Chain results are cached by the
certificates' fingerprints, since the same VCEK/PCK chain signs every report a host produces; validity periods
are still checked against the verification time on every call.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from exporter.attest.errors import EvidenceError

ROOT_FINGERPRINT_PREFIXES = {
    "ARK-Milan": "69d063b45344d26a",
    "ARK-Genoa": "4c6598d19c18719c",
    "ARK-Turin": "1f084161a44bb6d9",
    "Intel SGX Root CA": "44a0196b2b99f889",
}
SHIPPED_FILES = ("amd-milan.pem", "amd-genoa.pem", "amd-turin.pem", "amd-milan-vlek.pem", "intel-sgx-root-ca.pem")
_CACHE_SIZE = 1024


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """PEM (one or many) or a single DER certificate; errors are ``EvidenceError("certificate")``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some real AMD certs have non-positive serials; still valid DER
        try:
            if b"-----BEGIN" in data:
                return x509.load_pem_x509_certificates(data.rstrip(b"\0"))
            return [x509.load_der_x509_certificate(data)]
        except ValueError as exc:
            raise EvidenceError("certificate", f"{what}: not a valid certificate: {exc}") from None


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def check_validity(certs: Iterable[x509.Certificate], at: dt.datetime) -> None:
    for cert in certs:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise EvidenceError("expired", f"certificate {common_name(cert.subject)!r} is not valid at "
                                           f"{at.isoformat()} (valid {cert.not_valid_before_utc.isoformat()} "
                                           f"to {cert.not_valid_after_utc.isoformat()})")


@dataclass(frozen=True)
class TrustStore:
    """Self-signed trust anchors plus known intermediates (ASK/ASVK) to complete chains evidence omits."""

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
                data = Path(path).read_bytes()
            except OSError as exc:
                raise EvidenceError("certificate", f"{path}: cannot read trust root: {exc.strerror}") from None
            for cert in load_certificates(data, str(path)):
                (anchors if cert.subject == cert.issuer else intermediates).append(cert)
        return cls(tuple(_dedupe(anchors)), tuple(_dedupe(intermediates)))

    def is_anchor(self, cert: x509.Certificate) -> bool:
        return any(cert == anchor for anchor in self.anchors)

    def intermediate_for(self, leaf: x509.Certificate) -> x509.Certificate | None:
        for cert in self.intermediates:
            if cert.subject == leaf.issuer and _issued_by(leaf, cert):
                return cert
        return None

    def anchor_for(self, cert: x509.Certificate) -> x509.Certificate | None:
        if self.is_anchor(cert):
            return cert
        for anchor in self.anchors:
            if anchor.subject == cert.issuer and _issued_by(cert, anchor):
                return anchor
        return None


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


class ChainVerifier:
    """Verifies leaf -> ... -> anchor and caches the successful chains (by fingerprints)."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust
        self._cache: OrderedDict[tuple[int, ...], tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...]]] = \
            OrderedDict()

    def verify(self, chain: Sequence[x509.Certificate], at: dt.datetime) -> tuple[x509.Certificate, ...]:
        """``chain`` starts at the leaf; returns the full chain ending at the trust anchor."""
        # Keyed by object identity first (callers cache their parsed certificates, so this is the hot path),
        # confirmed by identity of every element so a recycled id never matches another chain.
        key = tuple(map(id, chain))
        entry = self._cache.get(key)
        if entry is None or any(a is not b for a, b in zip(entry[0], chain, strict=True)):
            full = self._build(chain)
            self._cache[key] = (tuple(chain), full)
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            full = entry[1]
        check_validity(full, at)
        return full

    def _build(self, chain: Sequence[x509.Certificate]) -> tuple[x509.Certificate, ...]:
        if not chain:
            raise EvidenceError("chain", "no certificates to verify")
        for child, parent in itertools.pairwise(chain):
            if not _issued_by(child, parent):
                raise EvidenceError("chain", f"{common_name(child.subject)!r} is not signed by "
                                             f"{common_name(parent.subject)!r}")
        last = chain[-1]
        anchor = self.trust.anchor_for(last)
        if anchor is None:
            raise EvidenceError("chain", f"chain ends at {common_name(last.subject)!r}, which is not a trusted "
                                         "root and not issued by one")
        if not _issued_by(anchor, anchor):
            raise EvidenceError("chain", f"trust root {common_name(anchor.subject)!r} self-signature invalid")
        return tuple(chain) if anchor is last else (*chain, anchor)


def public_key_kind(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ec-{key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    return "other"

