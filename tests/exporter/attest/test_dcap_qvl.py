"""Verdicts compared with an independent implementation: Phala's ``dcap-qvl`` (Rust, from PyPI) on TDX quotes.

Both read the very same bytes: the quote and one collateral bundle (``QuoteCollateralV3`` JSON), at the same time,
anchored at the same root (the real Intel root, or the private test root via ``verify_with_root_ca``). Agreement
is on accept/reject and, when both accept, on the TCB status. Where the two are known to differ by design (we are
stricter), the case says so and asserts exactly that difference.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dcap_qvl
import pytest
from cryptography.hazmat.primitives import serialization

from exporter.attest.collateral import load_dir
from exporter.attest.errors import EvidenceError
from exporter.attest.trust import TrustStore
from exporter.attest.verify_tdx import TdxVerifier

from . import forge
from .forge import (
    AT,
    QeFields,
    TdFields,
    module_identity,
    pem,
    qe_identity_doc,
    signed_json,
    tcb_info_doc,
    tcb_level,
)
from .vectors import TDX, utc

PKI = forge.intel_pki()
WORLD = forge.tdx_world()


def ours(quote: bytes, bundle: str, at: dt.datetime, trust: TrustStore, folder: Path) -> str:
    """``accept:<status>`` or ``reject:<reason>``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bundle.json").write_text(bundle)
    try:
        return "accept:" + str(TdxVerifier(trust).verify(quote, at, load_dir(folder)).tcb_status)
    except EvidenceError as exc:
        return "reject:" + exc.reason


def theirs(quote: bytes, bundle: str, at: dt.datetime, root_der: bytes | None = None) -> str:
    collateral = dcap_qvl.QuoteCollateralV3.from_json(bundle)
    now = int(at.timestamp())
    try:
        report = (dcap_qvl.verify_with_root_ca(quote, collateral, root_der, now) if root_der
                  else dcap_qvl.verify(quote, collateral, now))
    except ValueError as exc:  # the bindings raise ValueError("Verification failed: ...") on every rejection
        return "reject:" + str(exc)[:60]
    return "accept:" + report.status


@pytest.mark.parametrize(("quote", "bundle", "at", "expected"), [
    ("quote-v4-3.dat", "collateral-3.json", utc(2025, 7, 1), "accept:UpToDate"),
    ("quote-v5-4.dat", "collateral-4.json", utc(2026, 3, 1), "reject"),
    ("quote-v5-7.dat", "collateral-4.json", utc(2026, 3, 1), "reject"),
    ("quote-v4-3.dat", "collateral-3.json", utc(2026, 3, 1), "reject"),  # stale collateral
])
def test_real_vectors_agree(tmp_path, quote: str, bundle: str, at: dt.datetime, expected: str) -> None:
    data, text = (TDX / quote).read_bytes(), (TDX / bundle).read_text()
    mine, other = ours(data, text, at, TrustStore.default(), tmp_path), theirs(data, text, at)
    assert mine.startswith(expected) and other.startswith(expected), (mine, other)
    if expected.startswith("accept"):
        assert mine == other


def _tcb(**kwargs) -> str:
    return signed_json("tcbInfo", tcb_info_doc(**kwargs), PKI.signing_key)


FORGED = {
    "control": (WORLD, {}),
    "control v5": (WORLD, {"version": 5}),
    "out of date": (WORLD.replace(tcb_info=_tcb(levels=[tcb_level(sgx=(9,) * 16), tcb_level(status="OutOfDate")])),
                    {}),
    "sw hardening needed": (WORLD.replace(tcb_info=_tcb(levels=[tcb_level(status="SWHardeningNeeded")])), {}),
    "module out of date": (WORLD.replace(tcb_info=_tcb(identities=[module_identity(status="OutOfDate")])), {}),
    "revoked tcb level": (WORLD.replace(tcb_info=_tcb(levels=[tcb_level(status="Revoked")])), {}),
    "below every level": (WORLD.replace(tcb_info=_tcb(levels=[tcb_level(pcesvn=99)])), {}),
    "revoked pck": (WORLD.replace(crls=(PKI.crl("ca", [WORLD.pck.serial_number]), PKI.crl("root"))), {}),
    "qe not bound": (WORLD, {"bind": False}),
    "other qe vendor": (WORLD, {"qe_vendor": b"\x01" * 16}),
    "module signer": (WORLD.replace(td=TdFields(mrsignerseam=b"\x01" * 48)), {}),
    "module identity missing": (WORLD.replace(td=TdFields(tee_tcb_svn=bytes([3, 2, 2]) + bytes(13))), {}),
    "qe signer": (WORLD.replace(qe=QeFields(mrsigner=b"\x01" * 32)), {}),
    "qe svn below": (WORLD.replace(qe=QeFields(isvsvn=3)), {}),
    "tcb info of another fmspc": (WORLD.replace(tcb_info=_tcb(fmspc=b"\x01" * 6)), {}),
    "tcb info badly signed": (WORLD.replace(tcb_info=signed_json("tcbInfo", tcb_info_doc(),
                                                                 forge.intel_pki("other").signing_key)), {}),
    "tcb info signed by pck": (WORLD.replace(tcb_info=signed_json("tcbInfo", tcb_info_doc(), WORLD.pck_key),
                                             signing_pem=WORLD.chain_pem), {}),
    "qe identity not TD_QE": (WORLD.replace(qe_identity=signed_json("enclaveIdentity", qe_identity_doc(kind="QE"),
                                                                    PKI.signing_key)), {}),
    "sgx tcb info": (WORLD.replace(td=TdFields(tee_tcb_svn=bytes(16)), tcb_info=_tcb(kind="SGX")), {}),
    "tdx tcb info v2": (WORLD.replace(tcb_info=_tcb(version=2)), {}),
    "module attributes": (WORLD.replace(td=TdFields(seam_attributes=bytes(7) + b"\x01")), {}),
    "pceid": (WORLD.replace(tcb_info=_tcb(pce_id="0001")), {}),
    "tcb info not yet valid": (WORLD.replace(tcb_info=_tcb(issued=utc(2025, 7, 1), next_update=utc(2025, 8, 1))), {}),
    "crl badly signed": (WORLD.replace(crls=(PKI.crl("ca", signer=forge.intel_pki("other").ca_key),
                                             PKI.crl("root"))), {}),
    "unversioned module": (WORLD.replace(td=TdFields(tee_tcb_svn=bytes([3, 0, 2]) + bytes(13))), {}),
}
# dcap-qvl 0.7 accepts what we refuse here: it does not compare the TCB info's pceId with the PCK's PCEID, which
# Intel's QVL does (TCB info mismatch). Any other disagreement fails the test.
STRICTER = {"pceid": "reject:collateral"}
_MINTED_KEY, _MINTED = PKI.pck(sgx_svns=(255,) * 16, signer=WORLD.pck_key, issuer=WORLD.pck.subject)


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_evidence_agrees(tmp_path, case: str) -> None:
    world, quote_args = FORGED[case]
    quote, bundle = world.quote(**quote_args), world.bundle()
    root_der = PKI.root.public_bytes(serialization.Encoding.DER)
    mine = ours(quote, bundle, AT, forge.trust_with(PKI.root), tmp_path)
    other = theirs(quote, bundle, AT, root_der)
    if case in STRICTER:
        assert (mine, other.split(":")[0]) == (STRICTER[case], "accept"), (mine, other)
        return
    assert mine.split(":")[0] == other.split(":")[0], (mine, other)
    if mine.startswith("accept"):
        assert mine == other


def test_the_bundle_is_what_both_read() -> None:
    doc = json.loads(WORLD.bundle())
    assert set(doc) == {"pck_crl_issuer_chain", "pck_crl", "root_ca_crl", "tcb_info_issuer_chain", "tcb_info",
                        "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature"}
    assert pem(PKI.signing).decode() in doc["tcb_info_issuer_chain"]


def test_pck_minted_by_a_pck_key_is_refused_by_both(tmp_path) -> None:
    quote = forge.tdx_quote(_MINTED_KEY, pem(_MINTED, WORLD.pck, PKI.ca, PKI.root), td=WORLD.td)
    root_der = PKI.root.public_bytes(serialization.Encoding.DER)
    mine = ours(quote, WORLD.bundle(), AT, forge.trust_with(PKI.root), tmp_path)
    other = theirs(quote, WORLD.bundle(), AT, root_der)
    assert mine == "reject:chain" and other.startswith("reject"), (mine, other)
