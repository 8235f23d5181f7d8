"""Trust anchors: the shipped vendor roots are pinned; extra roots are added without weakening them."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from exporter.attest.errors import EvidenceError
from exporter.attest.trust import (
    ROOT_FINGERPRINT_PREFIXES,
    ChainVerifier,
    TrustStore,
    common_name,
    fingerprint,
)

from .vectors import utc


def _cert(subject: str, issuer: str, key, signer, ca: bool) -> x509.Certificate:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256()))


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory):
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _cert("Test Private Root", "Test Private Root", root_key, root_key, True)
    leaf = _cert("Test Leaf", "Test Private Root", leaf_key, root_key, False)
    path = tmp_path_factory.mktemp("ca") / "root.pem"
    path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return path, root, leaf


def test_shipped_roots_are_the_pinned_vendor_roots() -> None:
    found = {common_name(a.subject): fingerprint(a)[:16] for a in TrustStore.default().anchors}
    assert found == ROOT_FINGERPRINT_PREFIXES


def test_private_root_is_added_not_substituted(private_ca) -> None:
    path, root, leaf = private_ca
    default = TrustStore.default()
    with pytest.raises(EvidenceError) as err:
        ChainVerifier(default).verify([leaf, root], utc(2026, 1, 1))
    assert err.value.reason == "chain"
    extended = TrustStore.default([path])
    assert ChainVerifier(extended).verify([leaf], utc(2026, 1, 1))[-1] == root
    assert set(default.anchors) < set(extended.anchors)


def test_chain_cache_still_checks_validity_time(private_ca) -> None:
    path, _root, leaf = private_ca
    chains = ChainVerifier(TrustStore.default([path]))
    chains.verify([leaf], utc(2026, 1, 1))
    with pytest.raises(EvidenceError) as err:
        chains.verify([leaf], utc(2040, 1, 1))
    assert err.value.reason == "expired"
