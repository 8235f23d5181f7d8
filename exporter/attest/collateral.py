"""Intel TDX verification collateral from files (the project never fetches it): TCB info, QE identity, CRLs.

Accepted in a collateral folder (any mix, any file names):
- Intel PCS responses ``{"tcbInfo": {...}, "signature": "<hex r||s>"}`` and ``{"enclaveIdentity": ..., ...}``;
  the signature covers the exact bytes of the inner object, so those bytes are kept as read.
- dcap-qvl style bundles (``tcb_info``, ``tcb_info_signature``, ``qe_identity``, ``pck_crl``, ``root_ca_crl`` and
  their issuer chains as strings).
- ``*.pem`` certificates (the TCB signing chain, ``TCB-Info-Issuer-Chain`` from PCS) and ``*.der``/``*.crl`` CRLs
  (PCK Platform/Processor CA CRL, Intel SGX Root CA CRL).

Parsing here is pure (bytes/text in); ``load_dir`` is the only function touching the file system. Selection and
checks against a quote live in ``verify_tdx``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509

from exporter.attest.errors import EvidenceError
from exporter.attest.trust import load_certificates


@dataclass(frozen=True)
class SignedJson:
    """A PCS-signed JSON body: the exact signed bytes, the decoded object and the raw r||s signature."""

    kind: str  # "tcb_info" | "qe_identity"
    body: bytes
    doc: dict[str, Any]
    signature: bytes
    chain: tuple[x509.Certificate, ...] = ()

    @cached_property
    def issue_date(self) -> dt.datetime:
        return parse_time(self.doc.get("issueDate"), f"{self.kind}.issueDate")

    @cached_property
    def next_update(self) -> dt.datetime:
        return parse_time(self.doc.get("nextUpdate"), f"{self.kind}.nextUpdate")


@dataclass
class CollateralSet:
    tcb_infos: list[SignedJson] = field(default_factory=list)
    qe_identities: list[SignedJson] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    certs: list[x509.Certificate] = field(default_factory=list)

    def extend(self, other: CollateralSet) -> None:
        self.tcb_infos += other.tcb_infos
        self.qe_identities += other.qe_identities
        self.crls += other.crls
        self.certs += other.certs
        self.__dict__.pop("_by_issuer", None)

    def crls_from(self, issuer: x509.Certificate) -> list[x509.CertificateRevocationList]:
        """CRLs issued by ``issuer`` (by name; the signature is checked by the caller)."""
        index = self.__dict__.get("_by_issuer")
        if index is None:
            index = {}
            for crl in self.crls:
                index.setdefault(crl.issuer.public_bytes(), []).append(crl)
            self.__dict__["_by_issuer"] = index
        return index.get(issuer.subject.public_bytes(), [])


def parse_time(value: Any, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise EvidenceError("collateral", f"{what}: missing date")
    try:
        return dt.datetime.fromisoformat(value).astimezone(dt.UTC)
    except ValueError:
        raise EvidenceError("collateral", f"{what}: bad date {value!r}") from None


def _inner_object(text: str, key: str, expected: Any) -> bytes:
    """The exact text of the top-level ``key``'s value (what PCS signed): the occurrence that decodes to it."""
    decoder = json.JSONDecoder()
    for match in re.finditer(rf'"{key}"\s*:\s*', text):
        try:
            value, end = decoder.raw_decode(text, match.end())
        except json.JSONDecodeError:
            continue
        if value == expected:
            return text[match.end():end].encode()
    raise EvidenceError("collateral", f"{key}: signed body not found")


def _signature(value: Any, what: str) -> bytes:
    try:
        sig = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        sig = b""
    if len(sig) != 64:
        raise EvidenceError("collateral", f"{what}: expected a 64-byte hex ECDSA signature")
    return sig


def parse_pcs_json(text: str) -> CollateralSet:
    """One PCS response or one dcap-qvl bundle (``json.loads`` of ``text`` must be an object)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvidenceError("collateral", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EvidenceError("collateral", "expected a JSON object")
    out = CollateralSet()
    for key, kind in (("tcbInfo", "tcb_info"), ("enclaveIdentity", "qe_identity")):
        if key in doc:
            inner = doc[key]
            if not isinstance(inner, dict):
                raise EvidenceError("collateral", f"{key} is not an object")
            item = SignedJson(kind, _inner_object(text, key, inner), inner, _signature(doc.get("signature"), key))
            (out.tcb_infos if kind == "tcb_info" else out.qe_identities).append(item)
    if "tcb_info" in doc or "qe_identity" in doc:
        out.extend(_parse_bundle(doc))
    return out


def _parse_bundle(doc: dict[str, Any]) -> CollateralSet:
    out = CollateralSet()
    for kind in ("tcb_info", "qe_identity"):
        text = doc.get(kind)
        if not isinstance(text, str):
            continue
        try:
            inner = json.loads(text)
        except json.JSONDecodeError:
            raise EvidenceError("collateral", f"{kind}: not JSON") from None
        chain = load_certificates(str(doc.get(f"{kind}_issuer_chain", "")).encode(), f"{kind}_issuer_chain") \
            if doc.get(f"{kind}_issuer_chain") else []
        item = SignedJson(kind, text.encode(), inner, _signature(doc.get(f"{kind}_signature"), kind), tuple(chain))
        (out.tcb_infos if kind == "tcb_info" else out.qe_identities).append(item)
    for key in ("pck_crl", "root_ca_crl"):
        if isinstance(doc.get(key), str):
            out.crls.append(parse_crl(_hex_or_pem(doc[key]), key))
    if isinstance(doc.get("pck_crl_issuer_chain"), str):
        out.certs += load_certificates(doc["pck_crl_issuer_chain"].encode(), "pck_crl_issuer_chain")
    return out


def _hex_or_pem(value: str) -> bytes:
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise EvidenceError("collateral", "CRL is neither hex DER nor PEM") from None


def parse_crl(data: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise EvidenceError("collateral", f"{what}: not a valid CRL: {exc}") from None


def load_dir(folder: Path) -> CollateralSet:
    """Every collateral file in ``folder``; an unreadable or malformed file is an error naming it."""
    out = CollateralSet()
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
            if path.suffix == ".json":
                out.extend(parse_pcs_json(data.decode("utf-8")))
            elif path.suffix in (".der", ".crl"):
                out.crls.append(parse_crl(data, path.name))
            elif path.suffix in (".pem", ".crt", ".cer"):
                if b"X509 CRL" in data:
                    out.crls.append(parse_crl(data, path.name))
                else:
                    out.certs += load_certificates(data, path.name)
        except (OSError, UnicodeDecodeError) as exc:
            raise EvidenceError("collateral", f"{path}: cannot read: {exc}") from None
        except EvidenceError as exc:
            raise EvidenceError(exc.reason, f"{path}: {exc}") from None
    return out
