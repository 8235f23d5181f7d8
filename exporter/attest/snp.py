"""AMD SEV-SNP attestation report parsing (pure: bytes in, values out).

Layout: AMD SEV Secure Nested Paging Firmware ABI Specification (pub. 56860), Table "ATTESTATION_REPORT
Structure" — 1184 (0x4A0) bytes, little-endian integers. Only the versions whose layout is defined are parsed:
2, 3 (adds the CPUID family/model/stepping bytes at 0x188) and 5 (adds LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR
at 0x1F8/0x200); any other version is ``unsupported`` rather than read with a guessed layout. Every reserved
area those layouts mark "must be zero" is checked, as are the guest policy's reserved bits (bit 17 must be one,
bits 63:26 zero; table "Guest Policy Structure"). The signature (0x2A0) is ECDSA P-384 with SHA-384 over bytes
0x000-0x29F; R and S are 72-byte little-endian, zero-padded integers (the padding is checked to be zero).
With MASK_CHIP_KEY set the firmware leaves the report unsigned (section 7.3); a report claiming the bit with a
non-zero CHIP_ID is malformed (go-sev-guest applies the same rule).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from exporter.attest.errors import EvidenceError

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = (2, 3, 5)
SIG_ALGO_ECDSA_P384_SHA384 = 1
POLICY_DEBUG_BIT = 1 << 19
POLICY_MIGRATE_MA_BIT = 1 << 18
POLICY_RESERVED_ONE = 1 << 17
POLICY_MBZ_MASK = ~((1 << 26) - 1) & (2**64 - 1)
KEY_INFO_MBZ_MASK = ~0x1F & 0xFFFFFFFF
SIGNING_KEY_VCEK, SIGNING_KEY_VLEK = 0, 1

# CPUID family -> product, for reports (v3+) that carry it. Family 19h model 0xh Milan, 1xh Genoa; 1Ah Turin.
_FAMILY_MODELS = {(0x19, 0x0): "Milan", (0x19, 0x1): "Genoa", (0x19, 0xA): "Genoa", (0x1A, 0x0): "Turin", (0x1A, 0x1): "Turin"}


@dataclass(frozen=True)
class TcbVersion:
    """One TCB_VERSION (u64). Field positions differ between Milan/Genoa and Turin (which adds FMC)."""

    raw: int
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    def components(self) -> dict[str, int]:
        out = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp, "microcode": self.microcode}
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out


def decode_tcb(raw: int, product: str | None) -> TcbVersion:
    """Milan/Genoa: byte0 bootloader, 1 tee, 6 snp, 7 microcode. Turin: 0 fmc, 1 bootloader, 2 tee, 3 snp, 7 ucode."""
    b = raw.to_bytes(8, "little")
    if product == "Turin":
        return TcbVersion(raw, bootloader=b[1], tee=b[2], snp=b[3], microcode=b[7], fmc=b[0])
    return TcbVersion(raw, bootloader=b[0], tee=b[1], snp=b[6], microcode=b[7])


@dataclass(frozen=True)
class SnpReport:
    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb_raw: int
    platform_info: int
    signing_key: int  # 0 VCEK, 1 VLEK
    mask_chip_key: bool
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    reported_tcb_raw: int
    cpuid: tuple[int, int, int] | None  # (family, model, stepping), v3+
    chip_id: bytes
    committed_tcb_raw: int
    launch_tcb_raw: int
    signature_r: int
    signature_s: int

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def debug_allowed(self) -> bool:
        return bool(self.policy & POLICY_DEBUG_BIT)

    @property
    def product(self) -> str | None:
        """Product name from the CPUID bytes (v3+); ``None`` when the report does not say."""
        if self.cpuid is None:
            return None
        family, model, _ = self.cpuid
        return _FAMILY_MODELS.get((family, model >> 4))

    @property
    def migrate_ma_allowed(self) -> bool:
        return bool(self.policy & POLICY_MIGRATE_MA_BIT)

    def reported_tcb(self, product: str | None = None) -> TcbVersion:
        return decode_tcb(self.reported_tcb_raw, product or self.product)


def _reserved_ranges(version: int) -> list[tuple[int, int]]:
    """[start, end) byte ranges that the report layout of ``version`` marks reserved, must be zero."""
    ranges = [(0x4C, 0x50), (0x18B if version >= 3 else 0x188, 0x1A0), (0x1EB, 0x1EC), (0x1EF, 0x1F0),
              (0x208 if version >= 5 else 0x1F8, 0x2A0),
              (0x2A0 + 48, 0x2A0 + 72), (0x2E8 + 48, 0x2E8 + 72),  # R, S are P-384 values: 48 of 72 bytes used
              (0x330, REPORT_SIZE)]
    return ranges


def _check_reserved(data: bytes, version: int, policy: int, key_info: int) -> None:
    for start, end in _reserved_ranges(version):
        if any(data[start:end]):
            raise EvidenceError("malformed", f"SNP report reserved bytes {start:#x}-{end - 1:#x} are not zero")
    if key_info & KEY_INFO_MBZ_MASK:
        raise EvidenceError("malformed", f"SNP report signer info {key_info:#x} has reserved bits set")
    if not policy & POLICY_RESERVED_ONE or policy & POLICY_MBZ_MASK:
        raise EvidenceError("malformed", f"SNP guest policy {policy:#x}: bit 17 must be one and bits 63:26 zero")
    if key_info & 0x2 and any(data[0x1A0:0x1E0]):
        raise EvidenceError("malformed", "SNP report sets MASK_CHIP_KEY but carries a non-zero CHIP_ID")


def parse_report(data: bytes) -> SnpReport:
    """Parse one attestation report; anything else raises ``EvidenceError`` (truncated/malformed/unsupported)."""
    if not isinstance(data, (bytes, bytearray)):
        raise EvidenceError("malformed", "SNP report must be bytes")
    data = bytes(data)
    if len(data) < REPORT_SIZE:
        raise EvidenceError("truncated", f"SNP report truncated: {len(data)} bytes, need {REPORT_SIZE}")
    if len(data) > REPORT_SIZE:
        raise EvidenceError("malformed", f"SNP report is {len(data)} bytes, expected exactly {REPORT_SIZE}")
    version, guest_svn, policy = struct.unpack_from("<IIQ", data, 0x00)
    if version not in SUPPORTED_VERSIONS:
        raise EvidenceError("unsupported", f"SNP report version {version} not supported "
                                           f"(known layouts: {', '.join(map(str, SUPPORTED_VERSIONS))})")
    vmpl, sig_algo, current_tcb, platform_info, key_info = struct.unpack_from("<IIQQI", data, 0x30)
    if sig_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise EvidenceError("unsupported", f"SNP signature algorithm {sig_algo} not supported (need 1)")
    signing_key = (key_info >> 2) & 0x7
    if signing_key not in (SIGNING_KEY_VCEK, SIGNING_KEY_VLEK):
        raise EvidenceError("unsupported", f"SNP signing key {signing_key} not supported (0 VCEK, 1 VLEK)")
    if vmpl > 3:
        raise EvidenceError("malformed", f"SNP report VMPL {vmpl} out of range")
    _check_reserved(data, version, policy, key_info)
    (reported_tcb,) = struct.unpack_from("<Q", data, 0x180)
    cpuid = (data[0x188], data[0x189], data[0x18A]) if version >= 3 else None
    committed_tcb, = struct.unpack_from("<Q", data, 0x1E0)
    launch_tcb, = struct.unpack_from("<Q", data, 0x1F0)
    return SnpReport(
        raw=data, version=version, guest_svn=guest_svn, policy=policy,
        family_id=data[0x10:0x20], image_id=data[0x20:0x30], vmpl=vmpl, signature_algo=sig_algo,
        current_tcb_raw=current_tcb, platform_info=platform_info, signing_key=signing_key,
        mask_chip_key=bool(key_info & 0x2), report_data=data[0x50:0x90], measurement=data[0x90:0xC0],
        host_data=data[0xC0:0xE0], id_key_digest=data[0xE0:0x110], author_key_digest=data[0x110:0x140],
        report_id=data[0x140:0x160], reported_tcb_raw=reported_tcb, cpuid=cpuid, chip_id=data[0x1A0:0x1E0],
        committed_tcb_raw=committed_tcb, launch_tcb_raw=launch_tcb,
        signature_r=int.from_bytes(data[0x2A0:0x2E8], "little"),
        signature_s=int.from_bytes(data[0x2E8:0x330], "little"),
    )
