"""TDX checks that mutation testing (docs/testing.md) found unpinned: each test fails when the rule it names in
exporter/attest/verify_tdx.py is switched off or bent, with inputs forged so every earlier check passes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exporter.attest.errors import EvidenceError
from exporter.attest.result import Verified
from exporter.attest.verify_tdx import TdxVerifier

from . import forge
from .forge import (
    AT,
    ISSUED,
    PCESVN,
    SGX_SVNS,
    TdFields,
    TdxWorld,
    intel_name,
    module_identity,
    pem,
    signed_json,
    tcb_info_doc,
    tcb_level,
    utc,
)

PKI = forge.intel_pki()
OTHER = forge.intel_pki("other")
WORLD = forge.tdx_world()


@pytest.fixture
def verifier() -> TdxVerifier:
    return TdxVerifier(forge.trust_with(PKI.root, OTHER.root))


def verify(verifier: TdxVerifier, world: TdxWorld, folder: Path, quote: bytes | None = None,
           at=AT) -> Verified:
    return verifier.verify(quote or world.quote(), at, world.collateral(folder))


def reason_of(verifier: TdxVerifier, world: TdxWorld, folder: Path, quote: bytes | None = None,
              at=AT) -> tuple[str, str]:
    with pytest.raises(EvidenceError) as err:
        verify(verifier, world, folder, quote, at)
    return err.value.reason, str(err.value)


def tcb_info(**kwargs) -> str:
    return signed_json("tcbInfo", tcb_info_doc(**kwargs), PKI.signing_key)


# --- CRLs -----------------------------------------------------------------------------------------------------------

def test_newest_current_crl_is_the_one_used(verifier, tmp_path) -> None:
    """Two current CRLs of the PCK CA: the newer one revokes the PCK, so the quote is revoked."""
    older = PKI.crl("ca", last=utc(2025, 5, 10))
    newer = PKI.crl("ca", [WORLD.pck.serial_number], last=utc(2025, 5, 25))
    world = WORLD.replace(crls=(older, newer, PKI.crl("root")))
    reason, message = reason_of(verifier, world, tmp_path)
    expected = f"'Intel SGX PCK Certificate' (serial {WORLD.pck.serial_number:x}) is revoked"
    assert (reason, message) == ("revoked", expected)


@pytest.mark.parametrize("edge", ["last_update", "next_update"])
def test_crl_is_current_on_both_edges_of_its_window(verifier, tmp_path, edge: str) -> None:
    crl = PKI.crl("ca", last=AT if edge == "last_update" else utc(2025, 5, 1),
                  next_=AT if edge == "next_update" else utc(2025, 7, 1))
    assert verify(verifier, WORLD.replace(crls=(crl, PKI.crl("root"))), tmp_path).tcb_status == "UpToDate"


def test_crl_with_a_duplicated_extension_is_collateral_not_a_traceback(tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization

    from exporter.attest.collateral import load_dir
    der = PKI.crl("ca").public_bytes(serialization.Encoding.DER)
    crl_number, authority_key_id = forge.der_oid("2.5.29.20"), forge.der_oid("2.5.29.35")
    (tmp_path / "pck.crl").write_bytes(der.replace(crl_number, authority_key_id))
    with pytest.raises(EvidenceError) as err:
        load_dir(tmp_path)
    assert err.value.reason == "collateral" and "pck.crl: not a valid CRL" in str(err.value)


# --- the collateral signer ------------------------------------------------------------------------------------------

def test_expired_tcb_signing_certificate_is_expired(verifier, tmp_path) -> None:
    expired = forge.issue(intel_name("Intel SGX TCB Signing"), PKI.root.subject, PKI.signing_key.public_key(),
                          PKI.root_key, ca=False, usage=forge.LEAF_USAGE, not_after=utc(2025, 1, 1))
    reason, message = reason_of(verifier, WORLD.replace(signing_pem=pem(expired, PKI.root)), tmp_path)
    assert reason == "expired" and message.startswith("tcb_info signer: certificate 'Intel SGX TCB Signing' is not "
                                                      "valid at")


def test_tcb_signing_certificate_under_the_pck_root_is_chosen_among_several(verifier, tmp_path) -> None:
    """A PCS mirror for two roots holds two TCB Signing certificates; the one under the quote's root signs."""
    world = WORLD.replace(signing_pem=pem(OTHER.signing, OTHER.root, PKI.signing, PKI.root))
    assert verify(verifier, world, tmp_path).tcb_status == "UpToDate"


def test_tcb_signing_certificate_with_a_bad_key_is_collateral(verifier, tmp_path) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    signer = forge.issue(intel_name("Intel SGX TCB Signing"), PKI.root.subject, p384.public_key(), PKI.root_key,
                         ca=False, usage=forge.LEAF_USAGE)
    reason, message = reason_of(verifier, WORLD.replace(signing_pem=pem(signer, PKI.root)), tmp_path)
    assert (reason, message) == ("collateral", "tcb_info: signing key is not ECDSA P-256")


# --- the PCK certificate ------------------------------------------------------------------------------------------------

def test_pck_chain_without_the_root_is_completed_from_the_trust_store(verifier, tmp_path) -> None:
    quote = forge.tdx_quote(WORLD.pck_key, pem(WORLD.pck, PKI.ca))
    assert verify(verifier, WORLD, tmp_path, quote).tcb_status == "UpToDate"


def test_pck_chain_of_one_certificate_is_refused(verifier, tmp_path) -> None:
    reason, message = reason_of(verifier, WORLD, tmp_path, forge.tdx_quote(WORLD.pck_key, pem(WORLD.pck)))
    assert (reason, message) == ("chain", "PCK chain has 1 certificate(s), need leaf and CA")


def test_pck_with_a_non_zero_pce_id_is_matched_to_its_tcb_info(verifier, tmp_path) -> None:
    world = forge.tdx_world(pce_id=b"\x00\x01").replace(tcb_info=tcb_info(pce_id="0001"))
    assert verify(verifier, world, tmp_path).tcb_status == "UpToDate"
    reason, message = reason_of(verifier, world.replace(tcb_info=tcb_info()), tmp_path / "b")
    assert (reason, message) == ("collateral", "TCB info PCEID 0000 is not the PCK's 0001")


def test_pck_without_the_sgx_extension_is_a_certificate_error(verifier, tmp_path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pck = forge.issue(intel_name("Intel SGX PCK Certificate"), PKI.ca.subject, key.public_key(), PKI.ca_key,
                      ca=False, usage=forge.LEAF_USAGE)
    reason, message = reason_of(verifier, WORLD, tmp_path, forge.tdx_quote(key, pem(pck, PKI.ca, PKI.root)))
    assert reason == "certificate" and message.startswith("PCK certificate SGX extension unreadable: ")


def test_pck_with_a_p384_key_is_a_certificate_error(verifier, tmp_path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pck = forge.issue(intel_name("Intel SGX PCK Certificate"), PKI.ca.subject, key.public_key(), PKI.ca_key,
                      ca=False, usage=forge.LEAF_USAGE,
                      extensions=[forge.sgx_extension(forge.FMSPC, SGX_SVNS, PCESVN)])
    reason, message = reason_of(verifier, WORLD, tmp_path, forge.tdx_quote(WORLD.pck_key, pem(pck, PKI.ca, PKI.root)))
    assert (reason, message) == ("certificate", "PCK key is not ECDSA P-256")


def test_pck_with_a_short_fmspc_is_a_certificate_error(verifier, tmp_path) -> None:
    world = forge.tdx_world(fmspc=b"\xb0\xc0\x6f\x00\x00")
    reason, message = reason_of(verifier, world, tmp_path)
    assert (reason, message) == ("certificate", "PCK certificate FMSPC/PCEID of the wrong size")


def test_malformed_pck_chain_names_it(verifier, tmp_path) -> None:
    bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    reason, message = reason_of(verifier, WORLD, tmp_path, forge.tdx_quote(WORLD.pck_key, bad))
    assert reason == "certificate" and message.startswith("PCK certificate chain: not a valid certificate")


# --- TCB levels: which TDX components a versioned module leaves to its identity ------------------------------------

TDX_LEVELS_ABOVE = (9, 9) + (0,) * 14  # components 0 and 1 above the quote's TEE_TCB_SVN, the rest met


def test_versioned_module_leaves_its_two_svns_to_the_module_identity(verifier, tmp_path) -> None:
    """TEE_TCB_SVN[1] > 0: components 0 and 1 are the module's, judged by TDX_01, not by the platform levels."""
    world = WORLD.replace(tcb_info=tcb_info(levels=[tcb_level(tdx=TDX_LEVELS_ABOVE),
                                                    tcb_level(status="OutOfDate")]))
    assert verify(verifier, world, tmp_path).tcb_status == "UpToDate"


def test_versioned_module_svn_1_counts_as_versioned(verifier, tmp_path) -> None:
    world = WORLD.replace(td=TdFields(tee_tcb_svn=bytes([3, 1, 0]) + bytes(13)),
                          tcb_info=tcb_info(levels=[tcb_level(tdx=TDX_LEVELS_ABOVE), tcb_level(status="OutOfDate")]))
    assert verify(verifier, world, tmp_path).tcb_status == "UpToDate"


def test_third_tdx_component_is_always_judged_by_the_platform_levels(verifier, tmp_path) -> None:
    above = (0, 0, 9) + (0,) * 13
    world = WORLD.replace(tcb_info=tcb_info(levels=[tcb_level(tdx=above), tcb_level(status="OutOfDate")]))
    assert verify(verifier, world, tmp_path).tcb_status == "OutOfDate"


@pytest.mark.parametrize("first_above", [0, 1])
def test_unversioned_module_is_judged_on_every_tdx_component(verifier, tmp_path, first_above: int) -> None:
    above = tuple(9 if i == first_above else 0 for i in range(16))
    world = WORLD.replace(td=TdFields(tee_tcb_svn=bytes([3, 0, 2]) + bytes(13)),
                          tcb_info=tcb_info(levels=[tcb_level(tdx=above), tcb_level(status="OutOfDate")]))
    assert verify(verifier, world, tmp_path).tcb_status == "OutOfDate"


def test_unversioned_module_with_a_third_svn_uses_tdx_module(verifier, tmp_path) -> None:
    """TEE_TCB_SVN[1] == 0 means no module identity version, whatever TEE_TCB_SVN[2] says."""
    world = WORLD.replace(td=TdFields(tee_tcb_svn=bytes([3, 0, 2]) + bytes(13)))
    verified = verify(verifier, world, tmp_path)
    assert verified.tcb_status == "UpToDate"


def test_module_level_equal_to_the_module_svn_is_met(verifier, tmp_path) -> None:
    levels = [module_identity(isvsvn=3, status="SWHardeningNeeded")]
    world = WORLD.replace(tcb_info=tcb_info(identities=levels))
    assert verify(verifier, world, tmp_path).tcb_status == "SWHardeningNeeded"


def test_module_svn_below_every_level_names_the_svn(verifier, tmp_path) -> None:
    world = WORLD.replace(tcb_info=tcb_info(identities=[module_identity(isvsvn=4)]))
    assert reason_of(verifier, world, tmp_path) == ("tcb", "TDX module TDX_01 SVN 3 below every level")


# --- the QE identity ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("qe", "message"), [
    (forge.QeFields(isvprodid=3), "Quoting Enclave MRSIGNER/ISVPRODID do not match the TD_QE identity"),
    (forge.QeFields(miscselect=1), "Quoting Enclave MISCSELECT does not match the TD_QE identity"),
    (forge.QeFields(attributes=b"\x13" + bytes(15)), "Quoting Enclave ATTRIBUTES do not match the TD_QE identity"),
])
def test_qe_identity_mismatch_names_the_field(verifier, tmp_path, qe, message: str) -> None:
    assert reason_of(verifier, WORLD.replace(qe=qe), tmp_path) == ("collateral", message)


def test_missing_qe_identity_says_how_to_allow_it(verifier, tmp_path) -> None:
    with pytest.raises(EvidenceError) as err:
        verifier.verify(WORLD.quote(), AT, WORLD.replace(qe_identity=None).collateral(tmp_path))
    assert str(err.value) == ("no TD_QE identity in the collateral (the policy's allow_missing_collateral does not "
                              "name qe_identity)")


# --- what a verified quote yields ---------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [4, 5])
def test_verified_quote_fields(verifier, tmp_path, version: int) -> None:
    quote = WORLD.quote(version=version)
    verified = verify(verifier, WORLD, tmp_path, quote)
    assert (verified.tee_type, verified.evidence_format, verified.version) == ("tdx", "tdx-quote", version)
    assert verified.sha256 == hashlib.sha256(quote).hexdigest()
    assert verified.measurement == "sha384:" + "22" * 48 and verified.debug is False
    assert verified.tcb == {"tee_tcb_svn_0": 3, "tee_tcb_svn_1": 1, "tee_tcb_svn_2": 2, "qe_isvsvn": 4,
                            "pcesvn": PCESVN}
    assert (verified.tcb_status, verified.product, verified.signer, verified.warnings) == (
        "UpToDate", "b0c06f000000", "pck", ())
    assert verified.details == {
        "report_data": "55" * 64, "mrseam": "44" * 48, "td_attributes": "0x0000000010000000",
        "tee_tcb_svn": "030102" + "00" * 13, "fmspc": "b0c06f000000", "sgx_tcb_svn": bytes(SGX_SVNS).hex(),
        **{f"rtmr{i}": "00" * 48 for i in range(4)}}


def test_sgx_svns_outside_a_byte_are_clamped(verifier, tmp_path) -> None:
    """DER INTEGERs are signed and unbounded; a PCK under an operator-added root may carry 300 or -1."""
    svns = (300, -1) + SGX_SVNS[2:]
    oid = forge.OID_SGX
    tcb = [forge.der_seq(forge.der_oid(f"{oid}.2.{i + 1}"), forge.der_int(v)) for i, v in enumerate(svns)]
    tcb += [forge.der_seq(forge.der_oid(f"{oid}.2.17"), forge.der_int(PCESVN)),
            forge.der_seq(forge.der_oid(f"{oid}.2.18"), forge.der_octets(bytes(16)))]
    value = forge.der_seq(forge.der_seq(forge.der_oid(f"{oid}.1"), forge.der_octets(b"\x01" * 16)),
                          forge.der_seq(forge.der_oid(f"{oid}.2"), forge.der_seq(*tcb)),
                          forge.der_seq(forge.der_oid(f"{oid}.3"), forge.der_octets(b"\0\0")),
                          forge.der_seq(forge.der_oid(f"{oid}.4"), forge.der_octets(forge.FMSPC)),
                          forge.der_seq(forge.der_oid(f"{oid}.5"), b"\x0a\x01\x00"))
    key = ec.generate_private_key(ec.SECP256R1())
    pck = forge.issue(intel_name("Intel SGX PCK Certificate"), PKI.ca.subject, key.public_key(), PKI.ca_key,
                      ca=False, usage=forge.LEAF_USAGE,
                      extensions=[x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value)])
    verified = verifier.verify(forge.tdx_quote(key, pem(pck, PKI.ca, PKI.root)), AT)
    assert verified.details["sgx_tcb_svn"] == "ff00" + bytes(SGX_SVNS[2:]).hex()


def test_without_collateral_the_warning_says_what_was_not_checked(verifier) -> None:
    verified = verifier.verify(WORLD.quote(), AT)
    assert verified.warnings == ("no collateral: TCB status and revocation not checked",)
    assert ISSUED < AT


# --- signatures and messages -------------------------------------------------------------------------------------

def _flip_byte(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 1]) + data[offset + 1:]


def test_altered_quote_body_fails_the_quote_signature(verifier) -> None:
    quote = _flip_byte(WORLD.quote(), 48 + 16)  # a byte of the TD report's MRSEAM, under the quote signature
    with pytest.raises(EvidenceError) as err:
        verifier.verify(quote, AT)
    assert (err.value.reason, str(err.value)) == ("signature", "quote signature does not verify")


def test_qe_report_signed_by_another_pck_key_fails(verifier) -> None:
    other_key, _ = PKI.pck()
    quote = forge.tdx_quote(other_key, WORLD.chain_pem)  # QE report signed by a key the PCK does not hold
    with pytest.raises(EvidenceError) as err:
        verifier.verify(quote, AT)
    assert (err.value.reason, str(err.value)) == ("signature", "QE report signature (PCK key) does not verify")


def test_qe_report_not_binding_the_attestation_key_says_so(verifier) -> None:
    with pytest.raises(EvidenceError) as err:
        verifier.verify(WORLD.quote(bind=False), AT)
    assert (err.value.reason, str(err.value)) == ("signature", "QE report does not bind the attestation key")


def test_revoked_tcb_level_says_so(verifier, tmp_path) -> None:
    world = WORLD.replace(tcb_info=tcb_info(levels=[tcb_level(status="Revoked")]))
    assert reason_of(verifier, world, tmp_path) == ("revoked", "TCB status is Revoked")


def test_allowed_missing_qe_identity_is_a_warning(verifier, tmp_path) -> None:
    verified = verifier.verify(WORLD.quote(), AT, WORLD.replace(qe_identity=None).collateral(tmp_path),
                               ("qe_identity",))
    assert verified.warnings == ("no TD_QE identity in collateral: Quoting Enclave identity not checked",)


def test_stale_qe_identity_names_it(verifier, tmp_path) -> None:
    stale = signed_json("enclaveIdentity", forge.qe_identity_doc(issued=utc(2025, 1, 1), next_update=utc(2025, 2, 1)),
                        PKI.signing_key)
    reason, message = reason_of(verifier, WORLD.replace(qe_identity=stale), tmp_path)
    assert reason == "expired" and message.startswith("TD_QE identity is not valid at ")


# --- what the verifier remembers between quotes ------------------------------------------------------------------

def test_second_quote_with_the_same_collateral_objects_is_judged_alike(verifier, tmp_path) -> None:
    """The second verification takes the memoised collateral signature checks; the verdict must not change."""
    collateral = WORLD.collateral(tmp_path)
    first = verifier.verify(WORLD.quote(), AT, collateral)
    second = verifier.verify(WORLD.quote(), AT, collateral)
    assert first.tcb_status == second.tcb_status == "UpToDate"


def test_memoised_collateral_signature_does_not_outlive_its_signer(verifier, tmp_path) -> None:
    """The signer expires between two quotes checked with the same collateral objects: the second is expired."""
    short = forge.issue(intel_name("Intel SGX TCB Signing"), PKI.root.subject, PKI.signing_key.public_key(),
                        PKI.root_key, ca=False, usage=forge.LEAF_USAGE, not_after=utc(2025, 6, 10))
    collateral = WORLD.replace(signing_pem=pem(short, PKI.root)).collateral(tmp_path)
    assert verifier.verify(WORLD.quote(), AT, collateral).tcb_status == "UpToDate"
    with pytest.raises(EvidenceError) as err:
        verifier.verify(WORLD.quote(), utc(2025, 6, 15), collateral)
    assert err.value.reason == "expired" and "'Intel SGX TCB Signing' is not valid" in str(err.value)


def test_typed_collateral_view_is_not_taken_from_a_recycled_id(verifier, tmp_path) -> None:
    """The parsed TCB info is memoised by id(); an entry left by another object under the same id (ids are
    recycled after garbage collection) must not be used. Simulated by planting such an entry."""
    collateral = WORLD.collateral(tmp_path)
    (item,) = collateral.tcb_infos
    stale = forge.tdx_world().replace(tcb_info=tcb_info(levels=[tcb_level(status="OutOfDate")]))
    (other,) = stale.collateral(tmp_path / "other").tcb_infos
    from exporter.attest.collateral import tdx_tcb_info
    verifier._typed[id(item)] = (other, tdx_tcb_info(other.doc))
    assert verifier.verify(WORLD.quote(), AT, collateral).tcb_status == "UpToDate"


def test_stale_crl_names_its_issuer(verifier, tmp_path) -> None:
    world = WORLD.replace(crls=(PKI.crl("ca", last=utc(2025, 1, 1), next_=utc(2025, 2, 1)), PKI.crl("root")))
    assert reason_of(verifier, world, tmp_path) == (
        "expired", f"CRL of 'Intel SGX PCK Platform CA' is not current at {AT.isoformat()}")


def test_pck_with_an_unusable_key_is_a_certificate_error(verifier, tmp_path) -> None:
    """The PCK's key is read before its chain is checked: an invalid point is refused, named, not a traceback."""
    from cryptography.hazmat.primitives import serialization
    der = WORLD.pck.public_bytes(serialization.Encoding.DER)
    point = WORLD.pck.public_key().public_bytes(serialization.Encoding.X962,
                                                serialization.PublicFormat.UncompressedPoint)
    broken = x509.load_der_x509_certificate(der.replace(point, point[:-1] + bytes([point[-1] ^ 1])))
    reason, message = reason_of(verifier, WORLD, tmp_path, forge.tdx_quote(WORLD.pck_key, pem(broken, PKI.ca)))
    assert reason == "certificate" and message.startswith("PCK certificate: unusable public key")


# --- choosing the TCB info ----------------------------------------------------------------------------------------

def test_tcb_info_is_valid_on_both_edges_of_its_window(verifier, tmp_path) -> None:
    for i, (issued, next_update) in enumerate([(AT, utc(2025, 7, 1)), (utc(2025, 5, 1), AT)]):
        world = WORLD.replace(tcb_info=tcb_info(issued=issued, next_update=next_update))
        assert verify(verifier, world, tmp_path / str(i)).tcb_status == "UpToDate"


def test_newest_current_tcb_info_wins(verifier, tmp_path) -> None:
    """Two current TDX TCB infos for the FMSPC (read in file name order, older first): the newer one decides."""
    older = tcb_info(issued=utc(2025, 5, 10))
    newer = tcb_info(issued=utc(2025, 5, 25), levels=[tcb_level(status="OutOfDate")])
    world = WORLD.replace(tcb_info="", extra_files={"a-older.json": older.encode(), "b-newer.json": newer.encode()})
    assert verify(verifier, world, tmp_path).tcb_status == "OutOfDate"


def test_stale_tcb_infos_name_the_newest(verifier, tmp_path) -> None:
    old = tcb_info(issued=utc(2024, 12, 1), next_update=utc(2025, 1, 1))
    newer = tcb_info(issued=utc(2025, 1, 1), next_update=utc(2025, 2, 1))
    world = WORLD.replace(tcb_info="", extra_files={"b-old.json": old.encode(), "a-newer.json": newer.encode()})
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "expired"
    assert message == (f"TDX TCB info for FMSPC b0c06f000000 is not valid at {AT.isoformat()} (issued "
                       "2025-01-01T00:00:00+00:00, next update 2025-02-01T00:00:00+00:00)")


def test_missing_tdx_tcb_info_names_the_others_of_its_fmspc(verifier, tmp_path) -> None:
    """Only non-TDX TCB infos for the FMSPC: each id named once, cut to 10 characters, sorted."""
    world = WORLD.replace(tcb_info="", extra_files={
        "sgx.json": tcb_info(kind="SGX").encode(), "odd.json": tcb_info(kind="ABCDEFGHIJKL").encode()})
    reason, message = reason_of(verifier, world, tmp_path)
    expected = "no TDX TCB info for FMSPC b0c06f000000 (only ABCDEFGHIJ, SGX TCB info) in the collateral"
    assert (reason, message) == ("collateral", expected)


def test_missing_tdx_tcb_info_without_others_says_only_what_is_missing(verifier, tmp_path) -> None:
    world = WORLD.replace(tcb_info=tcb_info(fmspc=bytes(6)))
    assert reason_of(verifier, world, tmp_path) == ("collateral",
                                                    "no TDX TCB info for FMSPC b0c06f000000 in the collateral")


# --- the CRL verdict memo -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stale", ["crl", "issuer", "child"])
def test_crl_verdict_is_not_taken_from_a_recycled_id(verifier, tmp_path, stale: str) -> None:
    """A CRL verdict is memoised by the ids of (CRL, issuer, child); an entry left under those ids by other objects
    (ids are recycled after garbage collection) must not be used. Simulated by planting one that says 'not
    revoked' while the real CRL revokes the PCK."""
    world = WORLD.replace(crls=(PKI.crl("ca", [WORLD.pck.serial_number]), PKI.crl("root")))
    collateral = world.collateral(tmp_path)
    pck_chain = verifier.pck(WORLD.chain_pem).chain
    crl = next(c for c in collateral.crls if c.issuer == PKI.ca.subject)
    child, issuer = pck_chain[0], pck_chain[1]
    planted = {"crl": (OTHER.crl("ca"), issuer, child, False), "issuer": (crl, OTHER.ca, child, False),
               "child": (crl, issuer, OTHER.ca, False)}[stale]
    verifier._crl_ok[(id(crl), id(issuer), id(child))] = planted
    with pytest.raises(EvidenceError) as err:
        verifier.verify(WORLD.quote(), AT, collateral)
    assert err.value.reason == "revoked"
