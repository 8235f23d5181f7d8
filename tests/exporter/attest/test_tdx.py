"""TDX: every real quote verifies to the Intel root at a pinned time; collateral gives the TCB status."""

from __future__ import annotations

import pytest

from exporter.attest.collateral import TdxTcbInfo, load_dir, parse_pcs_json, tdx_tcb_info
from exporter.attest.errors import EvidenceError
from exporter.attest.tdx import parse_quote
from exporter.attest.trust import TrustStore
from exporter.attest.verify_tdx import TdxVerifier, pck_facts, platform_status

from .vectors import TDX, TDX_AT, TDX_QUOTES, collateral_dir, utc


@pytest.fixture(scope="module")
def verifier() -> TdxVerifier:
    return TdxVerifier(TrustStore.default())


@pytest.mark.parametrize("quote", TDX_QUOTES)
def test_every_real_quote_verifies_at_pinned_time(verifier: TdxVerifier, quote: str) -> None:
    verified = verifier.verify((TDX / quote).read_bytes(), TDX_AT)
    assert verified.tee_type == "tdx"
    assert verified.tcb_status is None
    assert any("not checked" in w for w in verified.warnings)


def test_decoded_facts_match_sources() -> None:
    spr = parse_quote((TDX / "spr-quote-v4-1.dat").read_bytes())
    assert (spr.version, spr.trailing, spr.report.td_attributes) == (4, 39, 0x40000000)
    v5 = parse_quote((TDX / "quote-v5-7.dat").read_bytes())
    assert (v5.version, v5.body_type, v5.trailing) == (5, 3, 0)
    assert v5.report.mrservicetd is not None and v5.report.mrservicetd.hex().startswith("383c87d3")
    assert parse_quote((TDX / "quote-v4-debug-5.dat").read_bytes()).report.debug
    assert pck_facts(spr.pck_chain_pem).fmspc == "50806f000000"


ALL_OPTIONAL = ("pck_crl", "root_ca_crl", "qe_identity")
PARTIAL = [  # real collateral sets that lack CRLs (and one the QE identity): usable only when the policy says so
    ("quote-v5-2.dat", ("tcbinfo-2.json", "tcb-signing-chain.pem"), utc(2026, 2, 15), "UpToDate", ALL_OPTIONAL),
    ("quote-v4-6.dat", ("tcbinfo-6.json", "qeidentity-6.json", "tcb-signing-chain.pem"), utc(2025, 11, 1),
     "OutOfDate", ("pck_crl", "root_ca_crl")),
]


@pytest.mark.parametrize(("quote", "files", "at", "status", "allow"), [
    ("quote-v4-3.dat", ("collateral-3.json",), utc(2025, 7, 1), "UpToDate", ()),
    *PARTIAL,
])
def test_collateral_gives_tcb_status(verifier, tmp_path, quote, files, at, status, allow) -> None:
    collateral = load_dir(collateral_dir(tmp_path, *files))
    verified = verifier.verify((TDX / quote).read_bytes(), at, collateral, allow)
    assert verified.tcb_status == status


@pytest.mark.parametrize(("quote", "files", "at", "status", "allow"), PARTIAL)
def test_incomplete_real_collateral_is_refused_unless_allowed(verifier, tmp_path, quote, files, at, status,
                                                              allow) -> None:
    collateral = load_dir(collateral_dir(tmp_path, *files))
    for missing in allow:
        with pytest.raises(EvidenceError) as err:
            verifier.verify((TDX / quote).read_bytes(), at, collateral, tuple(a for a in allow if a != missing))
        assert err.value.reason == "collateral"
        assert missing in str(err.value)


def test_full_collateral_checks_crls_without_warnings(verifier, tmp_path) -> None:
    collateral = load_dir(collateral_dir(tmp_path, "collateral-3.json"))
    verified = verifier.verify((TDX / "quote-v4-3.dat").read_bytes(), utc(2025, 7, 1), collateral)
    assert verified.warnings == ()


@pytest.mark.parametrize(("quote", "files", "at"), [
    ("quote-v5-4.dat", ("collateral-4.json",), utc(2026, 3, 1)),
    ("quote-v5-7.dat", ("collateral-4.json",), utc(2026, 3, 1)),
])
def test_platform_below_every_tcb_level_is_rejected(verifier, tmp_path, quote, files, at) -> None:
    collateral = load_dir(collateral_dir(tmp_path, *files))
    with pytest.raises(EvidenceError) as err:
        verifier.verify((TDX / quote).read_bytes(), at, collateral)
    assert err.value.reason == "tcb"


def test_tcb_matching_on_2023_collateral() -> None:
    # The 2023 TCB info cannot be used at any one time with today's TCB signing certificate (issued 2025), so
    # the matching itself is checked: debug-5 meets the UpToDate level, spr-1 is below every level.
    tcb_info = load_dir_single("tcbinfo-1.json")
    debug = parse_quote((TDX / "quote-v4-debug-5.dat").read_bytes())
    assert platform_status(tcb_info, pck_facts(debug.pck_chain_pem), debug) == "UpToDate"
    spr = parse_quote((TDX / "spr-quote-v4-1.dat").read_bytes())
    with pytest.raises(EvidenceError) as err:
        platform_status(tcb_info, pck_facts(spr.pck_chain_pem), spr)
    assert err.value.reason == "tcb"


def load_dir_single(name: str) -> TdxTcbInfo:
    return tdx_tcb_info(parse_pcs_json((TDX / name).read_text()).tcb_infos[0].doc)


def test_stale_collateral_is_expired(verifier, tmp_path) -> None:
    collateral = load_dir(collateral_dir(tmp_path, "collateral-3.json"))
    with pytest.raises(EvidenceError) as err:
        verifier.verify((TDX / "quote-v4-3.dat").read_bytes(), utc(2026, 3, 1), collateral)
    assert err.value.reason == "expired"


def test_collateral_for_another_fmspc_is_a_collateral_error(verifier, tmp_path) -> None:
    collateral = load_dir(collateral_dir(tmp_path, "tcbinfo-6.json", "tcb-signing-chain.pem"))
    with pytest.raises(EvidenceError) as err:
        verifier.verify((TDX / "quote-v4-3.dat").read_bytes(), utc(2025, 11, 1), collateral, ALL_OPTIONAL)
    assert err.value.reason == "collateral"


def test_tampered_tcb_info_signature_is_rejected(verifier, tmp_path) -> None:
    folder = collateral_dir(tmp_path, "tcbinfo-6.json", "tcb-signing-chain.pem")
    text = (folder / "tcbinfo-6.json").read_text()
    (folder / "tcbinfo-6.json").write_text(text.replace('"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":18'))
    with pytest.raises(EvidenceError) as err:
        verifier.verify((TDX / "quote-v4-6.dat").read_bytes(), utc(2025, 11, 1), load_dir(folder), ALL_OPTIONAL)
    assert err.value.reason == "collateral"


def test_tampered_report_data_fails_quote_signature(verifier) -> None:
    with pytest.raises(EvidenceError) as err:
        verifier.verify((TDX / "quote-v4-3-tampered-reportdata.dat").read_bytes(), TDX_AT)
    assert err.value.reason == "signature"
    assert "quote signature" in str(err.value)


def test_truncated_quote_is_a_truncation_error(verifier) -> None:
    with pytest.raises(EvidenceError) as err:
        verifier.verify((TDX / "quote-v4-3-truncated.dat").read_bytes(), TDX_AT)
    assert err.value.reason == "truncated"


def test_pck_chain_outside_validity_is_expired(verifier) -> None:
    with pytest.raises(EvidenceError) as err:
        verifier.verify((TDX / "quote-v5-2.dat").read_bytes(), utc(2025, 1, 1))  # PCK leaf from 2026-01-27
    assert err.value.reason == "expired"


def test_untrusted_root_is_rejected() -> None:
    bare = TdxVerifier(TrustStore(anchors=tuple(a for a in TrustStore.default().anchors
                                                if "Intel" not in a.subject.rfc4514_string()), intermediates=()))
    with pytest.raises(EvidenceError) as err:
        bare.verify((TDX / "quote-v4-3.dat").read_bytes(), TDX_AT)
    assert err.value.reason == "chain"
