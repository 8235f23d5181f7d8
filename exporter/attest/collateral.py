"""Intel TDX verification collateral from files (the project never fetches it): TCB info, QE identity, CRLs.

Accepted in a collateral folder (any mix, any file names):
- Intel PCS responses ``{"tcbInfo": {...}, "signature": "<hex r||s>"}`` and ``{"enclaveIdentity": ..., ...}``;
  the signature covers the exact bytes of the inner object, so those bytes are kept as read.
- dcap-qvl style bundles (``tcb_info``, ``tcb_info_signature``, ``qe_identity``, ``pck_crl``, ``root_ca_crl`` and
  their issuer chains as strings).
- ``*.pem`` certificates (the TCB signing chain, ``TCB-Info-Issuer-Chain`` from PCS) and ``*.der``/``*.crl`` CRLs
  (PCK Platform/Processor CA CRL, Intel SGX Root CA CRL).

Parsing here is pure (bytes/text in); ``load_dir`` is the only function touching the file system. Selection and
checks against a quote live in ``verify_tdx``. ``tdx_tcb_info`` and ``td_qe_identity`` turn the signed JSON into
typed values, refusing (``collateral``) anything TCB info v3 / enclave identity v2 does not define: a wrong
``id``/``version``, an unknown ``tcbStatus``, SVNs that are not integers 0-255, hex fields of the wrong size.
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
from exporter.attest.regular import read_regular
from exporter.attest.trust import load_certificates

TCB_STATUSES = ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
                "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked")
MAX_JSON_BYTES = 4 * 1024 * 1024  # a PCS TCB info is a few tens of KiB


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
        self.__dict__.pop("_by_cert", None)

    def crls_from(self, issuer: x509.Certificate) -> list[x509.CertificateRevocationList]:
        """CRLs issued by ``issuer`` (by name; the signature is checked by the caller).

        Memoised per certificate object (keyed by id, holding the object): comparing ``x509.Name`` values costs tens
        of microseconds, and the same CA objects come back with every quote of a host.
        """
        memo = self.__dict__.setdefault("_by_cert", {})
        hit = memo.get(id(issuer))
        if hit is not None and hit[0] is issuer:
            return hit[1]
        index = self.__dict__.get("_by_issuer")
        if index is None:
            index = {}
            for crl in self.crls:
                index.setdefault(crl.issuer, []).append(crl)
            self.__dict__["_by_issuer"] = index
        if len(memo) > 1024:
            memo.clear()
        found = memo[id(issuer)] = (issuer, index.get(issuer.subject, []))
        return found[1]


def parse_time(value: Any, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise EvidenceError("collateral", f"{what}: missing date")
    try:
        when = dt.datetime.fromisoformat(value)
        return (when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when).astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise EvidenceError("collateral", f"{what}: bad date {value[:40]!r}") from None


def _loads(text: str, what: str) -> Any:
    """``json.loads`` whose every failure (including nesting deep enough to exhaust recursion) is ``collateral``."""
    if len(text) > MAX_JSON_BYTES:
        raise EvidenceError("collateral", f"{what}: {len(text)} bytes of JSON, more than any PCS collateral")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise EvidenceError("collateral", f"{what}: not JSON: {str(exc)[:80]}") from None


def _inner_object(text: str, key: str, expected: Any) -> bytes:
    """The exact text of the top-level ``key``'s value (what PCS signed): the occurrence that decodes to it."""
    decoder = json.JSONDecoder()
    for match in re.finditer(rf'"{key}"\s*:\s*', text):
        try:
            value, end = decoder.raw_decode(text, match.end())
        except (json.JSONDecodeError, RecursionError):
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
    doc = _loads(text, "collateral")
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
        inner = _loads(text, kind)
        if not isinstance(inner, dict):
            raise EvidenceError("collateral", f"{kind} is not an object")
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
        crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        # cryptography decodes these lazily: make a malformed CRL fail here, typed, not during verification
        _ = (crl.issuer, crl.extensions, crl.last_update_utc, crl.next_update_utc, [r.serial_number for r in crl])
        return crl
    except (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension) as exc:
        raise EvidenceError("collateral", f"{what}: not a valid CRL: {str(exc)[:200]}") from None


def load_dir(folder: Path) -> CollateralSet:
    """Every collateral file in ``folder``; an unreadable or malformed file is an error naming it."""
    out = CollateralSet()
    try:
        paths = sorted(Path(folder).iterdir())
    except OSError as exc:  # missing, not a directory, unreadable: a start-up error naming it, not a traceback
        raise EvidenceError("collateral", f"{folder}: cannot read the collateral directory: {exc.strerror}") from None
    for path in paths:
        if not path.is_file():
            continue
        try:
            data = read_regular(path, MAX_JSON_BYTES)
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


# --- typed views of the signed JSON (Intel PCS API: "TDX TCB Info" v3 and "Enclave Identity" v2) ----------------

@dataclass(frozen=True)
class TcbLevel:
    sgx: tuple[int, ...]  # 16 SGX TCB component SVNs
    pcesvn: int
    tdx: tuple[int, ...]  # 16 TDX TCB component SVNs
    status: str


@dataclass(frozen=True)
class EnclaveLike:
    """A signer identity with masked attributes and SVN-ordered levels: a TDX module or the TD Quoting Enclave."""

    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[tuple[int, str], ...] = ()  # (isvsvn, tcbStatus), in the document's order
    isvprodid: int = 0
    miscselect: int = 0
    miscselect_mask: int = 0


@dataclass(frozen=True)
class TdxTcbInfo:
    fmspc: str  # lowercase hex
    pce_id: str  # lowercase hex
    module: EnclaveLike
    module_identities: dict[str, EnclaveLike]  # "TDX_01" -> identity
    levels: tuple[TcbLevel, ...]


def _field(doc: Any, key: str, what: str) -> Any:
    if not isinstance(doc, dict) or key not in doc:
        raise EvidenceError("collateral", f"{what}: missing {key}")
    return doc[key]


def _int(value: Any, what: str, limit: int = 255) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise EvidenceError("collateral", f"{what}: expected an integer 0-{limit}, got {str(value)[:40]!r}")
    return value


def _hex(value: Any, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != size:
        raise EvidenceError("collateral", f"{what}: expected {size} bytes of hex")
    return raw


def _status(value: Any, what: str) -> str:
    if value not in TCB_STATUSES:
        raise EvidenceError("collateral", f"{what}: unknown tcbStatus {str(value)[:40]!r}")
    return str(value)


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise EvidenceError("collateral", f"{what}: expected a list")
    return value


def _svns(components: Any, what: str) -> tuple[int, ...]:
    items = _list(components, what)
    if len(items) != 16:
        raise EvidenceError("collateral", f"{what}: expected 16 components, got {len(items)}")
    return tuple(_int(_field(c, "svn", what), what) for c in items)


def _identity(doc: Any, what: str, with_levels: bool) -> EnclaveLike:
    levels: tuple[tuple[int, str], ...] = ()
    if with_levels:
        levels = tuple((_int(_field(_field(lvl, "tcb", what), "isvsvn", what), f"{what}.isvsvn", 0xFFFF),
                        _status(_field(lvl, "tcbStatus", what), what))
                       for lvl in _list(_field(doc, "tcbLevels", what), f"{what}.tcbLevels"))
    return EnclaveLike(_hex(_field(doc, "mrsigner", what), 48, f"{what}.mrsigner"),
                       _hex(_field(doc, "attributes", what), 8, f"{what}.attributes"),
                       _hex(_field(doc, "attributesMask", what), 8, f"{what}.attributesMask"), levels)


def tdx_tcb_info(doc: dict[str, Any]) -> TdxTcbInfo:
    """TDX TCB info v3 (``id`` "TDX", ``version`` 3); an SGX TCB info, another version or a malformed field raises."""
    if doc.get("id") != "TDX" or doc.get("version") != 3:
        raise EvidenceError("collateral", f"TCB info id {str(doc.get('id'))[:20]!r} version "
                                          f"{str(doc.get('version'))[:10]!r} is not a TDX TCB info v3")
    levels = []
    for i, level in enumerate(_list(_field(doc, "tcbLevels", "tcbInfo"), "tcbInfo.tcbLevels")):
        what = f"tcbInfo.tcbLevels[{i}]"
        tcb = _field(level, "tcb", what)
        levels.append(TcbLevel(_svns(_field(tcb, "sgxtcbcomponents", what), f"{what}.sgxtcbcomponents"),
                               _int(_field(tcb, "pcesvn", what), f"{what}.pcesvn", 0xFFFF),
                               _svns(_field(tcb, "tdxtcbcomponents", what), f"{what}.tdxtcbcomponents"),
                               _status(_field(level, "tcbStatus", what), what)))
    identities = {}
    for i, item in enumerate(_list(doc.get("tdxModuleIdentities", []), "tcbInfo.tdxModuleIdentities")):
        what = f"tcbInfo.tdxModuleIdentities[{i}]"
        identities[str(_field(item, "id", what)).upper()] = _identity(item, what, with_levels=True)
    fmspc = _hex(_field(doc, "fmspc", "tcbInfo"), 6, "tcbInfo.fmspc").hex()
    pce_id = _hex(_field(doc, "pceId", "tcbInfo"), 2, "tcbInfo.pceId").hex()
    return TdxTcbInfo(fmspc, pce_id, _identity(_field(doc, "tdxModule", "tcbInfo"), "tcbInfo.tdxModule", False),
                      identities, tuple(levels))


def td_qe_identity(doc: dict[str, Any]) -> EnclaveLike:
    """The TD Quoting Enclave identity (``id`` "TD_QE", ``version`` 2)."""
    if doc.get("id") != "TD_QE" or doc.get("version") != 2:
        raise EvidenceError("collateral", f"enclave identity id {str(doc.get('id'))[:20]!r} version "
                                          f"{str(doc.get('version'))[:10]!r} is not a TD_QE identity v2")
    what = "enclaveIdentity"
    levels = tuple((_int(_field(_field(lvl, "tcb", what), "isvsvn", what), f"{what}.isvsvn", 0xFFFF),
                    _status(_field(lvl, "tcbStatus", what), what))
                   for lvl in _list(_field(doc, "tcbLevels", what), f"{what}.tcbLevels"))
    return EnclaveLike(
        mrsigner=_hex(_field(doc, "mrsigner", what), 32, f"{what}.mrsigner"),
        attributes=_hex(_field(doc, "attributes", what), 16, f"{what}.attributes"),
        attributes_mask=_hex(_field(doc, "attributesMask", what), 16, f"{what}.attributesMask"),
        levels=levels, isvprodid=_int(_field(doc, "isvprodid", what), f"{what}.isvprodid", 0xFFFF),
        miscselect=int.from_bytes(_hex(_field(doc, "miscselect", what), 4, f"{what}.miscselect"), "big"),
        miscselect_mask=int.from_bytes(_hex(_field(doc, "miscselectMask", what), 4, f"{what}.miscselectMask"),
                                       "big"))
