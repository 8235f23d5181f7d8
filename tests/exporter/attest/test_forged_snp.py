"""SEV-SNP evidence forged under a private AMD-like hierarchy: each attack is refused for its one reason.

Every negative test changes one thing in otherwise valid evidence (re-signed with the test keys), so every check
before the targeted one passes; the controls show the unchanged evidence is accepted.
"""

from __future__ import annotations

import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from exporter.attest.errors import EvidenceError
from exporter.attest.evidence import Attester, detect_format
from exporter.attest.snp import parse_report
from exporter.attest.verify_snp import SnpCerts, SnpVerifier

from . import forge
from .forge import AT, MILAN_TCB

AMD = forge.amd_pki()
VCEK_KEY, VCEK = AMD.vcek()


@pytest.fixture(scope="module")
def verifier() -> SnpVerifier:
    return SnpVerifier(forge.trust_with(AMD.ark))


def certs(leaf: x509.Certificate = VCEK, *chain: x509.Certificate) -> SnpCerts:
    return SnpCerts(leaf, chain or (AMD.ask, AMD.ark))


def reason_of(verifier: SnpVerifier, report: bytes, snp_certs: SnpCerts) -> tuple[str, str]:
    with pytest.raises(EvidenceError) as err:
        verifier.verify(report, snp_certs, AT)
    return err.value.reason, str(err.value)


@pytest.mark.parametrize("version", [2, 3, 5])
def test_control_forged_report_under_trusted_test_ark_verifies(verifier, version: int) -> None:
    verified = verifier.verify(forge.snp_report(VCEK_KEY, version=version), certs(), AT)
    assert (verified.product, verified.signer, verified.tcb) == ("Milan", "vcek", MILAN_TCB)


def test_control_vlek_report_verifies(verifier) -> None:
    key, vlek = AMD.vlek()
    verified = verifier.verify(forge.snp_report(key, signing_key=1), certs(vlek, AMD.asvk, AMD.ark), AT)
    assert verified.signer == "vlek"


def test_untrusted_test_ark_is_a_chain_error() -> None:
    reason, _ = reason_of(SnpVerifier(forge.trust_with()), forge.snp_report(VCEK_KEY), certs())
    assert reason == "chain"


# --- 1. a VCEK acting as a CA -------------------------------------------------------------------------------------

def test_vcek_minted_by_a_vcek_key_is_refused(verifier) -> None:
    """Whoever holds one VCEK private key mints a 'VCEK' with the newest TCB and any hwID: the chain shape stops it."""
    newest = {"bootloader": 255, "tee": 255, "snp": 255, "microcode": 255}
    key, minted = AMD.vcek(newest, b"\x99" * 64, signer=VCEK_KEY, issuer=VCEK.subject)
    report = forge.snp_report(key, tcb=newest, chip_id=b"\x99" * 64)
    reason, message = reason_of(verifier, report, certs(minted, VCEK, AMD.ask, AMD.ark))
    assert reason == "chain" and "expected exactly 3" in message


def test_vcek_minted_by_a_vcek_key_named_as_the_ask_is_refused(verifier) -> None:
    """The minted leaf names the ASK as issuer; only the VCEK's key signed it, so no ASK verifies it."""
    key, minted = AMD.vcek(signer=VCEK_KEY)
    reason, message = reason_of(verifier, forge.snp_report(key), certs(minted, AMD.ask, AMD.ark))
    assert reason == "chain" and "is not signed by" in message


# --- 5. binding of the certificate to the report (VCEK spec 57230) -------------------------------------------------

def test_report_tcb_other_than_the_vceks_is_refused(verifier) -> None:
    newer = dict(MILAN_TCB, snp=MILAN_TCB["snp"] + 1)
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY, tcb=newer), certs())
    assert reason == "certificate" and "does not match the report's reported TCB" in message
    assert message.endswith("(snp)")  # names the component that differs


def test_report_chip_id_other_than_the_vcek_hwid_is_refused(verifier) -> None:
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY, chip_id=b"\x01" * 64), certs())
    assert reason == "certificate" and "hwID" in message


def test_zero_chip_id_without_mask_chip_key_is_refused(verifier) -> None:
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY, chip_id=bytes(64)), certs())
    assert reason == "certificate" and "hwID" in message


def test_cpuid_product_other_than_the_certificates_is_refused(verifier) -> None:
    genoa_cpuid = (0x19, 0x11, 0x01)
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY, cpuid=genoa_cpuid), certs())
    assert reason == "certificate" and "is not a Milan" in message


def test_unknown_cpuid_product_is_refused(verifier) -> None:
    reason, _ = reason_of(verifier, forge.snp_report(VCEK_KEY, cpuid=(0x17, 0x31, 0x00)), certs())
    assert reason == "certificate"


def test_vcek_without_hwid_extension_is_refused(verifier) -> None:
    key, vcek = AMD.vcek(hwid=None)
    reason, message = reason_of(verifier, forge.snp_report(key), certs(vcek))
    assert reason == "certificate" and "hwID extension" in message


@pytest.mark.parametrize("dropped", sorted(MILAN_TCB))
def test_vcek_without_a_tcb_extension_is_refused(verifier, dropped: str) -> None:
    key, vcek = AMD.vcek({k: v for k, v in MILAN_TCB.items() if k != dropped})
    reason, message = reason_of(verifier, forge.snp_report(key), certs(vcek))
    assert reason == "certificate" and dropped in message


def test_vcek_given_for_a_vlek_signed_report_is_refused(verifier) -> None:
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY, signing_key=1), certs())
    assert reason == "certificate" and "signed by a VLEK but the certificate given is a VCEK" in message


def test_another_vceks_report_fails_the_signature_first(verifier) -> None:
    other_key, _ = AMD.vcek()
    reason, message = reason_of(verifier, forge.snp_report(other_key), certs())
    assert (reason, message) == ("signature", "SNP report signature does not verify with the VCEK/VLEK public key")


# --- 5. strict report layout ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, 1, 4, 6, 0x81])
def test_unknown_report_versions_are_unsupported(verifier, version: int) -> None:
    reason, _ = reason_of(verifier, forge.snp_report(VCEK_KEY, version=version), certs())
    assert reason == "unsupported"


@pytest.mark.parametrize(("version", "offset"), [
    (3, 0x4C), (3, 0x18B), (2, 0x188), (3, 0x1EB), (3, 0x1EF), (3, 0x1F8), (5, 0x208), (3, 0x29F),
])
def test_reserved_bytes_must_be_zero(verifier, version: int, offset: int) -> None:
    report = forge.snp_report(VCEK_KEY, version=version, patch={offset: b"\x01"})
    reason, message = reason_of(verifier, report, certs())
    assert reason == "malformed" and "reserved bytes" in message


def test_mit_vectors_of_v5_are_not_reserved(verifier) -> None:
    report = forge.snp_report(VCEK_KEY, version=5, patch={0x1F8: b"\x01", 0x200: b"\x01"})
    assert verifier.verify(report, certs(), AT).version == 5


def test_nonzero_signature_padding_is_malformed(verifier) -> None:
    report = bytearray(forge.snp_report(VCEK_KEY))
    report[0x2A0 + 60] = 1
    reason, _ = reason_of(verifier, bytes(report), certs())
    assert reason == "malformed"


def test_signer_info_reserved_bits_must_be_zero(verifier) -> None:
    report = forge.snp_report(VCEK_KEY, patch={0x48: struct.pack("<I", 1 << 7)})
    reason, message = reason_of(verifier, report, certs())
    assert reason == "malformed" and "signer info" in message


@pytest.mark.parametrize("policy", [0x10000, 0x30000 | (1 << 40)])
def test_guest_policy_reserved_bits_are_checked(verifier, policy: int) -> None:
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY, policy=policy), certs())
    assert reason == "malformed" and "guest policy" in message


def test_mask_chip_key_with_a_chip_id_is_malformed(verifier) -> None:
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY, mask_chip_key=True), certs())
    assert reason == "malformed" and "MASK_CHIP_KEY" in message


def test_mask_chip_key_report_is_unsigned_and_refused(verifier) -> None:
    """With MASK_CHIP_KEY the firmware writes a zero signature: such a report can never verify."""
    report = bytearray(forge.snp_report(VCEK_KEY, mask_chip_key=True, chip_id=bytes(64)))
    report[0x2A0:0x330] = bytes(0x90)
    reason, _ = reason_of(verifier, bytes(report), certs())
    assert reason == "signature"


def test_v5_report_with_guest_svn_0x81_is_a_report_not_a_quote(verifier) -> None:
    """Bytes 0-7 read as a quote header (version 5, TEE type 0x81) if one looks at the wrong fields only."""
    report = forge.snp_report(VCEK_KEY, version=5, guest_svn=0x81)
    assert detect_format(report) == "sev-snp"
    outcome = Attester(forge.trust_with(AMD.ark)).check(report, at=AT, snp_certs=certs())
    assert outcome.ok and outcome.verified is not None and outcome.verified.details["guest_svn"] == "129"


def test_parsed_fields_follow_the_abi_offsets() -> None:
    report = parse_report(forge.snp_report(VCEK_KEY, version=5, vmpl=2, policy=0x70000, guest_svn=7))
    assert (report.version, report.vmpl, report.guest_svn, report.migrate_ma_allowed) == (5, 2, 7, True)
    assert report.cpuid == (0x19, 0x01, 0x01) and report.product == "Milan"


# --- never crash on hostile certificates ----------------------------------------------------------------------------

def _patched_cert(cert: x509.Certificate, old: bytes, new: bytes) -> x509.Certificate:
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(old) == 1
    return x509.load_der_x509_certificate(der.replace(old, new))


def test_vcek_with_an_invalid_ec_point_is_a_certificate_error(verifier) -> None:
    point = VCEK.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    broken = _patched_cert(VCEK, point, point[:-1] + bytes([point[-1] ^ 1]))
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY), certs(broken))
    assert reason == "certificate" and message.startswith("VCEK: unusable public key")


def test_vcek_with_an_unknown_curve_is_a_certificate_error(verifier) -> None:
    secp384r1 = bytes.fromhex("06052b81040022")
    broken = _patched_cert(VCEK, secp384r1, bytes.fromhex("06052b81040063"))
    reason, _ = reason_of(verifier, forge.snp_report(VCEK_KEY), certs(broken))
    assert reason == "certificate"


# --- Turin: FMC in the TCB, an 8-byte hwID ----------------------------------------------------------------------------

TURIN = forge.amd_pki("Turin")
TURIN_CPUID = (0x1A, 0x02, 0x01)


def test_control_turin_report_binds_fmc_and_8_byte_hwid() -> None:
    key, vcek = TURIN.vcek(forge.TURIN_TCB, b"\x5a" * 8)
    report = forge.snp_report(key, tcb=forge.TURIN_TCB, chip_id=b"\x5a" * 8 + bytes(56), cpuid=TURIN_CPUID)
    verified = SnpVerifier(forge.trust_with(TURIN.ark)).verify(report, SnpCerts(vcek, (TURIN.ask,)), AT)
    assert verified.product == "Turin" and verified.tcb == forge.TURIN_TCB


@pytest.mark.parametrize(("tcb", "chip_id", "what"), [
    (dict(forge.TURIN_TCB, fmc=2), b"\x5a" * 8 + bytes(56), "fmc"),
    (forge.TURIN_TCB, b"\x5a" * 8 + b"\x01" + bytes(55), "hwID"),  # bytes past the 8-byte id must be zero
])
def test_turin_binding(tcb, chip_id: bytes, what: str) -> None:
    key, vcek = TURIN.vcek(forge.TURIN_TCB, b"\x5a" * 8)
    report = forge.snp_report(key, tcb=tcb, chip_id=chip_id, cpuid=TURIN_CPUID)
    with pytest.raises(EvidenceError) as err:
        SnpVerifier(forge.trust_with(TURIN.ark)).verify(report, SnpCerts(vcek, (TURIN.ask,)), AT)
    assert err.value.reason == "certificate" and what in str(err.value)


def test_turin_vcek_without_fmc_is_refused() -> None:
    key, vcek = TURIN.vcek({k: v for k, v in forge.TURIN_TCB.items() if k != "fmc"}, b"\x5a" * 8)
    with pytest.raises(EvidenceError) as err:
        SnpVerifier(forge.trust_with(TURIN.ark)).verify(forge.snp_report(key, cpuid=TURIN_CPUID),
                                                         SnpCerts(vcek, (TURIN.ask,)), AT)
    assert err.value.reason == "certificate" and "VCEK lacks its TCB extension(s): fmc" in str(err.value)
