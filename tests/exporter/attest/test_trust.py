"""Trust anchors per vendor, pinned shipped roots, and the exact chain shapes (built with the forged-PKI kit)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from exporter.attest.errors import EvidenceError
from exporter.attest.trust import (
    AMD,
    INTEL,
    ROOT_FINGERPRINT_PREFIXES,
    ChainVerifier,
    TrustStore,
    amd_shape,
    common_name,
    fingerprint,
    intel_pck_shape,
    intel_tcb_signing_shape,
)

from . import forge
from .forge import AT, amd_name, intel_name, issue, pem, utc


def test_shipped_roots_are_the_pinned_vendor_roots() -> None:
    found = {common_name(a.subject): fingerprint(a)[:16] for a in TrustStore.default().anchors}
    assert found == ROOT_FINGERPRINT_PREFIXES


def test_private_root_is_added_not_substituted(tmp_path) -> None:
    pki = forge.intel_pki()
    _, pck = pki.pck()
    default = TrustStore.default()
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(default).verify([pck, pki.ca, pki.root], AT, INTEL, intel_pck_shape)
    assert err.value.reason == "chain"
    path = tmp_path / "root.pem"
    path.write_bytes(pem(pki.root))
    extended = TrustStore.default([path])
    assert ChainVerifier(extended).verify([pck, pki.ca], AT, INTEL, intel_pck_shape)[-1] == pki.root
    assert set(default.anchors) < set(extended.anchors)


def test_extra_root_that_is_no_vendor_root_is_refused(tmp_path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = intel_name("Test Private Root")
    path = tmp_path / "root.pem"
    path.write_bytes(pem(issue(name, name, key.public_key(), key, ca=True, usage=forge.CA_USAGE)))
    with pytest.raises(EvidenceError) as err:
        TrustStore.default([path])
    assert err.value.reason == "certificate" and "neither an AMD ARK" in str(err.value)


def test_extra_root_that_is_not_a_ca_is_refused(tmp_path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = intel_name("Intel SGX Root CA")
    path = tmp_path / "root.pem"
    path.write_bytes(pem(issue(name, name, key.public_key(), key, ca=False)))
    with pytest.raises(EvidenceError) as err:
        TrustStore.default([path])
    assert "not a CA" in str(err.value)


def test_chain_cache_still_checks_validity_time() -> None:
    pki = forge.intel_pki()
    _, pck = pki.pck()
    chains = ChainVerifier(forge.trust_with(pki.root))
    chains.verify([pck, pki.ca], AT, INTEL, intel_pck_shape)
    with pytest.raises(EvidenceError) as err:
        chains.verify([pck, pki.ca], utc(2040, 1, 1), INTEL, intel_pck_shape)
    assert err.value.reason == "expired"


def test_amd_root_never_anchors_an_intel_chain() -> None:
    """A PCK Platform CA issued by a (trusted) AMD ARK: every signature verifies, the vendor is wrong."""
    amd, intel = forge.amd_pki(), forge.intel_pki()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(intel_name("Intel SGX PCK Platform CA"), amd.ark.subject, ca_key.public_key(), amd.ark_key, ca=True,
               path_len=0, usage=forge.CA_USAGE)
    _, pck = intel.pck(signer=ca_key, issuer=ca.subject)
    trust = forge.trust_with(amd.ark, intel.root)
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(trust).verify([pck, ca], AT, INTEL, intel_pck_shape)
    assert err.value.reason == "chain" and "not a trusted INTEL root" in str(err.value)


def test_intel_root_never_anchors_an_amd_chain() -> None:
    amd, intel = forge.amd_pki(), forge.intel_pki()
    ask_key = forge._rsa("ask-under-intel")
    ask = issue(amd_name("SEV-Milan"), intel.root.subject, ask_key.public_key(), intel.root_key, ca=True,
                path_len=0, usage=forge.CA_USAGE)
    _, vcek = amd.vcek(signer=ask_key, issuer=ask.subject)
    trust = forge.trust_with(amd.ark, intel.root)
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(trust).verify([vcek, ask], AT, AMD, amd_shape)
    assert err.value.reason == "chain" and "not a trusted AMD root" in str(err.value)


def test_intermediate_without_ca_flag_cannot_issue() -> None:
    """A Platform CA lacking basicConstraints cA: names and signatures are right, the role is not."""
    intel = forge.intel_pki()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(intel_name("Intel SGX PCK Platform CA"), intel.root.subject, ca_key.public_key(), intel.root_key,
               ca=False, usage=forge.CA_USAGE)
    _, pck = intel.pck(signer=ca_key, issuer=ca.subject)
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(forge.trust_with(intel.root)).verify([pck, ca], AT, INTEL, intel_pck_shape)
    assert err.value.reason == "chain" and "not a CA" in str(err.value)


def test_intermediate_whose_key_usage_forbids_cert_signing_cannot_issue() -> None:
    intel = forge.intel_pki()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(intel_name("Intel SGX PCK Platform CA"), intel.root.subject, ca_key.public_key(), intel.root_key,
               ca=True, path_len=0, usage=forge.LEAF_USAGE)
    _, pck = intel.pck(signer=ca_key, issuer=ca.subject)
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(forge.trust_with(intel.root)).verify([pck, ca], AT, INTEL, intel_pck_shape)
    assert err.value.reason == "chain" and "keyUsage does not allow" in str(err.value)


def test_root_path_length_is_enforced() -> None:
    """A root with pathLen 0 cannot have a CA under it."""
    key, ca_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = intel_name("Intel SGX Root CA")
    root = issue(name, name, key.public_key(), key, ca=True, path_len=0, usage=forge.CA_USAGE)
    ca = issue(intel_name("Intel SGX PCK Platform CA"), name, ca_key.public_key(), key, ca=True, path_len=0,
               usage=forge.CA_USAGE)
    _, pck = forge.intel_pki().pck(signer=ca_key, issuer=ca.subject)
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(forge.trust_with(root)).verify([pck, ca], AT, INTEL, intel_pck_shape)
    assert err.value.reason == "chain" and "pathLenConstraint" in str(err.value)


def test_leaf_that_is_a_ca_is_refused() -> None:
    intel = forge.intel_pki()
    _, pck = intel.pck(ca=True)
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(forge.trust_with(intel.root)).verify([pck, intel.ca], AT, INTEL, intel_pck_shape)
    assert err.value.reason == "chain" and "is a CA certificate" in str(err.value)


def test_pck_with_an_unexpected_name_is_refused() -> None:
    intel = forge.intel_pki()
    _, pck = intel.pck(cn="Intel SGX TCB Signing")
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(forge.trust_with(intel.root)).verify([pck, intel.ca], AT, INTEL, intel_pck_shape)
    assert err.value.reason == "chain" and "unexpected certificate" in str(err.value)


def test_tcb_signing_shape_is_signer_directly_under_root() -> None:
    intel = forge.intel_pki()
    chains = ChainVerifier(forge.trust_with(intel.root))
    assert chains.verify([intel.signing], AT, INTEL, intel_tcb_signing_shape)[-1] == intel.root
    with pytest.raises(EvidenceError) as err:  # the PCK CA is a fine CA, but not the TCB signer
        chains.verify([intel.ca], AT, INTEL, intel_tcb_signing_shape)
    assert err.value.reason == "chain"
