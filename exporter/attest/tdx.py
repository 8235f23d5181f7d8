"""Intel TDX quote parsing, versions 4 and 5 (pure: bytes in, values out).

Layout: Intel TDX DCAP Quoting Library API, appendix "Quote Format" (v4) and the TDX 1.5 quote v5 addendum:

    header (48) | body | u32 sig_data_len | sig data
    v4 body:  TD report (584)
    v5 body:  u16 body_type | u32 body_size | body (type 2: TDX 1.0 report 584, type 3: TDX 1.5 report 648)
    sig data: ECDSA r||s (64) | attestation key x||y (64) | cert data (u16 type, u32 size, data)
    cert data type 6 (QE report certification data): QE report (384) | QE report signature (64) |
              u16 auth_data_len | auth data | inner cert data (type 5: PCK chain, PEM)

Integers are little-endian. Bytes after the signature data are tolerated (real quotes carry padding); data that
stops inside any declared structure is ``truncated``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from exporter.attest.errors import EvidenceError

HEADER_SIZE = 48
TD_REPORT_10_SIZE = 584
TD_REPORT_15_SIZE = 648
QE_REPORT_SIZE = 384
ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x81
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
TD_ATTRIBUTES_DEBUG = 1 << 0
# Intel's Quoting Enclave vendor id (DCAP quote format, header QE_VENDOR_ID); quotes from any other QE are refused.
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
MAX_CERT_DATA = 64 * 1024  # far above any real PCK chain; bounds what a hostile length can make us slice


@dataclass(frozen=True)
class TdReport:
    """TD report body (TDREPORT's TDINFO + TEE_TCB_INFO parts carried in the quote)."""

    tee_tcb_svn: bytes
    mrseam: bytes
    mrsignerseam: bytes
    seam_attributes: bytes
    td_attributes: int
    xfam: int
    mrtd: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None  # TDX 1.5
    mrservicetd: bytes | None = None  # TDX 1.5

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes & TD_ATTRIBUTES_DEBUG)


@dataclass(frozen=True)
class QeReport:
    """SGX enclave report body of the Quoting Enclave."""

    raw: bytes
    cpusvn: bytes
    miscselect: int
    attributes: bytes
    mrenclave: bytes
    mrsigner: bytes
    isvprodid: int
    isvsvn: int
    report_data: bytes


@dataclass(frozen=True)
class TdxQuote:
    raw: bytes
    version: int
    att_key_type: int
    tee_type: int
    qe_vendor_id: bytes
    user_data: bytes
    body_type: int  # 2 TDX 1.0, 3 TDX 1.5 (v4 quotes are always 2)
    report: TdReport
    signed_bytes: bytes  # header + body (for v5 including the body descriptor)
    signature: bytes  # r||s big-endian
    attestation_key: bytes  # x||y
    qe_report: QeReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes
    trailing: int  # bytes after the signature data


class _Reader:
    """Bounds-checked cursor: every read past the end is a ``truncated`` EvidenceError."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, start, len(data) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise EvidenceError("truncated", f"TDX quote truncated in {what} at offset {self.pos}: need {n} "
                                             f"bytes, {self.end - self.pos} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")


# TD report 1.0 fields in order (TDX module spec, TDREPORT/TEE_TCB_INFO as carried in the quote body).
_TD_REPORT_10 = struct.Struct("<16s48s48s8sQQ48s48s48s48s48s48s48s48s64s")
_TD_REPORT_15_EXTRA = struct.Struct("<16s48s")


def parse_td_report(body: bytes) -> TdReport:
    if len(body) not in (TD_REPORT_10_SIZE, TD_REPORT_15_SIZE):
        raise EvidenceError("malformed", f"TD report body of {len(body)} bytes")
    (tcb_svn, mrseam, mrsignerseam, seam_attributes, td_attributes, xfam, mrtd, mrconfigid, mrowner,
     mrownerconfig, rtmr0, rtmr1, rtmr2, rtmr3, report_data) = _TD_REPORT_10.unpack_from(body, 0)
    tcb_svn2 = mrservicetd = None
    if len(body) == TD_REPORT_15_SIZE:
        tcb_svn2, mrservicetd = _TD_REPORT_15_EXTRA.unpack_from(body, TD_REPORT_10_SIZE)
    return TdReport(tee_tcb_svn=tcb_svn, mrseam=mrseam, mrsignerseam=mrsignerseam, seam_attributes=seam_attributes,
                    td_attributes=td_attributes, xfam=xfam, mrtd=mrtd, mrconfigid=mrconfigid, mrowner=mrowner,
                    mrownerconfig=mrownerconfig, rtmrs=(rtmr0, rtmr1, rtmr2, rtmr3), report_data=report_data,
                    tee_tcb_svn2=tcb_svn2, mrservicetd=mrservicetd)


def parse_qe_report(raw: bytes) -> QeReport:
    (miscselect,) = struct.unpack_from("<I", raw, 16)
    isvprodid, isvsvn = struct.unpack_from("<HH", raw, 256)
    return QeReport(raw=raw, cpusvn=raw[0:16], miscselect=miscselect, attributes=raw[48:64],
                    mrenclave=raw[64:96], mrsigner=raw[128:160], isvprodid=isvprodid, isvsvn=isvsvn,
                    report_data=raw[320:384])


def _body(r: _Reader, version: int) -> tuple[int, bytes]:
    if version == 4:
        return 2, r.take(TD_REPORT_10_SIZE, "TD report")
    body_type, size = r.u16("body type"), r.u32("body size")
    expected = {2: TD_REPORT_10_SIZE, 3: TD_REPORT_15_SIZE}.get(body_type)
    if expected is None:
        raise EvidenceError("unsupported", f"TDX quote v5 body type {body_type} not supported (need 2 or 3)")
    if size != expected:
        raise EvidenceError("malformed", f"TDX quote v5 body type {body_type} declares {size} bytes, "
                                         f"expected {expected}")
    return body_type, r.take(size, "TD report")


def _cert_data(r: _Reader, what: str) -> tuple[int, bytes]:
    cert_type, size = r.u16(f"{what} type"), r.u32(f"{what} size")
    if size > MAX_CERT_DATA:
        raise EvidenceError("malformed", f"TDX {what} size {size} too large")
    return cert_type, r.take(size, what)


def _qe_cert_data(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    r = _Reader(data)
    qe_report, qe_sig = r.take(QE_REPORT_SIZE, "QE report"), r.take(64, "QE report signature")
    auth = r.take(r.u16("QE auth data size"), "QE auth data")
    cert_type, chain = _cert_data(r, "PCK cert data")
    if cert_type != CERT_TYPE_PCK_CHAIN:
        raise EvidenceError("unsupported", f"TDX PCK cert data type {cert_type} not supported (need 5)")
    return qe_report, qe_sig, auth, chain


def parse_quote(data: bytes) -> TdxQuote:
    """Parse a TDX quote v4/v5; anything else raises ``EvidenceError`` (truncated/malformed/unsupported)."""
    if not isinstance(data, (bytes, bytearray)):
        raise EvidenceError("malformed", "TDX quote must be bytes")
    data = bytes(data)
    r = _Reader(data)
    header = r.take(HEADER_SIZE, "header")
    version, att_key_type, tee_type = struct.unpack_from("<HHI", header, 0)
    if version not in (4, 5):
        raise EvidenceError("unsupported", f"TDX quote version {version} not supported (need 4 or 5)")
    if tee_type != TEE_TYPE_TDX:
        raise EvidenceError("unsupported", f"quote TEE type {tee_type:#x} is not TDX (0x81)")
    if att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise EvidenceError("unsupported", f"TDX attestation key type {att_key_type} not supported (need 2)")
    if header[12:28] != INTEL_QE_VENDOR_ID:
        raise EvidenceError("unsupported", f"TDX quote QE vendor id {header[12:28].hex()} is not Intel's")
    body_type, body = _body(r, version)
    signed_end = r.pos
    sig_len = r.u32("signature data length")
    sig = _Reader(data, r.pos, r.pos + sig_len)
    if r.pos + sig_len > len(data):
        raise EvidenceError("truncated", f"TDX quote truncated: signature data declares {sig_len} bytes, "
                                         f"{len(data) - r.pos} present")
    signature, att_key = sig.take(64, "quote signature"), sig.take(64, "attestation key")
    cert_type, cert_data = _cert_data(sig, "certification data")
    if cert_type != CERT_TYPE_QE_REPORT:
        raise EvidenceError("unsupported", f"TDX certification data type {cert_type} not supported (need 6)")
    qe_report, qe_sig, auth, chain = _qe_cert_data(cert_data)
    return TdxQuote(
        raw=data, version=version, att_key_type=att_key_type, tee_type=tee_type,
        qe_vendor_id=header[12:28], user_data=header[28:48], body_type=body_type,
        report=parse_td_report(body), signed_bytes=data[:signed_end], signature=signature,
        attestation_key=att_key, qe_report=parse_qe_report(qe_report), qe_report_signature=qe_sig,
        qe_auth_data=auth, pck_chain_pem=chain, trailing=len(data) - (r.pos + sig_len),
    )
