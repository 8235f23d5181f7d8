"""SEV-SNP: every real report verifies to its AMD root at a pinned time; tampering, wrong keys, expiry are caught."""

from __future__ import annotations

import pytest

from exporter.attest.errors import EvidenceError
from exporter.attest.snp import REPORT_SIZE, parse_report
from exporter.attest.trust import AMD, ChainVerifier, TrustStore, amd_shape, load_certificates
from exporter.attest.verify_snp import SnpCerts, SnpVerifier, load_certs_dir

from .vectors import SNP, SNP_AT, SNP_VECTORS, snp_certs, snpguest_dir, utc


@pytest.fixture(scope="module")
def verifier() -> SnpVerifier:
    return SnpVerifier(TrustStore.default())


@pytest.mark.parametrize("report", sorted(SNP_VECTORS))
def test_every_real_report_verifies_at_pinned_time(verifier: SnpVerifier, report: str) -> None:
    leaf, chain = SNP_VECTORS[report]
    verified = verifier.verify((SNP / report).read_bytes(), snp_certs(leaf, chain), SNP_AT)
    assert verified.tee_type == "sev-snp"
    assert verified.measurement == "sha384:" + parse_report((SNP / report).read_bytes()).measurement.hex()


def test_decoded_facts_match_sources() -> None:
    r1 = parse_report((SNP / "milan-report-1.bin").read_bytes())
    assert (r1.version, r1.policy, r1.debug_allowed) == (2, 0xB0000, True)
    assert r1.measurement.hex().startswith("b07af9620f3b839b")
    vlek = parse_report((SNP / "milan-vlek-report-4.bin").read_bytes())
    assert (vlek.version, vlek.vmpl, vlek.signing_key, vlek.product) == (3, 1, 1, "Milan")
    assert vlek.reported_tcb().components() == {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 217}
    genoa = parse_report((SNP / "genoa-report-5.bin").read_bytes())
    assert (genoa.product, genoa.guest_svn) == ("Genoa", 65547)
    assert genoa.reported_tcb().components() == {"bootloader": 10, "tee": 0, "snp": 23, "microcode": 84}


def test_tampered_report_fails_signature(verifier: SnpVerifier) -> None:
    with pytest.raises(EvidenceError) as err:
        verifier.verify((SNP / "milan-report-2-tampered.bin").read_bytes(), snp_certs("milan-vcek-2.der", None),
                        SNP_AT)
    assert err.value.reason == "signature"


def test_report_signed_by_another_chips_vcek_is_rejected(verifier: SnpVerifier) -> None:
    with pytest.raises(EvidenceError) as err:
        verifier.verify((SNP / "milan-report-1.bin").read_bytes(), snp_certs("milan-vcek-2.der", None), SNP_AT)
    assert err.value.reason == "signature"  # the binding check is proven on forged reports (test_forged_snp.py)


def test_vcek_given_for_vlek_signed_report_is_rejected(verifier: SnpVerifier) -> None:
    with pytest.raises(EvidenceError) as err:
        verifier.verify((SNP / "milan-vlek-report-4.bin").read_bytes(), snp_certs("milan-vcek-2.der", None), SNP_AT)
    assert err.value.reason == "certificate"


def test_expired_vlek_is_rejected_after_its_validity(verifier: SnpVerifier) -> None:
    leaf, chain = SNP_VECTORS["milan-vlek-report-4.bin"]
    with pytest.raises(EvidenceError) as err:
        verifier.verify((SNP / "milan-vlek-report-4.bin").read_bytes(), snp_certs(leaf, chain), utc(2026, 1, 1))
    assert err.value.reason == "expired"


def test_genoa_vcek_cannot_chain_to_milan_ark(verifier: SnpVerifier) -> None:
    certs = snp_certs("genoa-vcek-5.pem", "milan-ask-ark.pem")
    # the Milan ASK in the evidence is ignored (not the issuer); the shipped Genoa ASK completes the chain
    verified = verifier.verify((SNP / "genoa-report-5.bin").read_bytes(), certs, SNP_AT)
    assert verified.product == "Genoa"
    forged = SnpCerts(certs.leaf, ())
    bare = SnpVerifier(TrustStore(anchors=TrustStore.default().anchors, intermediates=()))
    with pytest.raises(EvidenceError) as err:
        bare.verify((SNP / "genoa-report-5.bin").read_bytes(), forged, SNP_AT)
    assert err.value.reason == "chain"


def test_turin_vcek_chains_to_shipped_turin_ark() -> None:
    trust = TrustStore.default()
    leaf = load_certificates((SNP / "turin-vcek-1.der").read_bytes(), "turin")[0]
    chain = [leaf, trust.intermediate_for(leaf)]
    full = ChainVerifier(trust).verify(chain, SNP_AT, AMD, amd_shape)
    assert full[-1].subject.rfc4514_string().startswith("CN=ARK-Turin")


def test_snpguest_folder_layout_is_read(tmp_path) -> None:
    folder = snpguest_dir(tmp_path / "certs", "milan-vcek-3.der", "milan-ask-ark.pem")
    certs = load_certs_dir(folder)
    assert len(certs.chain) == 2
    verified = SnpVerifier(TrustStore.default()).verify((SNP / "milan-report-3.bin").read_bytes(), certs, SNP_AT)
    assert verified.signer == "vcek"


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "truncated"),
    (bytes(REPORT_SIZE - 1), "truncated"),
    (bytes(REPORT_SIZE + 1), "malformed"),
    (bytes(REPORT_SIZE), "unsupported"),  # version 0
])
def test_malformed_reports_raise_typed_parse_errors(data: bytes, reason: str) -> None:
    with pytest.raises(EvidenceError) as err:
        parse_report(data)
    assert err.value.reason == reason
    assert err.value.metric_reason == "parse"
