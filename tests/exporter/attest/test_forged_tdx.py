"""TDX quotes and collateral forged under a private Intel-like hierarchy: each attack is refused for its one reason.

``forge.tdx_world()`` is a consistent quote + complete collateral (TCB info v3, TD_QE identity, PCK CA and root
CRLs, TCB Signing certificate); each test changes one thing, re-signed with the test keys, so every check before
the targeted one passes.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from exporter.attest.collateral import load_dir
from exporter.attest.errors import EvidenceError
from exporter.attest.evidence import Attester
from exporter.attest.result import Verified
from exporter.attest.verify_tdx import TdxVerifier

from . import forge
from .forge import (
    AT,
    SGX_SVNS,
    QeFields,
    TdFields,
    TdxWorld,
    module_identity,
    pem,
    qe_identity_doc,
    signed_json,
    tcb_info_doc,
    tcb_level,
    utc,
)

PKI = forge.intel_pki()
OTHER = forge.intel_pki("other")  # same names, other keys: a second configured Intel-like root
WORLD = forge.tdx_world()


@pytest.fixture(scope="module")
def verifier() -> TdxVerifier:
    return TdxVerifier(forge.trust_with(PKI.root, OTHER.root))


def verify(verifier: TdxVerifier, world: TdxWorld, folder: Path, quote: bytes | None = None,
           allow: Collection[str] = ()) -> Verified:
    return verifier.verify(quote or world.quote(), AT, world.collateral(folder), allow)


def reason_of(verifier: TdxVerifier, world: TdxWorld, folder: Path, quote: bytes | None = None,
              allow: Collection[str] = ()) -> tuple[str, str]:
    with pytest.raises(EvidenceError) as err:
        verify(verifier, world, folder, quote, allow)
    return err.value.reason, str(err.value)


def tcb_info(**kwargs) -> str:
    return signed_json("tcbInfo", tcb_info_doc(**kwargs), PKI.signing_key)


@pytest.mark.parametrize("version", [4, 5])
def test_control_complete_collateral_is_up_to_date(verifier, tmp_path, version: int) -> None:
    verified = verify(verifier, WORLD, tmp_path, WORLD.quote(version=version))
    assert (verified.tcb_status, verified.warnings) == ("UpToDate", ())


def test_control_without_collateral_verifies_signatures_and_chain(verifier) -> None:
    assert verifier.verify(WORLD.quote(), AT).tcb_status is None


# --- 1. a PCK leaf acting as a CA ---------------------------------------------------------------------------------

def test_pck_minted_by_a_pck_key_is_refused(verifier, tmp_path) -> None:
    """Whoever holds one PCK private key mints a 'PCK' with the newest TCB: its chain has a leaf as issuer."""
    key, minted = PKI.pck(sgx_svns=(255,) * 16, pcesvn=255, signer=WORLD.pck_key, issuer=WORLD.pck.subject)
    quote = forge.tdx_quote(key, pem(minted, WORLD.pck, PKI.ca, PKI.root))
    reason, message = reason_of(verifier, WORLD, tmp_path, quote)
    assert reason == "chain" and "expected exactly 3" in message


def test_pck_minted_by_a_pck_key_without_the_real_pck_in_the_chain_is_refused(verifier, tmp_path) -> None:
    key, minted = PKI.pck(sgx_svns=(255,) * 16, signer=WORLD.pck_key, issuer=WORLD.pck.subject)
    quote = forge.tdx_quote(key, pem(minted, PKI.ca, PKI.root))
    reason, _ = reason_of(verifier, WORLD, tmp_path, quote)
    assert reason == "chain"


# --- the QE report binds the attestation key ------------------------------------------------------------------------

def test_qe_report_not_binding_the_attestation_key_is_refused(verifier, tmp_path) -> None:
    reason, message = reason_of(verifier, WORLD, tmp_path, WORLD.quote(bind=False))
    assert reason == "signature" and "does not bind the attestation key" in message


def test_quote_from_another_qe_vendor_is_unsupported(verifier, tmp_path) -> None:
    reason, message = reason_of(verifier, WORLD, tmp_path, WORLD.quote(qe_vendor=b"\x01" * 16))
    assert reason == "unsupported" and "QE vendor id" in message


# --- 2. collateral signer -------------------------------------------------------------------------------------------

def test_tcb_info_signed_by_a_pck_key_is_refused(verifier, tmp_path) -> None:
    """The PCK key 'signs' a TCB info calling this OutOfDate platform UpToDate, with the PCK chain as issuer."""
    doc = tcb_info_doc()
    world = WORLD.replace(tcb_info="", extra_files={
        "bundle.json": forge.pcs_bundle("tcb_info", doc, WORLD.pck_key, WORLD.chain_pem).encode()})
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "collateral" and "tcb_info signer" in message


def test_tcb_info_signed_under_another_configured_root_is_refused(verifier, tmp_path) -> None:
    """A TCB Signing certificate of the other trusted Intel-like root: valid there, not for this PCK chain."""
    world = WORLD.replace(tcb_info=signed_json("tcbInfo", tcb_info_doc(), OTHER.signing_key),
                          qe_identity=signed_json("enclaveIdentity", qe_identity_doc(), OTHER.signing_key),
                          signing_pem=pem(OTHER.signing, OTHER.root))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "collateral" and "not under the PCK chain's Intel root" in message


def test_badly_signed_tcb_info_is_collateral_not_chain(verifier, tmp_path) -> None:
    world = WORLD.replace(tcb_info=signed_json("tcbInfo", tcb_info_doc(), OTHER.signing_key))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "collateral" and "tcb_info signature does not verify" in message


def test_badly_signed_qe_identity_is_collateral(verifier, tmp_path) -> None:
    world = WORLD.replace(qe_identity=signed_json("enclaveIdentity", qe_identity_doc(), OTHER.signing_key))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "collateral" and "qe_identity signature" in message


# --- 3. SGX TCB info for a TDX quote --------------------------------------------------------------------------------

def test_sgx_tcb_info_is_never_used_for_a_tdx_quote(verifier, tmp_path) -> None:
    """With TEE_TCB_SVN[1] == 0 an SGX TCB info (no TDX components) would 'match' every TDX TCB."""
    world = WORLD.replace(td=TdFields(tee_tcb_svn=bytes(16)), tcb_info=tcb_info(kind="SGX", version=3))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "collateral" and "only SGX TCB info" in message


def test_tdx_tcb_info_of_another_version_is_refused(verifier, tmp_path) -> None:
    reason, message = reason_of(verifier, WORLD.replace(tcb_info=tcb_info(version=2)), tmp_path)
    assert reason == "collateral" and "not a TDX TCB info v3" in message


def test_mixed_folder_chooses_the_tdx_tcb_info_not_the_newest(verifier, tmp_path) -> None:
    """A PCS mirror holds the SGX and the TDX TCB info of one FMSPC; the newer SGX one must not win a tie-break."""
    td = TdFields(tee_tcb_svn=bytes(16))
    tdx_out_of_date = tcb_info(levels=[tcb_level(tdx=(1,) * 16), tcb_level(status="OutOfDate")])
    sgx_newer = tcb_info(kind="SGX", version=3, issued=utc(2025, 5, 25))
    world = WORLD.replace(td=td, tcb_info=tdx_out_of_date, extra_files={"sgx-tcbinfo.json": sgx_newer.encode()})
    assert verify(verifier, world, tmp_path).tcb_status == "OutOfDate"


# --- 4. TDX module identity, PCEID --------------------------------------------------------------------------------

def test_module_identity_signer_mismatch_is_refused(verifier, tmp_path) -> None:
    world = WORLD.replace(td=TdFields(mrsignerseam=b"\x01" * 48))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "tcb" and "MRSIGNERSEAM does not match TDX_01" in message


def test_module_identity_attributes_mismatch_is_refused(verifier, tmp_path) -> None:
    world = WORLD.replace(td=TdFields(seam_attributes=b"\x00" * 7 + b"\x01"))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "tcb" and "SEAMATTRIBUTES" in message


def test_unversioned_module_is_checked_against_tdx_module(verifier, tmp_path) -> None:
    world = WORLD.replace(td=TdFields(tee_tcb_svn=bytes(16), mrsignerseam=b"\x01" * 48))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "tcb" and "does not match tdxModule" in message


def test_module_identity_missing_from_tcb_info_is_refused(verifier, tmp_path) -> None:
    world = WORLD.replace(td=TdFields(tee_tcb_svn=bytes([3, 2, 2]) + bytes(13)))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "tcb" and "TDX_02 not in the TCB info" in message


def test_module_status_counts(verifier, tmp_path) -> None:
    world = WORLD.replace(tcb_info=tcb_info(identities=[module_identity(status="OutOfDate")]))
    assert verify(verifier, world, tmp_path).tcb_status == "OutOfDate"


def test_module_svn_below_every_level_is_refused(verifier, tmp_path) -> None:
    world = WORLD.replace(tcb_info=tcb_info(identities=[module_identity(isvsvn=9)]))
    reason, _ = reason_of(verifier, world, tmp_path)
    assert reason == "tcb"


def test_pceid_other_than_the_pcks_is_refused(verifier, tmp_path) -> None:
    reason, message = reason_of(verifier, WORLD.replace(tcb_info=tcb_info(pce_id="0001")), tmp_path)
    assert reason == "collateral" and "PCEID" in message


# --- TCB levels ---------------------------------------------------------------------------------------------------

def test_out_of_date_platform_is_reported(verifier, tmp_path) -> None:
    newer = tuple(v + 1 for v in SGX_SVNS)
    world = WORLD.replace(tcb_info=tcb_info(levels=[tcb_level(sgx=newer), tcb_level(status="OutOfDate")]))
    verified = verify(verifier, world, tmp_path)
    assert verified.tcb_status == "OutOfDate" and "TCB status OutOfDate" in verified.warnings


def test_revoked_tcb_level_is_refused(verifier, tmp_path) -> None:
    reason, _ = reason_of(verifier, WORLD.replace(tcb_info=tcb_info(levels=[tcb_level(status="Revoked")])),
                          tmp_path)
    assert reason == "revoked"


def test_platform_below_every_level_is_refused(verifier, tmp_path) -> None:
    world = WORLD.replace(tcb_info=tcb_info(levels=[tcb_level(pcesvn=99)]))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "tcb" and "TCB level not supported" in message


@pytest.mark.parametrize(("level", "what"), [
    (dict(tcb_level(), tcbStatus="Mostly"), "unknown tcbStatus"),
    (tcb_level(sgx=SGX_SVNS[:15]), "expected 16 components"),
    ({"tcb": {"sgxtcbcomponents": [{"svn": "3"}] * 16, "pcesvn": 1, "tdxtcbcomponents": [{"svn": 0}] * 16},
      "tcbStatus": "UpToDate"}, "expected an integer"),
    ({"tcbStatus": "UpToDate"}, "missing tcb"),
])
def test_malformed_but_signed_tcb_info_is_collateral(verifier, tmp_path, level, what: str) -> None:
    reason, message = reason_of(verifier, WORLD.replace(tcb_info=tcb_info(levels=[level])), tmp_path)
    assert reason == "collateral" and what in message


# --- 6. completeness: CRLs and QE identity ------------------------------------------------------------------------

def test_revoked_pck_is_refused(verifier, tmp_path) -> None:
    world = WORLD.replace(crls=(PKI.crl("ca", [WORLD.pck.serial_number]), PKI.crl("root")))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "revoked" and "Intel SGX PCK Certificate" in message


def test_revoked_pck_ca_is_refused(verifier, tmp_path) -> None:
    world = WORLD.replace(crls=(PKI.crl("ca"), PKI.crl("root", [PKI.ca.serial_number])))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "revoked" and "PCK Platform CA" in message


def test_crl_with_a_bad_signature_is_refused(verifier, tmp_path) -> None:
    world = WORLD.replace(crls=(PKI.crl("ca", signer=OTHER.ca_key), PKI.crl("root")))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "collateral" and "bad signature" in message


def test_stale_crl_is_expired(verifier, tmp_path) -> None:
    world = WORLD.replace(crls=(PKI.crl("ca", last=utc(2025, 1, 1), next_=utc(2025, 2, 1)), PKI.crl("root")))
    reason, _ = reason_of(verifier, world, tmp_path)
    assert reason == "expired"


def test_not_yet_valid_crl_is_not_expired(verifier, tmp_path) -> None:
    world = WORLD.replace(crls=(PKI.crl("ca", last=utc(2025, 7, 1), next_=utc(2025, 8, 1)), PKI.crl("root")))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "collateral" and "not yet valid" in message


@pytest.mark.parametrize(("crls", "missing"), [((0,), "root_ca_crl"), ((1,), "pck_crl")])
def test_missing_crl_is_collateral_unless_allowed(verifier, tmp_path, crls, missing: str) -> None:
    world = WORLD.replace(crls=tuple(WORLD.crls[i] for i in crls))
    reason, message = reason_of(verifier, world, tmp_path / "a")
    assert reason == "collateral" and missing in message
    verified = verify(verifier, world, tmp_path / "b", allow=(missing,))
    assert any("revocation not checked" in w for w in verified.warnings)


def test_missing_qe_identity_is_collateral_unless_allowed(verifier, tmp_path) -> None:
    world = WORLD.replace(qe_identity=None)
    reason, message = reason_of(verifier, world, tmp_path / "a")
    assert reason == "collateral" and "qe_identity" in message
    verified = verify(verifier, world, tmp_path / "b", allow=("qe_identity",))
    assert any("Quoting Enclave identity not checked" in w for w in verified.warnings)


def test_qe_identity_of_another_enclave_is_collateral(verifier, tmp_path) -> None:
    world = WORLD.replace(qe_identity=signed_json("enclaveIdentity", qe_identity_doc(kind="QE"), PKI.signing_key))
    reason, _ = reason_of(verifier, world, tmp_path)
    assert reason == "collateral"


def test_qe_not_matching_the_identity_is_collateral(verifier, tmp_path) -> None:
    world = WORLD.replace(qe=QeFields(mrsigner=b"\x01" * 32))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "collateral" and "MRSIGNER/ISVPRODID" in message


def test_qe_attributes_outside_the_mask_do_not_matter_inside_do(verifier, tmp_path) -> None:
    ok = WORLD.replace(qe=QeFields(attributes=b"\x15" + bytes(7) + b"\xff" * 8))  # bit 2 masked out; high half too
    assert verify(verifier, ok, tmp_path / "a").tcb_status == "UpToDate"
    reason, message = reason_of(verifier, WORLD.replace(qe=QeFields(attributes=b"\x13" + bytes(15))), tmp_path / "b")
    assert reason == "collateral" and "ATTRIBUTES" in message


def test_qe_svn_below_every_level_is_tcb(verifier, tmp_path) -> None:
    reason, message = reason_of(verifier, WORLD.replace(qe=QeFields(isvsvn=3)), tmp_path)
    assert reason == "tcb" and "ISVSVN 3" in message


# --- validity windows -------------------------------------------------------------------------------------------------

def test_stale_tcb_info_is_expired(verifier, tmp_path) -> None:
    world = WORLD.replace(tcb_info=tcb_info(issued=utc(2025, 1, 1), next_update=utc(2025, 2, 1)))
    assert reason_of(verifier, world, tmp_path)[0] == "expired"


def test_not_yet_valid_tcb_info_is_collateral_not_expired(verifier, tmp_path) -> None:
    world = WORLD.replace(tcb_info=tcb_info(issued=utc(2025, 7, 1), next_update=utc(2025, 8, 1)))
    reason, message = reason_of(verifier, world, tmp_path)
    assert reason == "collateral" and "not yet valid" in message


def test_collateral_folder_with_only_a_qe_identity_is_incomplete(tmp_path) -> None:
    world = forge.tdx_world()
    folder = tmp_path / "coll"
    folder.mkdir()
    (folder / "qeidentity.json").write_text(world.qe_identity or "")
    attester = Attester(forge.trust_with(world.pki.root), None, load_dir(folder))
    outcome = attester.check(world.quote(), at=AT)
    assert outcome.reasons == ["collateral"] and "no CRL" in str(outcome.error)


def test_empty_collateral_folder_means_no_collateral(tmp_path) -> None:
    world = forge.tdx_world()
    (tmp_path / "empty").mkdir()
    outcome = Attester(forge.trust_with(world.pki.root), None, load_dir(tmp_path / "empty")).check(world.quote(), at=AT)
    assert outcome.ok and outcome.verified is not None and outcome.verified.tcb_status is None
