"""Collateral as files and JSON, refused field by field with the reason and the field named.

Found by mutation testing (docs/testing.md): each test fails when the rule it names in
exporter/attest/collateral.py is switched off or bent. Documents are forged (tests/exporter/attest/forge.py).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives import serialization

from exporter.attest.collateral import (
    MAX_JSON_BYTES,
    CollateralSet,
    load_dir,
    parse_crl,
    parse_pcs_json,
    parse_time,
    td_qe_identity,
    tdx_tcb_info,
)
from exporter.attest.errors import EvidenceError

from . import forge

PKI = forge.intel_pki()
WORLD = forge.tdx_world()


def refused(call, *args) -> str:
    with pytest.raises(EvidenceError) as err:
        call(*args)
    assert err.value.reason == "collateral"
    return str(err.value)


# --- dates ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("2025-05-20T00:00:00Z", dt.datetime(2025, 5, 20, tzinfo=dt.UTC)),
    ("2025-05-20T00:00:00", dt.datetime(2025, 5, 20, tzinfo=dt.UTC)),  # no zone: UTC, as PCS means
    ("2025-05-20T02:00:00+02:00", dt.datetime(2025, 5, 20, tzinfo=dt.UTC)),
])
def test_dates_are_read_as_utc(text: str, expected: dt.datetime) -> None:
    assert parse_time(text, "x") == expected


@pytest.mark.parametrize(("value", "message"), [(None, "tcb_info.issueDate: missing date"),
                                                ("yesterday", "tcb_info.issueDate: bad date 'yesterday'")])
def test_bad_dates_are_named(value, message: str) -> None:
    assert refused(parse_time, value, "tcb_info.issueDate") == message


# --- PCS responses and bundles -------------------------------------------------------------------------------------

def test_pcs_response_keeps_the_exact_signed_bytes() -> None:
    text = WORLD.tcb_info.replace('"tcbInfo":', '"tcbInfo" :  ')
    (item,) = parse_pcs_json(text).tcb_infos
    assert item.kind == "tcb_info" and item.body == json.dumps(forge.tcb_info_doc(), separators=(",", ":")).encode()
    assert item.doc["id"] == "TDX" and len(item.signature) == 64 and item.chain == ()
    (qe,) = parse_pcs_json(WORLD.qe_identity or "").qe_identities
    assert qe.kind == "qe_identity" and qe.doc["id"] == "TD_QE"


@pytest.mark.parametrize(("text", "message"), [
    ("[1]", "expected a JSON object"),
    ('{"tcbInfo": [1], "signature": "00"}', "tcbInfo is not an object"),
    ('{"tcbInfo": {"id": "TDX"}, "signature": "zz"}', "tcbInfo: expected a 64-byte hex ECDSA signature"),
    ('{"tcbInfo": {"id": "TDX"}, "signature": 7}', "tcbInfo: expected a 64-byte hex ECDSA signature"),
    ('{"tcbInfo": {"id": "TDX"}, "signature": "' + "00" * 63 + '"}', "tcbInfo: expected a 64-byte hex ECDSA signature"),
    ("{", "collateral: not JSON: "),
    ("[" * 100_000 + "]" * 100_000, "collateral: not JSON: "),
    ('{"tcb_info": "[1]", "tcb_info_signature": ""}', "tcb_info is not an object"),
    ('{"tcb_info": "{", "tcb_info_signature": ""}', "tcb_info: not JSON: "),
    ('{"qe_identity": "{}", "qe_identity_signature": "' + "00" * 64 + '", "pck_crl": "zz"}',
     "CRL is neither hex DER nor PEM"),
])
def test_malformed_pcs_json_is_refused_with_its_reason(text: str, message: str) -> None:
    assert refused(parse_pcs_json, text).startswith(message)


def test_oversized_json_is_refused_unread() -> None:
    text = " " * (MAX_JSON_BYTES + 1)
    assert refused(parse_pcs_json, text) == f"collateral: {MAX_JSON_BYTES + 1} bytes of JSON, more than any PCS " \
                                            "collateral"


def test_bundle_carries_items_chains_and_crls() -> None:
    world = WORLD
    bundle = json.loads(world.bundle())
    bundle["root_ca_crl"] = world.crls[1].public_bytes(serialization.Encoding.PEM).decode()  # PEM is accepted too
    out = parse_pcs_json(json.dumps(bundle))
    (tcb,) = out.tcb_infos
    (qe,) = out.qe_identities
    assert tcb.kind == "tcb_info" and tcb.chain == (PKI.signing, PKI.root) and qe.chain == (PKI.signing, PKI.root)
    assert [c.issuer for c in out.crls] == [PKI.ca.subject, PKI.root.subject]
    assert out.certs == [PKI.ca, PKI.root]


def test_signed_body_found_where_the_key_also_appears_inside() -> None:
    """The inner object's exact bytes are the occurrence of the key that decodes to it, not the first mention."""
    doc = forge.tcb_info_doc()
    body = json.dumps(doc, separators=(",", ":"))
    text = '{"note":{"tcbInfo":{}},"tcbInfo":' + body + ',"signature":"' + "00" * 64 + '"}'
    (item,) = parse_pcs_json(text).tcb_infos
    assert item.body == body.encode()


# --- CRLs and folders -------------------------------------------------------------------------------------------

def test_crl_in_pem_and_der_is_read() -> None:
    crl = PKI.crl("ca")
    assert parse_crl(crl.public_bytes(serialization.Encoding.PEM), "x") == crl
    assert parse_crl(crl.public_bytes(serialization.Encoding.DER), "x") == crl


def test_bad_crl_is_named() -> None:
    assert refused(parse_crl, b"\x30\x00", "pck.crl").startswith("pck.crl: not a valid CRL: ")


def test_folder_reads_every_kind_of_file_and_skips_subfolders(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "junk.json").write_text("{")
    (tmp_path / "tcb.json").write_text(WORLD.tcb_info)
    (tmp_path / "pck.crl").write_bytes(WORLD.crls[0].public_bytes(serialization.Encoding.DER))
    (tmp_path / "root.pem").write_bytes(WORLD.crls[1].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "signer.crt").write_bytes(forge.pem(PKI.signing))
    (tmp_path / "notes.txt").write_text("ignored")
    out = load_dir(tmp_path)
    assert len(out.tcb_infos) == 1 and [c.issuer for c in out.crls] == [PKI.ca.subject, PKI.root.subject]
    assert out.certs == [PKI.signing]


def test_bad_file_in_a_folder_is_named_with_its_reason(tmp_path) -> None:
    (tmp_path / "tcb.json").write_bytes(b"\xff\xfe")
    message = refused(load_dir, tmp_path)
    assert message.startswith(f"{tmp_path / 'tcb.json'}: cannot read: ")
    (tmp_path / "tcb.json").write_text('{"tcbInfo": [1]}')
    assert refused(load_dir, tmp_path) == f"{tmp_path / 'tcb.json'}: tcbInfo is not an object"


def test_crls_from_are_found_by_issuer_and_forgotten_on_extend() -> None:
    collateral = CollateralSet(crls=[PKI.crl("ca")])
    assert len(collateral.crls_from(PKI.ca)) == 1 and collateral.crls_from(PKI.root) == []
    collateral.extend(CollateralSet(crls=[PKI.crl("root")]))
    assert len(collateral.crls_from(PKI.root)) == 1


# --- typed views: TCB info v3 ------------------------------------------------------------------------------------

def tcb(**changes) -> dict:
    doc = forge.tcb_info_doc()
    doc.update(changes)
    return doc


def test_tcb_info_typed_view() -> None:
    info = tdx_tcb_info(tcb(identities=None) | {"tdxModuleIdentities": [forge.module_identity("tdx_01")]})
    assert (info.fmspc, info.pce_id) == ("b0c06f000000", "0000")
    assert set(info.module_identities) == {"TDX_01"}
    assert info.module.mrsigner == bytes(48) and info.module.attributes_mask == b"\xff" * 8
    (level,) = info.levels
    assert (level.sgx, level.pcesvn, level.tdx, level.status) == (forge.SGX_SVNS, forge.PCESVN, (0,) * 16, "UpToDate")


@pytest.mark.parametrize(("changes", "message"), [
    ({"id": "SGX"}, "TCB info id 'SGX' version '3' is not a TDX TCB info v3"),
    ({"version": 2}, "TCB info id 'TDX' version '2' is not a TDX TCB info v3"),
    ({"tcbLevels": {}}, "tcbInfo.tcbLevels: expected a list"),
    ({"tcbLevels": [{"tcbStatus": "UpToDate"}]}, "tcbInfo.tcbLevels[0]: missing tcb"),
    ({"tcbLevels": [forge.tcb_level(pcesvn=0x10000)]}, "tcbInfo.tcbLevels[0].pcesvn: expected an integer 0-65535"),
    ({"tcbLevels": [forge.tcb_level(sgx=(256,) * 16)]},
     "tcbInfo.tcbLevels[0].sgxtcbcomponents: expected an integer 0-255, got '256'"),
    ({"tcbLevels": [forge.tcb_level(sgx=(True,) * 16)]},
     "tcbInfo.tcbLevels[0].sgxtcbcomponents: expected an integer 0-255, got 'True'"),
    ({"tcbLevels": [forge.tcb_level(status="Fine")]}, "tcbInfo.tcbLevels[0]: unknown tcbStatus 'Fine'"),
    ({"fmspc": "B0C06F"}, "tcbInfo.fmspc: expected 6 bytes of hex"),
    ({"pceId": "zz"}, "tcbInfo.pceId: expected 2 bytes of hex"),
    ({"tdxModule": {"mrsigner": "00" * 48}}, "tcbInfo.tdxModule: missing attributes"),
    ({"tdxModuleIdentities": [{"id": "TDX_01"}]}, "tcbInfo.tdxModuleIdentities[0]: missing tcbLevels"),
    ({"tdxModuleIdentities": [forge.module_identity(isvsvn=-1)]},
     "tcbInfo.tdxModuleIdentities[0].isvsvn: expected an integer 0-65535"),
])
def test_malformed_tcb_info_names_the_field(changes: dict, message: str) -> None:
    assert refused(tdx_tcb_info, tcb(**changes)).startswith(message)


def test_levels_up_to_the_limits_are_read() -> None:
    info = tdx_tcb_info(tcb(tcbLevels=[forge.tcb_level(sgx=(255,) * 16, pcesvn=0xFFFF)],
                            tdxModuleIdentities=[forge.module_identity(isvsvn=0xFFFF)]))
    assert info.levels[0].sgx == (255,) * 16 and info.levels[0].pcesvn == 0xFFFF
    assert info.module_identities["TDX_01"].levels == ((0xFFFF, "UpToDate"),)


# --- typed views: TD_QE identity v2 -----------------------------------------------------------------------------

def test_qe_identity_typed_view() -> None:
    qe = td_qe_identity(forge.qe_identity_doc())
    assert (qe.mrsigner, qe.isvprodid, qe.levels) == (forge.TD_QE_MRSIGNER, 2, ((4, "UpToDate"),))
    assert (qe.miscselect, qe.miscselect_mask) == (0, 0xFFFFFFFF)
    assert qe.attributes == bytes.fromhex("11" + "00" * 15) and qe.attributes_mask[:2] == b"\xfb\xff"


@pytest.mark.parametrize(("changes", "message"), [
    ({"id": "QE"}, "enclave identity id 'QE' version '2' is not a TD_QE identity v2"),
    ({"version": 1}, "enclave identity id 'TD_QE' version '1' is not a TD_QE identity v2"),
    ({"mrsigner": "00"}, "enclaveIdentity.mrsigner: expected 32 bytes of hex"),
    ({"isvprodid": 0x10000}, "enclaveIdentity.isvprodid: expected an integer 0-65535"),
    ({"miscselect": "0"}, "enclaveIdentity.miscselect: expected 4 bytes of hex"),
    ({"miscselectMask": None}, "enclaveIdentity.miscselectMask: expected 4 bytes of hex"),
    ({"attributesMask": "00"}, "enclaveIdentity.attributesMask: expected 16 bytes of hex"),
    ({"tcbLevels": [{"tcb": {}, "tcbStatus": "UpToDate"}]}, "enclaveIdentity: missing isvsvn"),
])
def test_malformed_qe_identity_names_the_field(changes: dict, message: str) -> None:
    doc = forge.qe_identity_doc()
    doc.update(changes)
    assert refused(td_qe_identity, doc).startswith(message)
