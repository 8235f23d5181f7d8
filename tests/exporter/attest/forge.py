"""A forged-evidence kit: private AMD-like and Intel-like PKIs, and evidence and collateral signed with them.

Every test that proves a check builds its input here, so that all checks before the targeted one pass and only the
targeted one can refuse it. The hierarchies copy the vendors' shapes and names (AMD: ARK-<product> -> SEV-<product>
(ASK) / SEV-VLEK-<product> (ASVK) -> SEV-VCEK / SEV-VLEK with the KDS extensions; Intel: Intel SGX Root CA ->
Intel SGX PCK Platform CA -> Intel SGX PCK Certificate with the SGX extension, and Intel SGX TCB Signing under the
root), with keys generated per test session, and are trusted by adding their roots (``--trust-root``).

Layouts: SNP report per the SNP firmware ABI (56860) "ATTESTATION_REPORT Structure"; TDX quote v4/v5 per the DCAP
quote format; TCB info v3 / enclave identity v2 as the Intel PCS API serves them.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from exporter.attest.collateral import CollateralSet, load_dir
from exporter.attest.trust import TrustStore


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


AT = utc(2025, 6, 1)  # every forged certificate and collateral item is valid then
NOT_BEFORE, NOT_AFTER = utc(2024, 1, 1), utc(2034, 1, 1)
ISSUED, NEXT_UPDATE = utc(2025, 5, 20), utc(2025, 6, 20)
INTEL_QE_VENDOR = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
TD_QE_MRSIGNER = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")


# --- DER (X.690) for the vendor extensions --------------------------------------------------------------------

def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + value


def der_int(v: int) -> bytes:
    return _tlv(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True))


def der_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, body)


def der_seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def der_octets(b: bytes) -> bytes:
    return _tlv(0x04, b)


# --- certificates -----------------------------------------------------------------------------------------------

def amd_name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
                      x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
                      x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def intel_name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
                      x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


CA_USAGE = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)
LEAF_USAGE = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                           data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                           encipher_only=False, decipher_only=False)


def issue(subject: x509.Name, issuer: x509.Name, public_key: Any, signer: Any, *, ca: bool | None,
          path_len: int | None = None, usage: x509.KeyUsage | None = None,
          extensions: Sequence[x509.ExtensionType] = (), not_before: dt.datetime = NOT_BEFORE,
          not_after: dt.datetime = NOT_AFTER, serial: int | None = None) -> x509.Certificate:
    """One certificate; ``ca=None`` leaves basicConstraints out (as AMD's VCEKs do)."""
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after))
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_len if ca else None), True)
    if usage is not None:
        builder = builder.add_extension(usage, True)
    for ext in extensions:
        builder = builder.add_extension(ext, False)
    if isinstance(signer, rsa.RSAPrivateKey):
        return builder.sign(signer, hashes.SHA384(),
                            rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48))
    return builder.sign(signer, hashes.SHA384() if signer.curve.name == "secp384r1" else hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def pem_der(der: bytes) -> str:
    """PEM armour around DER bytes that need not be a valid certificate (for mutation tests)."""
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"


def off_curve_reissue(cert: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """``cert`` with its EC public point moved off the curve, validly signed again by ``issuer_key`` (P-256,
    ECDSA-SHA256): what cryptography's builder cannot issue. RFC 5280 section 4.1: Certificate ::= SEQUENCE {
    tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }; the TBS is edited in place (same length)."""
    tbs = cert.tbs_certificate_bytes
    point = cert.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert tbs.count(point) == 1
    tbs_off = tbs.replace(point, point[:-1] + bytes([point[-1] ^ 1]))
    der = cert.public_bytes(serialization.Encoding.DER)
    after_tbs = der[der.index(tbs) + len(tbs):]
    algorithm = after_tbs[:2 + after_tbs[1]]  # AlgorithmIdentifier, short-form length (ecdsa-with-SHA256)
    signature = issuer_key.sign(tbs_off, ec.ECDSA(hashes.SHA256()))
    return x509.load_der_x509_certificate(der_seq(tbs_off, algorithm, _tlv(0x03, b"\0" + signature)))


def trust_with(*roots: x509.Certificate, intermediates: Sequence[x509.Certificate] = ()) -> TrustStore:
    """The shipped store plus these roots (what ``--trust-root`` files would add)."""
    default = TrustStore.default()
    return TrustStore(default.anchors + tuple(roots), default.intermediates + tuple(intermediates))


# --- AMD --------------------------------------------------------------------------------------------------------

_AMD = "1.3.6.1.4.1.3704.1."
AMD_TCB_OIDS = {"bootloader": _AMD + "3.1", "tee": _AMD + "3.2", "snp": _AMD + "3.3", "microcode": _AMD + "3.8",
                "fmc": _AMD + "3.9"}
MILAN_TCB = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
TURIN_TCB = {"fmc": 1, "bootloader": 2, "tee": 0, "snp": 5, "microcode": 64}


def tcb_raw(tcb: dict[str, int]) -> int:
    """TCB_VERSION: Milan/Genoa byte 0 bootloader, 1 tee, 6 snp, 7 microcode; Turin (has fmc) 0 fmc, 1 bootloader,
    2 tee, 3 snp, 7 microcode."""
    b = bytearray(8)
    if "fmc" in tcb:
        b[0], b[1], b[2], b[3], b[7] = tcb["fmc"], tcb["bootloader"], tcb["tee"], tcb["snp"], tcb["microcode"]
    else:
        b[0], b[1], b[6], b[7] = tcb["bootloader"], tcb["tee"], tcb["snp"], tcb["microcode"]
    return int.from_bytes(b, "little")


def amd_leaf_extensions(tcb: dict[str, int], hwid: bytes | None, product: str = "Milan") -> list[x509.ExtensionType]:
    exts: list[x509.ExtensionType] = [
        x509.UnrecognizedExtension(x509.ObjectIdentifier(_AMD + "1"), der_int(0)),
        x509.UnrecognizedExtension(x509.ObjectIdentifier(_AMD + "2"), _tlv(0x16, f"{product}-B0".encode()))]
    exts += [x509.UnrecognizedExtension(x509.ObjectIdentifier(AMD_TCB_OIDS[k]), der_int(v)) for k, v in tcb.items()]
    if hwid is not None:
        exts.append(x509.UnrecognizedExtension(x509.ObjectIdentifier(_AMD + "4"), hwid))
    return exts


@dataclass(frozen=True)
class AmdPki:
    product: str
    ark_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask_key: rsa.RSAPrivateKey
    ask: x509.Certificate
    asvk_key: rsa.RSAPrivateKey
    asvk: x509.Certificate

    def vcek(self, tcb: dict[str, int] = MILAN_TCB, hwid: bytes | None = b"\x5a" * 64, *,
             signer: Any = None, issuer: x509.Name | None = None, cn: str = "SEV-VCEK",
             key: ec.EllipticCurvePrivateKey | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = key or _p384()
        cert = issue(amd_name(cn), issuer or self.ask.subject, key.public_key(), signer or self.ask_key, ca=None,
                     extensions=amd_leaf_extensions(tcb, hwid, self.product))
        return key, cert

    def vlek(self, tcb: dict[str, int] = MILAN_TCB) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = _p384()
        exts = amd_leaf_extensions(tcb, None, self.product) + [
            x509.UnrecognizedExtension(x509.ObjectIdentifier(_AMD + "5"), _tlv(0x16, b"CN=csp.example"))]
        return key, issue(amd_name("SEV-VLEK"), self.asvk.subject, key.public_key(), self.asvk_key, ca=None,
                          extensions=exts)


@functools.cache
def _rsa(tag: str) -> rsa.RSAPrivateKey:
    del tag  # one key per role, generated once per session
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@functools.cache
def amd_pki(product: str = "Milan", tag: str = "") -> AmdPki:
    ark_key, ask_key, asvk_key = _rsa(f"ark{product}{tag}"), _rsa(f"ask{product}{tag}"), _rsa(f"asvk{product}{tag}")
    ark = issue(amd_name(f"ARK-{product}"), amd_name(f"ARK-{product}"), ark_key.public_key(), ark_key, ca=True,
                usage=CA_USAGE)
    ask = issue(amd_name(f"SEV-{product}"), ark.subject, ask_key.public_key(), ark_key, ca=True, path_len=0,
                usage=CA_USAGE)
    asvk = issue(amd_name(f"SEV-VLEK-{product}"), ark.subject, asvk_key.public_key(), ark_key, ca=True, path_len=0,
                 usage=CA_USAGE)
    return AmdPki(product, ark_key, ark, ask_key, ask, asvk_key, asvk)


def snp_report(key: ec.EllipticCurvePrivateKey, *, tcb: dict[str, int] = MILAN_TCB, chip_id: bytes = b"\x5a" * 64,
               version: int = 3, cpuid: tuple[int, int, int] = (0x19, 0x01, 0x01), policy: int = 0x30000,
               vmpl: int = 0, signing_key: int = 0, mask_chip_key: bool = False, guest_svn: int = 1,
               measurement: bytes = b"\x11" * 48, patch: dict[int, bytes] | None = None) -> bytes:
    """A signed report (ABI 56860, Table "ATTESTATION_REPORT Structure"); ``patch`` overwrites bytes before signing."""
    data = bytearray(0x4A0)
    struct.pack_into("<IIQ", data, 0x00, version, guest_svn, policy)
    raw_tcb = tcb_raw(tcb)
    key_info = (signing_key << 2) | (0x2 if mask_chip_key else 0)
    struct.pack_into("<IIQQI", data, 0x30, vmpl, 1, raw_tcb, 1, key_info)
    data[0x50:0x90] = b"\x33" * 64
    data[0x90:0xC0] = measurement
    struct.pack_into("<Q", data, 0x180, raw_tcb)
    if version >= 3:
        data[0x188:0x18B] = bytes(cpuid)
    data[0x1A0:0x1E0] = chip_id
    struct.pack_into("<Q", data, 0x1E0, raw_tcb)
    struct.pack_into("<Q", data, 0x1F0, raw_tcb)
    for offset, value in (patch or {}).items():
        data[offset:offset + len(value)] = value
    r, s = decode_dss_signature(key.sign(bytes(data[:0x2A0]), ec.ECDSA(hashes.SHA384())))
    data[0x2A0:0x2E8] = r.to_bytes(72, "little")
    data[0x2E8:0x330] = s.to_bytes(72, "little")
    return bytes(data)


# --- Intel ------------------------------------------------------------------------------------------------------

OID_SGX = "1.2.840.113741.1.13.1"


def sgx_extension(fmspc: bytes, sgx_svns: Sequence[int], pcesvn: int, pce_id: bytes = b"\0\0") -> x509.ExtensionType:
    """The PCK certificate's SGX extension (SGX PCK Certificate and CRL Profile, section 1.3.5)."""
    tcb = [der_seq(der_oid(f"{OID_SGX}.2.{i + 1}"), der_int(v)) for i, v in enumerate(sgx_svns)]
    tcb += [der_seq(der_oid(f"{OID_SGX}.2.17"), der_int(pcesvn)),
            der_seq(der_oid(f"{OID_SGX}.2.18"), der_octets(bytes(sgx_svns)))]
    value = der_seq(der_seq(der_oid(f"{OID_SGX}.1"), der_octets(b"\x01" * 16)),
                    der_seq(der_oid(f"{OID_SGX}.2"), der_seq(*tcb)),
                    der_seq(der_oid(f"{OID_SGX}.3"), der_octets(pce_id)),
                    der_seq(der_oid(f"{OID_SGX}.4"), der_octets(fmspc)),
                    der_seq(der_oid(f"{OID_SGX}.5"), _tlv(0x0A, b"\x00")))
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_SGX), value)


FMSPC = bytes.fromhex("b0c06f000000")
SGX_SVNS = (3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0)
PCESVN = 11


@dataclass(frozen=True)
class IntelPki:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    signing_key: ec.EllipticCurvePrivateKey
    signing: x509.Certificate

    def pck(self, *, fmspc: bytes = FMSPC, sgx_svns: Sequence[int] = SGX_SVNS, pcesvn: int = PCESVN,
            pce_id: bytes = b"\0\0", signer: Any = None, issuer: x509.Name | None = None,
            ca: bool | None = False, usage: x509.KeyUsage | None = LEAF_USAGE,
            cn: str = "Intel SGX PCK Certificate") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = _p256()
        cert = issue(intel_name(cn), issuer or self.ca.subject, key.public_key(), signer or self.ca_key, ca=ca,
                     usage=usage, extensions=[sgx_extension(fmspc, sgx_svns, pcesvn, pce_id)])
        return key, cert

    def crl(self, issuer: str, revoked: Sequence[int] = (), *, last: dt.datetime = ISSUED,
            next_: dt.datetime = NEXT_UPDATE, signer: Any = None) -> x509.CertificateRevocationList:
        cert, key = (self.root, self.root_key) if issuer == "root" else (self.ca, self.ca_key)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject)
                   .last_update(last).next_update(next_)
                   .add_extension(x509.CRLNumber(1), False)  # RFC 5280 5.2.3/5.2.1: strict parsers want both
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False))
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build())
        return builder.sign(signer or key, hashes.SHA256())


@functools.cache
def intel_pki(tag: str = "") -> IntelPki:
    del tag  # distinct tags give distinct hierarchies with the same names
    root_key, ca_key, signing_key = _p256(), _p256(), _p256()
    root = issue(intel_name("Intel SGX Root CA"), intel_name("Intel SGX Root CA"), root_key.public_key(), root_key,
                 ca=True, path_len=1, usage=CA_USAGE)
    ca = issue(intel_name("Intel SGX PCK Platform CA"), root.subject, ca_key.public_key(), root_key, ca=True,
               path_len=0, usage=CA_USAGE)
    signing = issue(intel_name("Intel SGX TCB Signing"), root.subject, signing_key.public_key(), root_key, ca=False,
                    usage=LEAF_USAGE)
    return IntelPki(root_key, root, ca_key, ca, signing_key, signing)


def raw_p256_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _components(svns: Sequence[int]) -> list[dict[str, int]]:
    return [{"svn": v} for v in svns]


def tcb_level(sgx: Sequence[int] = SGX_SVNS, pcesvn: int = PCESVN, tdx: Sequence[int] = (0,) * 16,
              status: str = "UpToDate") -> dict[str, Any]:
    return {"tcb": {"sgxtcbcomponents": _components(sgx), "pcesvn": pcesvn, "tdxtcbcomponents": _components(tdx)},
            "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": status}


def module_identity(module_id: str = "TDX_01", mrsigner: bytes = bytes(48), isvsvn: int = 0,
                    status: str = "UpToDate") -> dict[str, Any]:
    return {"id": module_id, "mrsigner": mrsigner.hex().upper(), "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
            "tcbLevels": [{"tcb": {"isvsvn": isvsvn}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": status}]}


def tcb_info_doc(*, fmspc: bytes = FMSPC, levels: Sequence[dict[str, Any]] | None = None, kind: str = "TDX",
                 version: int = 3, pce_id: str = "0000", identities: Sequence[dict[str, Any]] | None = None,
                 issued: dt.datetime = ISSUED, next_update: dt.datetime = NEXT_UPDATE) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": kind, "version": version, "issueDate": _iso(issued), "nextUpdate": _iso(next_update),
                           "fmspc": fmspc.hex().upper(), "pceId": pce_id, "tcbType": 0, "tcbEvaluationDataNumber": 17}
    if kind == "TDX":
        doc["tdxModule"] = {"mrsigner": "00" * 48, "attributes": "0000000000000000",
                            "attributesMask": "FFFFFFFFFFFFFFFF"}
        doc["tdxModuleIdentities"] = list(identities if identities is not None else [module_identity()])
    doc["tcbLevels"] = list(levels if levels is not None else [tcb_level()])
    return doc


def qe_identity_doc(*, mrsigner: bytes = TD_QE_MRSIGNER, isvsvn: int = 4, kind: str = "TD_QE",
                    issued: dt.datetime = ISSUED, next_update: dt.datetime = NEXT_UPDATE) -> dict[str, Any]:
    return {"id": kind, "version": 2, "issueDate": _iso(issued), "nextUpdate": _iso(next_update),
            "tcbEvaluationDataNumber": 17, "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
            "attributes": "11000000000000000000000000000000", "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": mrsigner.hex().upper(), "isvprodid": 2,
            "tcbLevels": [{"tcb": {"isvsvn": isvsvn}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"}]}


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def signed_json(key: str, doc: dict[str, Any], signer: ec.EllipticCurvePrivateKey) -> str:
    """A PCS response: ``{"<key>": <doc>, "signature": "<hex r||s over the exact doc bytes>"}``."""
    body = json.dumps(doc, separators=(",", ":"))
    return f'{{"{key}":{body},"signature":"{raw_p256_signature(signer, body.encode()).hex()}"}}'


def pcs_bundle(kind: str, doc: dict[str, Any], signer: ec.EllipticCurvePrivateKey, issuer_chain: bytes) -> str:
    """A dcap-qvl style bundle carrying one signed item (``tcb_info`` or ``qe_identity``) and its issuer chain."""
    body = json.dumps(doc, separators=(",", ":"))
    return json.dumps({kind: body, f"{kind}_signature": raw_p256_signature(signer, body.encode()).hex(),
                       f"{kind}_issuer_chain": issuer_chain.decode()})


@dataclass(frozen=True)
class QeFields:
    mrsigner: bytes = TD_QE_MRSIGNER
    isvprodid: int = 2
    isvsvn: int = 4
    attributes: bytes = b"\x11" + bytes(15)
    miscselect: int = 0


@dataclass(frozen=True)
class TdFields:
    tee_tcb_svn: bytes = bytes([3, 1, 2]) + bytes(13)
    mrsignerseam: bytes = bytes(48)
    seam_attributes: bytes = bytes(8)
    td_attributes: int = 1 << 28  # SEPT_VE_DISABLE, as production TDs set it (dcap-qvl requires it by default)
    mrtd: bytes = b"\x22" * 48


def td_report(fields: TdFields) -> bytes:
    return struct.pack("<16s48s48s8sQQ48s48s48s48s48s48s48s48s64s", fields.tee_tcb_svn, b"\x44" * 48,
                       fields.mrsignerseam, fields.seam_attributes, fields.td_attributes, 0xE7, fields.mrtd,
                       bytes(48), bytes(48), bytes(48), bytes(48), bytes(48), bytes(48), bytes(48), b"\x55" * 64)


def qe_report(fields: QeFields, report_data: bytes) -> bytes:
    raw = bytearray(384)
    raw[0:16] = b"\x07" * 16
    struct.pack_into("<I", raw, 16, fields.miscselect)
    raw[48:64] = fields.attributes
    raw[64:96] = b"\x66" * 32
    raw[128:160] = fields.mrsigner
    struct.pack_into("<HH", raw, 256, fields.isvprodid, fields.isvsvn)
    raw[320:384] = report_data
    return bytes(raw)


def tdx_quote(pck_key: ec.EllipticCurvePrivateKey, chain_pem: bytes, *, version: int = 4,
              td: TdFields = TdFields(), qe: QeFields = QeFields(), qe_vendor: bytes = INTEL_QE_VENDOR,
              bind: bool = True, trailing: bytes = b"") -> bytes:
    """A DCAP quote (v4, or v5 with body type 2) signed by a fresh attestation key certified by ``pck_key``."""
    att = _p256()
    numbers = att.public_key().public_numbers()
    att_pub = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
    header = struct.pack("<HHI", version, 2, 0x81) + bytes(4) + qe_vendor + bytes(20)
    body = td_report(td)
    if version == 5:
        body = struct.pack("<HI", 2, len(body)) + body
    auth = b"\x77" * 32
    binding = hashlib.sha256(att_pub + auth).digest() + bytes(32) if bind else b"\x01" * 64
    qe_raw = qe_report(qe, binding)
    cert_data = (qe_raw + raw_p256_signature(pck_key, qe_raw) + struct.pack("<H", len(auth)) + auth
                 + struct.pack("<HI", 5, len(chain_pem)) + chain_pem)
    signed = header + body
    sig_data = raw_p256_signature(att, signed) + att_pub + struct.pack("<HI", 6, len(cert_data)) + cert_data
    return signed + struct.pack("<I", len(sig_data)) + sig_data + trailing


@dataclass(frozen=True)
class TdxWorld:
    """A quote and a complete, consistent collateral set under one private Intel-like hierarchy."""

    pki: IntelPki
    pck_key: ec.EllipticCurvePrivateKey
    pck: x509.Certificate
    td: TdFields = TdFields()
    qe: QeFields = QeFields()
    tcb_info: str = ""
    qe_identity: str | None = ""
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    signing_pem: bytes = b""
    extra_files: dict[str, bytes] = field(default_factory=dict)

    @property
    def chain_pem(self) -> bytes:
        return pem(self.pck, self.pki.ca, self.pki.root)

    def quote(self, **kwargs: Any) -> bytes:
        return tdx_quote(self.pck_key, self.chain_pem, td=self.td, qe=self.qe, **kwargs)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if self.tcb_info:
            (folder / "tcbinfo.json").write_text(self.tcb_info)
        if self.qe_identity:
            (folder / "qeidentity.json").write_text(self.qe_identity)
        for i, crl in enumerate(self.crls):
            (folder / f"crl-{i}.der").write_bytes(crl.public_bytes(serialization.Encoding.DER))
        (folder / "tcb-signing-chain.pem").write_bytes(self.signing_pem)
        for name, data in self.extra_files.items():
            (folder / name).write_bytes(data)
        return folder

    def collateral(self, folder: Path) -> CollateralSet:
        return load_dir(self.write(folder))

    def replace(self, **changes: Any) -> TdxWorld:
        return dataclasses.replace(self, **changes)

    def bundle(self) -> str:
        """The same collateral as one dcap-qvl style bundle (``QuoteCollateralV3`` JSON), CRLs as hex DER."""
        tcb_body, tcb_sig = _split_signed(self.tcb_info)
        out = {"pck_crl_issuer_chain": pem(self.pki.ca, self.pki.root).decode(),
               "pck_crl": self.crls[0].public_bytes(serialization.Encoding.DER).hex(),
               "root_ca_crl": self.crls[1].public_bytes(serialization.Encoding.DER).hex(),
               "tcb_info_issuer_chain": self.signing_pem.decode(), "tcb_info": tcb_body, "tcb_info_signature": tcb_sig}
        if self.qe_identity:
            qe_body, qe_sig = _split_signed(self.qe_identity)
            out.update(qe_identity_issuer_chain=self.signing_pem.decode(), qe_identity=qe_body,
                       qe_identity_signature=qe_sig)
        return json.dumps(out)


def _split_signed(text: str) -> tuple[str, str]:
    """(exact signed body, hex signature) of a ``signed_json`` text."""
    start, end = text.index(":") + 1, text.rindex(',"signature":')
    return text[start:end], json.loads(text)["signature"]


def tdx_world(pki: IntelPki | None = None, **pck_args: Any) -> TdxWorld:
    pki = pki or intel_pki()
    pck_key, pck = pki.pck(**pck_args)
    return TdxWorld(pki, pck_key, pck,
                    tcb_info=signed_json("tcbInfo", tcb_info_doc(), pki.signing_key),
                    qe_identity=signed_json("enclaveIdentity", qe_identity_doc(), pki.signing_key),
                    crls=(pki.crl("ca"), pki.crl("root")),
                    signing_pem=pem(pki.signing, pki.root))
