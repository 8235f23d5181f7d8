"""Trust roots given as files, leaf key usage, shipped intermediates and the messages of chain refusals.

Found by mutation testing (docs/testing.md): each test fails when the rule it names in exporter/attest/trust.py is
switched off or bent; the hierarchies are forged (tests/exporter/attest/forge.py).
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from exporter.attest.errors import EvidenceError
from exporter.attest.trust import (
    AMD,
    INTEL,
    ChainVerifier,
    TrustStore,
    amd_shape,
    intel_pck_shape,
    intel_tcb_signing_shape,
)

from . import forge
from .forge import AT, intel_name, issue, pem, utc

INTEL_PKI = forge.intel_pki()
AMD_PKI = forge.amd_pki()


def refusal(chain: list[x509.Certificate], vendor: str, shape, *roots: x509.Certificate,
            at=AT) -> tuple[str, str]:
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(forge.trust_with(*roots)).verify(chain, at, vendor, shape)
    return err.value.reason, str(err.value)


# --- a leaf is a signing key, not a CA -------------------------------------------------------------------------------

NO_SIGNATURE = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=True,
                             data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                             encipher_only=False, decipher_only=False)
CERT_SIGN = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
                          encipher_only=False, decipher_only=False)


@pytest.mark.parametrize("usage", [NO_SIGNATURE, CERT_SIGN], ids=["no-digital-signature", "cert-sign"])
def test_leaf_whose_key_usage_is_not_a_signing_keys_is_refused(usage: x509.KeyUsage) -> None:
    _, pck = INTEL_PKI.pck(usage=usage)
    assert refusal([pck, INTEL_PKI.ca], INTEL, intel_pck_shape, INTEL_PKI.root) == (
        "chain", "signing certificate 'Intel SGX PCK Certificate' keyUsage is not that of a signing key")


def test_leaf_that_is_a_ca_is_named() -> None:
    _, pck = INTEL_PKI.pck(ca=True)
    assert refusal([pck, INTEL_PKI.ca], INTEL, intel_pck_shape, INTEL_PKI.root) == (
        "chain", "signing certificate 'Intel SGX PCK Certificate' is a CA certificate")


def test_intermediate_that_is_not_a_ca_is_named() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(intel_name("Intel SGX PCK Platform CA"), INTEL_PKI.root.subject, ca_key.public_key(),
               INTEL_PKI.root_key, ca=False)
    _, pck = INTEL_PKI.pck(signer=ca_key, issuer=ca.subject)
    assert refusal([pck, ca], INTEL, intel_pck_shape, INTEL_PKI.root) == (
        "chain", "'Intel SGX PCK Platform CA' issues certificates but is not a CA (basicConstraints)")


# --- shape messages name the vendor's shape ------------------------------------------------------------------------

def test_shape_refusals_name_the_shape() -> None:
    _, named_vlek = AMD_PKI.vcek(cn="SEV-VLEK")  # a VLEK by name, issued by the ASK (VCEKs' CA)
    reason, message = refusal([named_vlek, AMD_PKI.ask], AMD, amd_shape, AMD_PKI.ark)
    assert (reason, message) == ("chain", "AMD chain: unexpected certificate 'SEV-Milan'")
    reason, message = refusal([INTEL_PKI.ca], INTEL, intel_pck_shape, INTEL_PKI.root)
    assert message == ("PCK chain has 2 certificates, expected exactly 3: 'Intel SGX PCK Platform CA' <- "
                       "'Intel SGX Root CA'")
    reason, message = refusal([INTEL_PKI.ca], INTEL, intel_tcb_signing_shape, INTEL_PKI.root)
    assert message == "TCB signing chain: unexpected certificate 'Intel SGX PCK Platform CA'"


def test_expired_certificate_is_named_with_its_validity() -> None:
    _, pck = INTEL_PKI.pck()
    reason, message = refusal([pck, INTEL_PKI.ca], INTEL, intel_pck_shape, INTEL_PKI.root, at=utc(2040, 1, 1))
    assert reason == "expired" and message.startswith(
        "certificate 'Intel SGX PCK Certificate' is not valid at 2040-01-01T00:00:00+00:00 (valid 2024-01-01")


# --- shipped intermediates --------------------------------------------------------------------------------------

def test_shipped_intermediate_is_chosen_by_signature_not_only_by_name() -> None:
    """Two known ASKs named SEV-Milan (the shipped one and a test one): the VCEK's own issuer is used."""
    other = forge.amd_pki(tag="other")
    trust = forge.trust_with(AMD_PKI.ark, intermediates=[other.ask, AMD_PKI.ask])
    _, vcek = AMD_PKI.vcek()
    assert trust.intermediate_for(vcek) is AMD_PKI.ask
    _, stranger = forge.amd_pki("Genoa").vcek()
    assert trust.intermediate_for(stranger) is None


# --- trust roots given as files ----------------------------------------------------------------------------------

def test_trust_root_whose_self_signature_does_not_verify_is_refused(tmp_path) -> None:
    """Named ARK-Milan and self-issued, but signed by another key: not a root anyone can check."""
    key = ec.generate_private_key(ec.SECP384R1())
    fake = issue(forge.amd_name("ARK-Milan"), forge.amd_name("ARK-Milan"), key.public_key(),
                 ec.generate_private_key(ec.SECP384R1()), ca=True, usage=forge.CA_USAGE)
    path = tmp_path / "ark.pem"
    path.write_bytes(pem(fake))
    with pytest.raises(EvidenceError) as err:
        TrustStore.default([path])
    assert (err.value.reason, str(err.value)) == ("certificate", f"{path}: trust root self-signature does not verify")


def test_oversized_trust_root_file_is_not_read(tmp_path) -> None:
    text = pem(INTEL_PKI.root)
    path = tmp_path / "root.pem"
    path.write_bytes(text + b"#" * (1024 * 1024 + 1 - len(text)))
    with pytest.raises(EvidenceError) as err:
        TrustStore.default([path])
    expected = f"{path}: cannot read trust root: larger than 1048576 bytes"
    assert (err.value.reason, str(err.value)) == ("certificate", expected)
    path.write_bytes(text + b"#" * (1024 * 1024 - len(text)))  # exactly at the cap
    assert INTEL_PKI.root in TrustStore.default([path]).anchors


def test_certificate_without_a_common_name_is_refused_by_shape_not_a_traceback() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    nameless = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Intel Corporation")])
    leaf = issue(nameless, INTEL_PKI.ca.subject, key.public_key(), INTEL_PKI.ca_key, ca=False, usage=forge.LEAF_USAGE)
    assert refusal([leaf, INTEL_PKI.ca], INTEL, intel_pck_shape, INTEL_PKI.root) == (
        "chain", "PCK chain: unexpected certificate ''")


def test_a_shipped_root_that_does_not_match_its_pin_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from exporter.attest import trust
    monkeypatch.setitem(trust.ROOT_FINGERPRINT_PREFIXES, "ARK-Genoa", "0" * 16)
    with pytest.raises(RuntimeError, match="^shipped trust root ARK-Genoa is missing or does not match its pinned "
                                           "fingerprint$"):
        TrustStore.default()


def test_nul_padded_certificate_file_is_read() -> None:
    """Some tools pad certificate files with NULs (snpguest's fixed-size buffers)."""
    from exporter.attest.trust import load_certificates
    assert load_certificates(pem(INTEL_PKI.root) + bytes(64), "padded") == [INTEL_PKI.root]


def test_empty_chain_is_refused() -> None:
    assert refusal([], INTEL, intel_pck_shape, INTEL_PKI.root) == ("chain", "no certificates to verify")


def test_chain_memo_is_not_taken_from_a_recycled_id() -> None:
    """Verified chains are memoised by the ids of the certificates given; an entry left under those ids by other
    objects (ids are recycled after garbage collection) must not be used. Simulated by planting one."""
    from exporter.attest import trust
    other = forge.intel_pki("other")
    _, pck = INTEL_PKI.pck()
    _, other_pck = other.pck()
    chains = ChainVerifier(forge.trust_with(INTEL_PKI.root))
    chains._cache[(INTEL, intel_pck_shape, id(pck), id(INTEL_PKI.ca))] = trust._Chain(
        (other_pck, other.ca), (other_pck, other.ca, other.root), utc(2024, 1, 1), utc(2034, 1, 1))
    assert chains.verify([pck, INTEL_PKI.ca], AT, INTEL, intel_pck_shape) == (pck, INTEL_PKI.ca, INTEL_PKI.root)


@pytest.mark.parametrize("edge", ["not_before", "not_after"])
def test_validity_includes_both_ends_and_names_the_certificate_out_of_it(edge: str) -> None:
    """The PCK is valid exactly at its edge; the expired CA is the one named."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(intel_name("Intel SGX PCK Platform CA"), INTEL_PKI.root.subject, ca_key.public_key(),
               INTEL_PKI.root_key, ca=True, path_len=0, usage=forge.CA_USAGE, not_after=utc(2025, 1, 1))
    key = ec.generate_private_key(ec.SECP256R1())
    window = {"not_before": AT} if edge == "not_before" else {"not_after": AT}
    pck = issue(intel_name("Intel SGX PCK Certificate"), ca.subject, key.public_key(), ca_key, ca=False,
                usage=forge.LEAF_USAGE, **window)
    reason, message = refusal([pck, ca], INTEL, intel_pck_shape, INTEL_PKI.root)
    assert reason == "expired" and message.startswith("certificate 'Intel SGX PCK Platform CA' is not valid at")


def test_anchor_whose_self_signature_fails_anchors_nothing() -> None:
    """A store built with an anchor that is self-issued but not self-signed (TrustStore.default refuses such a
    file; a store built in code is checked again when it anchors a chain)."""
    key = ec.generate_private_key(ec.SECP256R1())
    fake_root = issue(intel_name("Intel SGX Root CA"), intel_name("Intel SGX Root CA"), key.public_key(),
                      ec.generate_private_key(ec.SECP256R1()), ca=True, path_len=1, usage=forge.CA_USAGE)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(intel_name("Intel SGX PCK Platform CA"), fake_root.subject, ca_key.public_key(), key, ca=True,
               path_len=0, usage=forge.CA_USAGE)
    _, pck = INTEL_PKI.pck(signer=ca_key, issuer=ca.subject)
    chains = ChainVerifier(TrustStore((fake_root,), ()))
    with pytest.raises(EvidenceError) as err:
        chains.verify([pck, ca], AT, INTEL, intel_pck_shape)
    assert (err.value.reason, str(err.value)) == ("chain", "trust root 'Intel SGX Root CA' self-signature invalid")


def test_malformed_trust_root_file_is_named_with_the_parsers_reason(tmp_path) -> None:
    path = tmp_path / "root.pem"
    path.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(EvidenceError) as err:
        TrustStore.default([path])
    prefix = f"{path}: not a valid certificate: "
    assert str(err.value).startswith(prefix) and str(err.value) != prefix + "None"
