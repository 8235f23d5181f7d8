"""SEV-SNP signing certificates as given (snpguest folders, hostile extensions) and what a verified report yields.

Found by mutation testing (docs/testing.md): each test here fails when the check or field it names is switched off
or altered in exporter/attest/verify_snp.py; inputs are forged (tests/exporter/attest/forge.py) so every earlier
check passes.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exporter.attest.errors import EvidenceError
from exporter.attest.verify_snp import SnpCerts, SnpVerifier, chain_from, load_certs_dir

from . import forge
from .forge import AT, MILAN_TCB

AMD = forge.amd_pki()
VCEK_KEY, VCEK = AMD.vcek()
TURIN = forge.amd_pki("Turin")
TURIN_CPUID = (0x1A, 0x02, 0x01)


@pytest.fixture(scope="module")
def verifier() -> SnpVerifier:
    return SnpVerifier(forge.trust_with(AMD.ark, TURIN.ark))


def reason_of(verifier: SnpVerifier, report: bytes, certs: SnpCerts) -> tuple[str, str]:
    with pytest.raises(EvidenceError) as err:
        verifier.verify(report, certs, AT)
    return err.value.reason, str(err.value)


# --- snpguest certificate folders ----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pem", ".der", ".crt", ".cer"])
def test_certs_folder_reads_every_snpguest_suffix(tmp_path, suffix: str) -> None:
    encoding = serialization.Encoding.PEM if suffix == ".pem" else serialization.Encoding.DER
    (tmp_path / f"vcek{suffix}").write_bytes(VCEK.public_bytes(encoding))
    (tmp_path / f"ask{suffix}").write_bytes(AMD.ask.public_bytes(encoding))
    assert load_certs_dir(tmp_path) == SnpCerts(VCEK, (AMD.ask,))


@pytest.mark.parametrize(("names", "found"), [((), 0), (("vcek.pem", "vlek.pem"), 2)])
def test_certs_folder_needs_exactly_one_signing_certificate(tmp_path, names, found: int) -> None:
    for name in names:
        (tmp_path / name).write_bytes(forge.pem(VCEK))
    with pytest.raises(EvidenceError) as err:
        load_certs_dir(tmp_path)
    assert err.value.reason == "certificate" and str(err.value).endswith(
        f"expected exactly one vcek or vlek certificate, found {found}")


def test_unreadable_certificate_file_is_named(tmp_path) -> None:
    (tmp_path / "vcek.pem").mkdir()  # not a regular file
    with pytest.raises(EvidenceError) as err:
        load_certs_dir(tmp_path)
    expected = f"{tmp_path / 'vcek.pem'}: cannot read: not a regular file"
    assert (err.value.reason, str(err.value)) == ("certificate", expected)


def test_oversized_certificate_file_is_not_read(tmp_path) -> None:
    """A 1 MiB cap: a real VCEK is about 1.3 KiB. The oversized file is otherwise a valid PEM."""
    text = forge.pem(VCEK)
    (tmp_path / "vcek.pem").write_bytes(text + b"#" * (1024 * 1024 + 1 - len(text)))
    with pytest.raises(EvidenceError) as err:
        load_certs_dir(tmp_path)
    assert err.value.reason == "certificate" and "larger than 1048576 bytes" in str(err.value)
    (tmp_path / "vcek.pem").write_bytes(text + b"#" * (1024 * 1024 - len(text)))  # exactly at the cap
    assert load_certs_dir(tmp_path).leaf == VCEK


def test_malformed_certificate_file_is_named(tmp_path) -> None:
    (tmp_path / "vcek.der").write_bytes(b"\x30\x03\x02\x01\x00")
    with pytest.raises(EvidenceError) as err:
        load_certs_dir(tmp_path)
    assert err.value.reason == "certificate" and str(err.value).startswith(f"{tmp_path / 'vcek.der'}: ")


def test_chain_from_a_list_splits_leaf_and_chain() -> None:
    assert chain_from([VCEK, AMD.ask, AMD.ark]) == SnpCerts(VCEK, (AMD.ask, AMD.ark))


def test_leaf_without_its_ask_anywhere_is_a_chain_error(verifier) -> None:
    """The test ASK is neither given nor shipped: nothing can vouch for the VCEK."""
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY), SnpCerts(VCEK, ()))
    assert (reason, message) == ("chain", "no ASK/ASVK for 'SEV-Milan' given or shipped")


# --- hostile signing certificates ----------------------------------------------------------------------------------

def test_signing_certificate_not_issued_by_an_amd_ca_name_is_refused(verifier) -> None:
    key, leaf = AMD.vcek(issuer=forge.amd_name("ACME-Milan"))
    reason, message = reason_of(verifier, forge.snp_report(key), SnpCerts(leaf, (AMD.ask, AMD.ark)))
    assert (reason, message) == ("certificate", "signing certificate issuer 'ACME-Milan' is not an AMD ASK/ASVK")


def test_vcek_with_a_duplicated_extension_is_a_certificate_error(verifier, tmp_path) -> None:
    """RFC 5280 4.2: an extension appears at most once. cryptography raises DuplicateExtension (not a ValueError):
    it must still be a refusal with a reason, never a traceback."""
    der = VCEK.public_bytes(serialization.Encoding.DER)
    struct_version, product_name = forge.der_oid("1.3.6.1.4.1.3704.1.1"), forge.der_oid("1.3.6.1.4.1.3704.1.2")
    doubled = x509.load_der_x509_certificate(der.replace(struct_version, product_name))
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY), SnpCerts(doubled, (AMD.ask, AMD.ark)))
    assert reason == "certificate" and message.startswith("VCEK extensions unreadable: ")
    (tmp_path / "vcek.der").write_bytes(doubled.public_bytes(serialization.Encoding.DER))
    with pytest.raises(EvidenceError) as err:
        load_certs_dir(tmp_path)
    assert err.value.reason == "certificate" and "not a valid certificate" in str(err.value)


def test_tcb_extension_that_is_not_an_integer_is_a_certificate_error(verifier) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    exts = [e for e in forge.amd_leaf_extensions(MILAN_TCB, b"\x5a" * 64)
            if not (isinstance(e, x509.UnrecognizedExtension) and e.oid.dotted_string == forge.AMD_TCB_OIDS["snp"])]
    exts.append(x509.UnrecognizedExtension(x509.ObjectIdentifier(forge.AMD_TCB_OIDS["snp"]), forge.der_octets(b"\x08")))
    leaf = forge.issue(forge.amd_name("SEV-VCEK"), AMD.ask.subject, key.public_key(), AMD.ask_key, ca=None,
                       extensions=exts)
    reason, message = reason_of(verifier, forge.snp_report(key), SnpCerts(leaf, (AMD.ask, AMD.ark)))
    assert reason == "certificate" and message.startswith("VCEK TCB extension malformed: ")


def test_vcek_lacking_two_tcb_extensions_names_both(verifier) -> None:
    key, vcek = AMD.vcek({"snp": 8, "microcode": 115})
    reason, message = reason_of(verifier, forge.snp_report(key), SnpCerts(vcek, (AMD.ask, AMD.ark)))
    assert (reason, message) == ("certificate", "VCEK lacks its TCB extension(s): bootloader, tee")


def test_vcek_with_a_p256_key_is_refused(verifier) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = forge.issue(forge.amd_name("SEV-VCEK"), AMD.ask.subject, key.public_key(), AMD.ask_key, ca=None,
                       extensions=forge.amd_leaf_extensions(MILAN_TCB, b"\x5a" * 64))
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY), SnpCerts(leaf, (AMD.ask, AMD.ark)))
    assert (reason, message) == ("certificate", "VCEK key is not ECDSA P-384")


# --- Turin: the certificate's product decides the TCB layout -------------------------------------------------------

def test_turin_report_without_cpuid_is_decoded_with_the_certificates_layout(verifier) -> None:
    """A v2 report has no CPUID: the TCB bytes are read in the layout of the VCEK's product (Turin), not Milan's."""
    key, vcek = TURIN.vcek(forge.TURIN_TCB, b"\x5a" * 8)
    report = forge.snp_report(key, version=2, tcb=forge.TURIN_TCB, chip_id=b"\x5a" * 8 + bytes(56))
    verified = verifier.verify(report, SnpCerts(vcek, (TURIN.ask,)), AT)
    assert verified.tcb == forge.TURIN_TCB and verified.product == "Turin"


def test_turin_vcek_for_a_milan_cpuid_is_refused_for_the_product(verifier) -> None:
    """The TCB is read in the certificate's layout, so it matches and the CPUID check names the product."""
    key, vcek = TURIN.vcek(forge.TURIN_TCB, b"\x5a" * 8)
    report = forge.snp_report(key, tcb=forge.TURIN_TCB, chip_id=b"\x5a" * 8 + bytes(56))  # Milan CPUID
    reason, message = reason_of(verifier, report, SnpCerts(vcek, (TURIN.ask,)))
    expected = "report CPUID family 0x19 model 0x1 is not a Turin (the certificate's product)"
    assert (reason, message) == ("certificate", expected)


def test_turin_vcek_without_fmc_names_it(verifier) -> None:
    key, vcek = TURIN.vcek({k: v for k, v in forge.TURIN_TCB.items() if k != "fmc"}, b"\x5a" * 8)
    reason, message = reason_of(verifier, forge.snp_report(key, cpuid=TURIN_CPUID), SnpCerts(vcek, (TURIN.ask,)))
    assert (reason, message) == ("certificate", "VCEK lacks its TCB extension(s): fmc")


def test_turin_hwid_mismatch_is_refused(verifier) -> None:
    key, vcek = TURIN.vcek(forge.TURIN_TCB, b"\x5a" * 8)
    report = forge.snp_report(key, tcb=forge.TURIN_TCB, chip_id=b"\x5b" * 8 + bytes(56), cpuid=TURIN_CPUID)
    reason, message = reason_of(verifier, report, SnpCerts(vcek, (TURIN.ask,)))
    assert (reason, message) == ("certificate", "VCEK hwID does not match the report's chip_id")


# --- what a verified report yields ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("policy", "debug", "migrate_ma"), [(0x30000, False, "false"), (0xB0000, True, "false"),
                                                               (0x70000, False, "true")])
def test_verified_report_fields(verifier, policy: int, debug: bool, migrate_ma: str) -> None:
    report = forge.snp_report(VCEK_KEY, policy=policy, vmpl=2, guest_svn=7, measurement=b"\xab" * 48)
    verified = verifier.verify(report, SnpCerts(VCEK, (AMD.ask, AMD.ark)), AT)
    assert (verified.tee_type, verified.evidence_format, verified.version) == ("sev-snp", "snp-report", 3)
    assert verified.sha256 == hashlib.sha256(report).hexdigest()
    assert verified.measurement == "sha384:" + "ab" * 48
    assert (verified.debug, verified.tcb, verified.product, verified.signer) == (debug, MILAN_TCB, "Milan", "vcek")
    assert verified.details == {"report_data": "33" * 64, "policy": hex(policy), "vmpl": "2", "guest_svn": "7",
                                "migrate_ma": migrate_ma, "host_data": "00" * 32, "chip_id": "5a" * 64}


def test_tcb_mismatch_names_every_component_that_differs(verifier) -> None:
    other = dict(MILAN_TCB, snp=MILAN_TCB["snp"] + 1, tee=MILAN_TCB["tee"] + 1)
    reason, message = reason_of(verifier, forge.snp_report(VCEK_KEY, tcb=other), SnpCerts(VCEK, (AMD.ask, AMD.ark)))
    assert reason == "certificate" and message.endswith("(snp, tee)")
