"""Layout checks of the parsers and the trust store, each proven by an input only it refuses.

SEV-SNP reports here are forged and signed under the test AMD-like hierarchy, so nothing but the targeted field is
wrong; TDX quotes are forged under the test Intel-like hierarchy and then cut or patched at the targeted structure.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from exporter.attest.collateral import load_dir, parse_pcs_json
from exporter.attest.errors import EvidenceError
from exporter.attest.evidence import Attester, detect_format
from exporter.attest.snp import parse_report
from exporter.attest.tdx import HEADER_SIZE, TD_REPORT_10_SIZE, parse_quote, parse_td_report
from exporter.attest.trust import INTEL, ChainVerifier, TrustStore, intel_pck_shape
from exporter.attest.verify_snp import SnpCerts, SnpVerifier, load_certs_dir
from exporter.attest.verify_tdx import TdxVerifier, pck_facts

from . import forge
from .forge import AT, intel_name, issue, pem

VCEK_KEY, _ = forge.amd_pki().vcek()
WORLD = forge.tdx_world()


def snp_reason(report: bytes) -> tuple[str, str]:
    with pytest.raises(EvidenceError) as err:
        parse_report(report)
    return err.value.reason, str(err.value)


@pytest.mark.parametrize(("patch", "reason", "what"), [
    ({0x34: struct.pack("<I", 2)}, "unsupported", "signature algorithm 2"),
    ({0x48: struct.pack("<I", 7 << 2)}, "unsupported", "signing key 7"),
    ({0x30: struct.pack("<I", 4)}, "malformed", "VMPL 4"),
])
def test_snp_header_fields_are_checked(patch, reason: str, what: str) -> None:
    got, message = snp_reason(forge.snp_report(VCEK_KEY, patch=patch))
    assert got == reason and what in message


def test_snp_parser_wants_bytes() -> None:
    with pytest.raises(EvidenceError) as err:
        parse_report("not bytes")  # type: ignore[arg-type]
    assert err.value.reason == "malformed"


def quote_reason(data: bytes) -> tuple[str, str]:
    with pytest.raises(EvidenceError) as err:
        parse_quote(data)
    return err.value.reason, str(err.value)


@pytest.mark.parametrize(("offset", "value", "what"), [
    (0, struct.pack("<H", 3), "version 3"), (2, struct.pack("<H", 3), "key type 3"),
    (4, struct.pack("<I", 0), "TEE type 0x0"),
])
def test_tdx_header_fields_are_checked(offset: int, value: bytes, what: str) -> None:
    quote = bytearray(WORLD.quote())
    quote[offset:offset + len(value)] = value
    reason, message = quote_reason(bytes(quote))
    assert reason == "unsupported" and what in message


def test_td_report_of_another_size_is_malformed() -> None:
    with pytest.raises(EvidenceError) as err:
        parse_td_report(bytes(100))
    assert err.value.reason == "malformed"


def test_tdx_quote_cut_in_the_body_is_truncated() -> None:
    reason, message = quote_reason(WORLD.quote()[:HEADER_SIZE + 100])
    assert reason == "truncated" and "TD report" in message


def test_tdx_parser_wants_bytes() -> None:
    assert quote_reason("not bytes")[0] == "malformed"  # type: ignore[arg-type]


def _v5(body_type: int, size: int) -> bytes:
    quote = bytearray(WORLD.quote(version=5))
    struct.pack_into("<HI", quote, HEADER_SIZE, body_type, size)
    return bytes(quote)


def test_tdx_v5_unknown_body_type_is_unsupported() -> None:
    reason, message = quote_reason(_v5(9, TD_REPORT_10_SIZE))
    assert reason == "unsupported" and "body type 9" in message


def test_tdx_v5_body_size_must_match_its_type() -> None:
    reason, message = quote_reason(_v5(2, TD_REPORT_10_SIZE + 64))
    assert reason == "malformed" and "declares" in message


# Offset of the outer certification data header (u16 type, u32 size) in a v4 quote: header, TD report, signature
# data length, signature, attestation key.
CERT_DATA = HEADER_SIZE + TD_REPORT_10_SIZE + 4 + 64 + 64


def test_tdx_oversized_certification_data_is_malformed() -> None:
    quote = bytearray(WORLD.quote())
    struct.pack_into("<I", quote, CERT_DATA + 2, 10**6)
    reason, message = quote_reason(bytes(quote))
    assert reason == "malformed" and "too large" in message


def test_tdx_inner_cert_data_must_be_a_pck_chain() -> None:
    quote = bytearray(WORLD.quote())
    inner = CERT_DATA + 6 + 384 + 64
    auth_len = struct.unpack_from("<H", quote, inner)[0]
    struct.pack_into("<H", quote, inner + 2 + auth_len, 3)
    reason, message = quote_reason(bytes(quote))
    assert reason == "unsupported" and "PCK cert data type 3" in message


# --- trust store --------------------------------------------------------------------------------------------------

def test_extra_root_with_a_bad_self_signature_is_refused(tmp_path) -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = intel_name("Intel SGX Root CA")
    path = tmp_path / "root.pem"
    path.write_bytes(pem(issue(name, name, key.public_key(), other, ca=True, path_len=1, usage=forge.CA_USAGE)))
    with pytest.raises(EvidenceError) as err:
        TrustStore.default([path])
    assert err.value.reason == "certificate" and "self-signature" in str(err.value)


def test_anchor_with_a_bad_self_signature_anchors_nothing() -> None:
    """A store built directly (not through ``default``) with a root whose self-signature is broken."""
    pki = forge.intel_pki()
    forged_root = issue(pki.root.subject, pki.root.subject, pki.root_key.public_key(),
                        ec.generate_private_key(ec.SECP256R1()), ca=True, path_len=1, usage=forge.CA_USAGE)
    _, pck = pki.pck()
    store = TrustStore(anchors=(forged_root,), intermediates=())
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(store).verify([pck, pki.ca], AT, INTEL, intel_pck_shape)
    assert err.value.reason == "chain" and "self-signature invalid" in str(err.value)


def test_empty_chain_is_a_chain_error() -> None:
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(TrustStore.default()).verify([], AT, INTEL, intel_pck_shape)
    assert err.value.reason == "chain"


def test_leaf_whose_key_usage_allows_cert_signing_is_refused() -> None:
    pki = forge.intel_pki()
    _, pck = pki.pck(ca=False, usage=forge.CA_USAGE)
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(forge.trust_with(pki.root)).verify([pck, pki.ca], AT, INTEL, intel_pck_shape)
    assert err.value.reason == "chain" and "keyUsage is not that of a signing key" in str(err.value)



def test_tdx_signature_data_longer_than_the_quote_is_truncated() -> None:
    reason, message = quote_reason(WORLD.quote()[:-200])
    assert reason == "truncated" and "signature data declares" in message


def test_tdx_outer_cert_data_must_be_qe_report_data() -> None:
    quote = bytearray(WORLD.quote())
    struct.pack_into("<H", quote, CERT_DATA, 5)
    reason, message = quote_reason(bytes(quote))
    assert reason == "unsupported" and "certification data type 5" in message


# --- certificates the verifiers refuse before any signature -------------------------------------------------------

def test_snp_certs_folder_needs_exactly_one_leaf(tmp_path) -> None:
    amd = forge.amd_pki()
    (tmp_path / "ask.pem").write_bytes(pem(amd.ask))
    with pytest.raises(EvidenceError) as err:
        load_certs_dir(tmp_path)
    assert err.value.reason == "certificate" and "found 0" in str(err.value)
    _, vcek = amd.vcek()
    _, vlek = amd.vlek()
    (tmp_path / "vcek.pem").write_bytes(pem(vcek))
    (tmp_path / "vlek.pem").write_bytes(pem(vlek))
    with pytest.raises(EvidenceError) as err:
        load_certs_dir(tmp_path)
    assert "found 2" in str(err.value)


def test_vcek_issued_by_something_else_than_an_ask_is_a_certificate_error() -> None:
    amd = forge.amd_pki()
    key, vcek = amd.vcek(signer=amd.ark_key, issuer=amd.ark.subject)
    with pytest.raises(EvidenceError) as err:
        SnpVerifier(forge.trust_with(amd.ark)).verify(forge.snp_report(key), SnpCerts(vcek, ()), AT)
    assert err.value.reason == "certificate" and "is not an AMD ASK/ASVK" in str(err.value)


def test_vcek_with_a_p256_key_is_a_certificate_error() -> None:
    amd = forge.amd_pki()
    key = ec.generate_private_key(ec.SECP256R1())
    vcek = issue(forge.amd_name("SEV-VCEK"), amd.ask.subject, key.public_key(), amd.ask_key, ca=None,
                 extensions=forge.amd_leaf_extensions(forge.MILAN_TCB, b"\x5a" * 64))
    with pytest.raises(EvidenceError) as err:
        SnpVerifier(forge.trust_with(amd.ark)).verify(forge.snp_report(VCEK_KEY), SnpCerts(vcek, (amd.ask,)), AT)
    assert err.value.reason == "certificate" and "not ECDSA P-384" in str(err.value)


def test_pck_chain_of_the_leaf_alone_is_a_chain_error() -> None:
    quote = forge.tdx_quote(WORLD.pck_key, pem(WORLD.pck))
    with pytest.raises(EvidenceError) as err:
        TdxVerifier(forge.trust_with(WORLD.pki.root)).verify(quote, AT)
    assert err.value.reason == "chain" and "need leaf and CA" in str(err.value)


def test_pck_with_a_p384_key_is_a_certificate_error() -> None:
    pki = WORLD.pki
    key = ec.generate_private_key(ec.SECP384R1())
    pck = issue(intel_name("Intel SGX PCK Certificate"), pki.ca.subject, key.public_key(), pki.ca_key, ca=False,
                usage=forge.LEAF_USAGE, extensions=[forge.sgx_extension(forge.FMSPC, forge.SGX_SVNS, forge.PCESVN)])
    with pytest.raises(EvidenceError) as err:
        pck_facts(pem(pck, pki.ca, pki.root))
    assert err.value.reason == "certificate" and "not ECDSA P-256" in str(err.value)


def test_pck_with_a_short_fmspc_is_a_certificate_error() -> None:
    _, pck = WORLD.pki.pck(fmspc=b"\x01" * 5)
    with pytest.raises(EvidenceError) as err:
        pck_facts(pem(pck, WORLD.pki.ca, WORLD.pki.root))
    assert err.value.reason == "certificate" and "FMSPC/PCEID" in str(err.value)


def test_collateral_without_a_tcb_signing_certificate_is_refused(tmp_path) -> None:
    world = WORLD.replace(signing_pem=b"")
    (tmp_path / "c").mkdir()
    for name, text in (("tcbinfo.json", world.tcb_info), ("qeidentity.json", world.qe_identity or "")):
        (tmp_path / "c" / name).write_text(text)
    collateral = load_dir(tmp_path / "c")
    with pytest.raises(EvidenceError) as err:
        TdxVerifier(forge.trust_with(world.pki.root)).verify(world.quote(), AT, collateral,
                                                              ("pck_crl", "root_ca_crl"))
    assert err.value.reason == "collateral" and "no Intel SGX TCB Signing certificate" in str(err.value)


def test_tcb_signing_certificate_with_a_p384_key_is_refused(tmp_path) -> None:
    pki = WORLD.pki
    key = ec.generate_private_key(ec.SECP384R1())
    signing = issue(intel_name("Intel SGX TCB Signing"), pki.root.subject, key.public_key(), pki.root_key,
                    ca=False, usage=forge.LEAF_USAGE)
    world = WORLD.replace(signing_pem=pem(signing, pki.root))
    with pytest.raises(EvidenceError) as err:
        TdxVerifier(forge.trust_with(pki.root)).verify(world.quote(), AT, world.collateral(tmp_path))
    assert err.value.reason == "collateral" and "not ECDSA P-256" in str(err.value)


def test_qe_miscselect_is_compared_under_its_mask(tmp_path) -> None:
    world = WORLD.replace(qe=forge.QeFields(miscselect=1))
    with pytest.raises(EvidenceError) as err:
        TdxVerifier(forge.trust_with(world.pki.root)).verify(world.quote(), AT, world.collateral(tmp_path))
    assert err.value.reason == "collateral" and "MISCSELECT" in str(err.value)


# --- collateral documents ------------------------------------------------------------------------------------------

def _signed_text(doc: dict) -> str:
    return forge.signed_json("tcbInfo", doc, WORLD.pki.signing_key)


@pytest.mark.parametrize(("text", "what"), [
    ("[1, 2]", "expected a JSON object"),
    ('{"tcbInfo": [1], "signature": "00"}', "tcbInfo is not an object"),
    ('{"tcb_info": "[1]", "tcb_info_signature": "00"}', "tcb_info is not an object"),
    ('{"tcbInfo": {"id": "TDX"}, "signature": "' + "00" * 63 + '"}', "64-byte hex ECDSA signature"),
    ('{"x": "' + "a" * (5 * 1024 * 1024) + '"}', "more than any PCS collateral"),
])
def test_malformed_collateral_documents_are_refused(text: str, what: str) -> None:
    with pytest.raises(EvidenceError) as err:
        parse_pcs_json(text)
    assert err.value.reason == "collateral" and what in str(err.value)


@pytest.mark.parametrize(("change", "what"), [
    ({"issueDate": 5}, "missing date"),
    ({"pceId": "00"}, "tcbInfo.pceId: expected 2 bytes"),
    ({"tcbLevels": {"a": 1}}, "tcbInfo.tcbLevels: expected a list"),
])
def test_malformed_but_signed_tcb_info_fields(tmp_path, change: dict, what: str) -> None:
    doc = dict(forge.tcb_info_doc(), **change)
    world = WORLD.replace(tcb_info=_signed_text(doc))
    with pytest.raises(EvidenceError) as err:
        TdxVerifier(forge.trust_with(world.pki.root)).verify(world.quote(), AT, world.collateral(tmp_path))
    assert err.value.reason == "collateral" and what in str(err.value)


def test_qe_identity_of_another_version_is_refused(tmp_path) -> None:
    doc = dict(forge.qe_identity_doc(), version=3)
    world = WORLD.replace(qe_identity=forge.signed_json("enclaveIdentity", doc, WORLD.pki.signing_key))
    with pytest.raises(EvidenceError) as err:
        TdxVerifier(forge.trust_with(world.pki.root)).verify(world.quote(), AT, world.collateral(tmp_path))
    assert err.value.reason == "collateral" and "not a TD_QE identity v2" in str(err.value)


# --- format detection ------------------------------------------------------------------------------------------------

def test_evidence_shorter_than_a_header_is_truncated() -> None:
    with pytest.raises(EvidenceError) as err:
        detect_format(b"\x04\x00\x02")
    assert err.value.reason == "truncated"


def test_snp_report_without_certificates_is_a_certificate_error() -> None:
    outcome = Attester(TrustStore.default()).check(forge.snp_report(VCEK_KEY), at=AT)
    assert outcome.reasons == ["certificate"] and "no VCEK/VLEK certificate" in str(outcome.error)
