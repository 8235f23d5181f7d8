"""What an operator reads when collateral is refused: the reason and the field, file or value the message names.

A refused collateral item becomes ``EvidenceError("collateral" | "certificate", message)``: the reason is the metric
label, the message lands in the log and the journal. Each case here changes one field of a forged, otherwise valid
document (tests/exporter/attest/forge.py), so every check before the targeted one passes, and asserts the message
naming that field (by its path in the PCS document), that file or that value, cut where the product cuts it.
Found by mutation testing (docs/testing.md) of exporter/attest/collateral.py; the tables hold one row per rule.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from exporter.attest.verify_tdx import TdxVerifier

from . import forge

PKI = forge.intel_pki()
WORLD = forge.tdx_world()
DROP = object()  # as a value in an edit: remove the field
BAD_PEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def refusal(call: Any, *args: Any) -> tuple[str, str]:
    with pytest.raises(EvidenceError) as err:
        call(*args)
    return err.value.reason, str(err.value)


def edited(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with the field at ``path`` (keys and list indexes) set to ``value`` or dropped."""
    out = copy.deepcopy(doc)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    if value is DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


# --- TCB info v3: every field a refusal can name -----------------------------------------------------------------

LEVEL = ("tcbLevels", 0)
TCB = (*LEVEL, "tcb")
MODULE_ID = ("tdxModuleIdentities", 0)

TCB_INFO_FIELDS = [
    (("tcbLevels",), DROP, "tcbInfo: missing tcbLevels"),
    ((*TCB, "sgxtcbcomponents"), DROP, "tcbInfo.tcbLevels[0]: missing sgxtcbcomponents"),
    ((*TCB, "sgxtcbcomponents"), {}, "tcbInfo.tcbLevels[0].sgxtcbcomponents: expected a list"),
    ((*TCB, "sgxtcbcomponents", 3), {"svm": 1}, "tcbInfo.tcbLevels[0].sgxtcbcomponents: missing svn"),
    ((*TCB, "pcesvn"), DROP, "tcbInfo.tcbLevels[0]: missing pcesvn"),
    ((*TCB, "pcesvn"), "9" * 50, f"tcbInfo.tcbLevels[0].pcesvn: expected an integer 0-65535, got {'9' * 40!r}"),
    ((*TCB, "tdxtcbcomponents"), DROP, "tcbInfo.tcbLevels[0]: missing tdxtcbcomponents"),
    ((*TCB, "tdxtcbcomponents"), {}, "tcbInfo.tcbLevels[0].tdxtcbcomponents: expected a list"),
    ((*TCB, "tdxtcbcomponents"), [{"svn": 0}] * 15,
     "tcbInfo.tcbLevels[0].tdxtcbcomponents: expected 16 components, got 15"),
    ((*LEVEL, "tcbStatus"), DROP, "tcbInfo.tcbLevels[0]: missing tcbStatus"),
    ((*LEVEL, "tcbStatus"), "Fine" * 15, f"tcbInfo.tcbLevels[0]: unknown tcbStatus {('Fine' * 10)!r}"),
    (("tdxModuleIdentities",), {}, "tcbInfo.tdxModuleIdentities: expected a list"),
    ((*MODULE_ID, "id"), DROP, "tcbInfo.tdxModuleIdentities[0]: missing id"),
    ((*MODULE_ID, "tcbLevels"), {}, "tcbInfo.tdxModuleIdentities[0].tcbLevels: expected a list"),
    ((*MODULE_ID, "tcbLevels", 0, "tcb"), DROP, "tcbInfo.tdxModuleIdentities[0]: missing tcb"),
    ((*MODULE_ID, "tcbLevels", 0, "tcb", "isvsvn"), DROP, "tcbInfo.tdxModuleIdentities[0]: missing isvsvn"),
    ((*MODULE_ID, "tcbLevels", 0, "tcbStatus"), DROP, "tcbInfo.tdxModuleIdentities[0]: missing tcbStatus"),
    ((*MODULE_ID, "tcbLevels", 0, "tcbStatus"), "Bad", "tcbInfo.tdxModuleIdentities[0]: unknown tcbStatus 'Bad'"),
    ((*MODULE_ID, "mrsigner"), DROP, "tcbInfo.tdxModuleIdentities[0]: missing mrsigner"),
    ((*MODULE_ID, "mrsigner"), "00", "tcbInfo.tdxModuleIdentities[0].mrsigner: expected 48 bytes of hex"),
    ((*MODULE_ID, "attributes"), DROP, "tcbInfo.tdxModuleIdentities[0]: missing attributes"),
    ((*MODULE_ID, "attributes"), "00", "tcbInfo.tdxModuleIdentities[0].attributes: expected 8 bytes of hex"),
    ((*MODULE_ID, "attributesMask"), DROP, "tcbInfo.tdxModuleIdentities[0]: missing attributesMask"),
    ((*MODULE_ID, "attributesMask"), "00", "tcbInfo.tdxModuleIdentities[0].attributesMask: expected 8 bytes of hex"),
    (("fmspc",), DROP, "tcbInfo: missing fmspc"),
    (("pceId",), DROP, "tcbInfo: missing pceId"),
    (("tdxModule",), DROP, "tcbInfo: missing tdxModule"),
    (("tdxModule", "mrsigner"), DROP, "tcbInfo.tdxModule: missing mrsigner"),
    (("tdxModule", "mrsigner"), "00" * 47, "tcbInfo.tdxModule.mrsigner: expected 48 bytes of hex"),
    (("tdxModule", "attributes"), "zz" * 8, "tcbInfo.tdxModule.attributes: expected 8 bytes of hex"),
    (("tdxModule", "attributesMask"), DROP, "tcbInfo.tdxModule: missing attributesMask"),
    (("tdxModule", "attributesMask"), 7, "tcbInfo.tdxModule.attributesMask: expected 8 bytes of hex"),
    (("id",), "TDX-" + "x" * 30, f"TCB info id {'TDX-' + 'x' * 16!r} version '3' is not a TDX TCB info v3"),
    (("version",), "3" * 15, f"TCB info id 'TDX' version {'3' * 10!r} is not a TDX TCB info v3"),
]


@pytest.mark.parametrize(("path", "value", "message"), TCB_INFO_FIELDS,
                         ids=[f"{'.'.join(map(str, p))}={'drop' if v is DROP else 'bad'}" for p, v, _ in
                              TCB_INFO_FIELDS])
def test_tcb_info_refusal_names_the_field(path: tuple[Any, ...], value: Any, message: str) -> None:
    doc = edited(forge.tcb_info_doc(), path, value)
    assert refusal(tdx_tcb_info, doc) == ("collateral", message)


def test_tcb_info_refusal_reaches_the_operator_through_the_verifier(tmp_path: Path) -> None:
    """Verifying a quote against that collateral reports the same reason and message."""
    doc = edited(forge.tcb_info_doc(), (*MODULE_ID, "attributesMask"), DROP)
    world = WORLD.replace(tcb_info=forge.signed_json("tcbInfo", doc, PKI.signing_key))
    verifier = TdxVerifier(forge.trust_with(PKI.root))
    assert refusal(verifier.verify, world.quote(), forge.AT, world.collateral(tmp_path)) == (
        "collateral", "tcbInfo.tdxModuleIdentities[0]: missing attributesMask")


def test_tdx_module_of_an_unversioned_platform_has_no_levels() -> None:
    """``tdxModule`` carries no TCB levels (only ``tdxModuleIdentities`` do): its identity has an empty tuple."""
    info = tdx_tcb_info(forge.tcb_info_doc())
    assert info.module.levels == ()
    assert info.module_identities["TDX_01"].levels == ((0, "UpToDate"),)


# --- TD_QE identity v2 ---------------------------------------------------------------------------------------------

QE_FIELDS = [
    (("mrsigner",), DROP, "enclaveIdentity: missing mrsigner"),
    (("attributes",), DROP, "enclaveIdentity: missing attributes"),
    (("attributes",), "11" * 8, "enclaveIdentity.attributes: expected 16 bytes of hex"),
    (("attributesMask",), DROP, "enclaveIdentity: missing attributesMask"),
    (("isvprodid",), DROP, "enclaveIdentity: missing isvprodid"),
    (("miscselect",), DROP, "enclaveIdentity: missing miscselect"),
    (("miscselectMask",), DROP, "enclaveIdentity: missing miscselectMask"),
    (("tcbLevels",), DROP, "enclaveIdentity: missing tcbLevels"),
    (("tcbLevels",), {}, "enclaveIdentity.tcbLevels: expected a list"),
    (("tcbLevels", 0, "tcb"), DROP, "enclaveIdentity: missing tcb"),
    (("tcbLevels", 0, "tcbStatus"), DROP, "enclaveIdentity: missing tcbStatus"),
    (("tcbLevels", 0, "tcbStatus"), "Bad", "enclaveIdentity: unknown tcbStatus 'Bad'"),
    (("tcbLevels", 0, "tcb", "isvsvn"), 0x10000, "enclaveIdentity.isvsvn: expected an integer 0-65535, got '65536'"),
    (("id",), "TD_QE-" + "x" * 30,
     f"enclave identity id {'TD_QE-' + 'x' * 14!r} version '2' is not a TD_QE identity v2"),
    (("version",), "2" * 15, f"enclave identity id 'TD_QE' version {'2' * 10!r} is not a TD_QE identity v2"),
]


@pytest.mark.parametrize(("path", "value", "message"), QE_FIELDS,
                         ids=[f"{'.'.join(map(str, p))}={'drop' if v is DROP else 'bad'}" for p, v, _ in QE_FIELDS])
def test_qe_identity_refusal_names_the_field(path: tuple[Any, ...], value: Any, message: str) -> None:
    doc = edited(forge.qe_identity_doc(), path, value)
    assert refusal(td_qe_identity, doc) == ("collateral", message)


def test_qe_isvsvn_is_a_16_bit_value() -> None:
    """ISVSVN is 16 bits (SGX REPORT ISVSVN): 300 and 65535 are read, not refused as bytes would be."""
    doc = forge.qe_identity_doc()
    doc["tcbLevels"] = [{"tcb": {"isvsvn": svn}, "tcbStatus": "UpToDate"} for svn in (0xFFFF, 300)]
    assert td_qe_identity(doc).levels == ((0xFFFF, "UpToDate"), (300, "UpToDate"))


# --- PCS responses and dcap-qvl bundles ----------------------------------------------------------------------------

def test_response_whose_signed_bytes_cannot_be_found_is_refused() -> None:
    """A response re-encoded so the key is escaped (``tcb\\u0049nfo``) decodes to the same object, but the exact
    signed bytes can no longer be cut out of it: refused, not checked against some other text."""
    text = WORLD.tcb_info.replace('"tcbInfo"', '"tcb\\u0049nfo"', 1)
    assert json.loads(text)["tcbInfo"] == forge.tcb_info_doc()
    assert refusal(parse_pcs_json, text) == ("collateral", "tcbInfo: signed body not found")


def test_json_of_exactly_the_size_limit_is_read() -> None:
    text = "{}" + " " * (MAX_JSON_BYTES - 2)
    out = parse_pcs_json(text)
    assert (out.tcb_infos, out.qe_identities, out.crls, out.certs) == ([], [], [], [])


def test_json_error_is_quoted_up_to_80_characters() -> None:
    prefix = "collateral: not JSON: "
    reason, message = refusal(parse_pcs_json, "\n" * 100_000 + "{")
    detail = message.removeprefix(prefix)
    assert reason == "collateral" and message.startswith(prefix)
    assert detail.startswith("Expecting property name enclosed in double quotes: line 100001") and len(detail) == 80


def bundle(**changes: Any) -> str:
    doc = json.loads(WORLD.bundle())
    for key, value in changes.items():
        if value is DROP:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"tcb_info_issuer_chain": BAD_PEM}, ("certificate", "tcb_info_issuer_chain: not a valid certificate: ")),
    ({"qe_identity_issuer_chain": BAD_PEM}, ("certificate", "qe_identity_issuer_chain: not a valid certificate: ")),
    ({"pck_crl_issuer_chain": BAD_PEM}, ("certificate", "pck_crl_issuer_chain: not a valid certificate: ")),
    ({"tcb_info_signature": "00" * 63}, ("collateral", "tcb_info: expected a 64-byte hex ECDSA signature")),
    ({"qe_identity_signature": None}, ("collateral", "qe_identity: expected a 64-byte hex ECDSA signature")),
    ({"pck_crl": "3000"}, ("collateral", "pck_crl: not a valid CRL: ")),
    ({"root_ca_crl": "3000"}, ("collateral", "root_ca_crl: not a valid CRL: ")),
], ids=["tcb_info_chain", "qe_identity_chain", "pck_crl_chain", "tcb_info_signature", "qe_identity_signature",
        "pck_crl", "root_ca_crl"])
def test_bundle_refusal_names_the_member(changes: dict[str, Any], expected: tuple[str, str]) -> None:
    reason, message = refusal(parse_pcs_json, bundle(**changes))
    assert (reason, message[:len(expected[1])]) == expected


def test_bundle_with_only_a_qe_identity_is_read() -> None:
    """A bundle may carry the QE identity without a TCB info (the two are fetched apart)."""
    out = parse_pcs_json(bundle(tcb_info=DROP, tcb_info_signature=DROP, tcb_info_issuer_chain=DROP))
    assert out.tcb_infos == [] and [q.doc["id"] for q in out.qe_identities] == ["TD_QE"]


def test_bundle_pem_crl_may_start_with_white_space() -> None:
    crl_pem = WORLD.crls[1].public_bytes(serialization.Encoding.PEM).decode()
    out = parse_pcs_json(bundle(root_ca_crl="\n  " + crl_pem))
    assert [c.issuer for c in out.crls] == [PKI.ca.subject, PKI.root.subject]


# --- CRLs, dates and folders --------------------------------------------------------------------------------------

def test_crl_parse_error_is_quoted_up_to_200_characters() -> None:
    """A revoked entry whose serial is not an INTEGER: the library's reason is long (it names the path to the bad
    field); the message quotes its first 200 characters."""
    crl = PKI.crl("ca", [12345]).public_bytes(serialization.Encoding.DER)
    serial = forge.der_int(12345)
    assert crl.count(serial) == 1
    broken = crl.replace(serial, b"\x05" + serial[1:])  # tag INTEGER -> NULL
    prefix = "pck.crl: not a valid CRL: "
    reason, message = refusal(parse_crl, broken, "pck.crl")
    detail = message.removeprefix(prefix)
    assert reason == "collateral" and message.startswith(prefix)
    assert detail.startswith("error parsing asn1 value: ") and len(detail) == 200


def test_bad_date_is_quoted_up_to_40_characters() -> None:
    assert refusal(parse_time, "2025-" + "x" * 50, "qe_identity.nextUpdate") == (
        "collateral", f"qe_identity.nextUpdate: bad date {'2025-' + 'x' * 35!r}")


@pytest.fixture
def local_time_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC+05:30 (a POSIX TZ string: no tz database needed)."""
    monkeypatch.setenv("TZ", "XST-05:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(("text", "expected"), [
    ("2025-05-20T00:00:00Z", "2025-05-20T00:00:00+00:00"),
    ("2025-05-20T00:00:00", "2025-05-20T00:00:00+00:00"),  # no zone: UTC, as PCS means, not the host's zone
    ("2025-05-20T02:00:00+02:00", "2025-05-20T00:00:00+00:00"),
])
def test_dates_are_utc_whatever_the_local_zone(local_time_not_utc: None, text: str, expected: str) -> None:
    """Collateral dates are shown in messages (``issued ...``): in UTC, never in the exporter host's zone."""
    assert time.localtime(0).tm_gmtoff == 5 * 3600 + 1800
    assert parse_time(text, "tcb_info.issueDate").isoformat() == expected


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("pck.crl", b"\x30\x00", "pck.crl: not a valid CRL: "),
    ("pck.der", b"\x30\x00", "pck.der: not a valid CRL: "),
    ("root.pem", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "root.pem: not a valid CRL: "),
    ("signer.pem", BAD_PEM.encode(), "signer.pem: not a valid certificate: "),
])
def test_bad_file_is_named_twice_by_path_and_by_name(tmp_path: Path, name: str, data: bytes, expected: str) -> None:
    (tmp_path / name).write_bytes(data)
    reason, message = refusal(load_dir, tmp_path)
    prefix = f"{tmp_path / name}: {expected}"
    assert (reason, message[:len(prefix)]) == ("certificate" if "certificate" in expected else "collateral", prefix)


def test_certificates_of_every_file_are_kept(tmp_path: Path) -> None:
    """``.pem``, ``.crt`` and ``.cer`` are certificate files; the certificates of all of them are kept."""
    (tmp_path / "a.cer").write_bytes(forge.pem(PKI.signing))
    (tmp_path / "b.crt").write_bytes(forge.pem(PKI.ca))
    (tmp_path / "c.pem").write_bytes(forge.pem(PKI.root))
    assert load_dir(tmp_path).certs == [PKI.signing, PKI.ca, PKI.root]


@pytest.mark.parametrize(("make", "why"), [(lambda p: None, "No such file or directory"),
                                           (lambda p: p.write_text("{}"), "Not a directory")],
                         ids=["missing", "a-file"])
def test_unreadable_collateral_directory_is_named(tmp_path: Path, make: Any, why: str) -> None:
    """A start-up error naming the directory and why, not a traceback."""
    folder = tmp_path / "collateral"
    make(folder)
    assert refusal(load_dir, folder) == ("collateral", f"{folder}: cannot read the collateral directory: {why}")


# --- the CRL index memo -----------------------------------------------------------------------------------------

def test_crls_from_does_not_take_a_recycled_id_entry() -> None:
    """``crls_from`` memoises by id(issuer), holding the issuer; an entry left there by another certificate (ids are
    recycled after garbage collection) must not be used. Simulated by planting one under the CA's id."""
    collateral = CollateralSet(crls=[PKI.crl("ca"), PKI.crl("root")])
    collateral.__dict__["_by_cert"] = {id(PKI.ca): (PKI.root, [])}
    assert [c.issuer for c in collateral.crls_from(PKI.ca)] == [PKI.ca.subject]
