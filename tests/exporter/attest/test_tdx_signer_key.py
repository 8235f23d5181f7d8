"""The TDX collateral signer's key is read only after its chain is checked: an unusable key there is ``collateral``.

The TCB Signing certificate here is one cryptography's builder cannot issue: its public point is off the P-256
curve, and it is nevertheless validly signed by the test Intel root (``forge.off_curve_reissue`` edits the
TBSCertificate and signs it again). So the signer chain check passes and only the key check can refuse it.
Found by mutation testing (docs/testing.md) of exporter/attest/verify_tdx.py ``TdxVerifier._check_signed``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.attest.errors import EvidenceError
from exporter.attest.trust import issued_by
from exporter.attest.verify_tdx import TdxVerifier

from . import forge

PKI = forge.intel_pki()
WORLD = forge.tdx_world()


def test_off_curve_signer_is_validly_signed_by_the_root() -> None:
    """The forged input itself: signed by the root (the chain check passes), its key unusable."""
    signer = forge.off_curve_reissue(PKI.signing, PKI.root_key)
    assert issued_by(signer, PKI.root) and signer.subject == PKI.signing.subject
    with pytest.raises(ValueError):
        signer.public_key()


def test_tcb_signing_certificate_with_an_off_curve_key_is_collateral(tmp_path: Path) -> None:
    signer = forge.off_curve_reissue(PKI.signing, PKI.root_key)
    world = WORLD.replace(signing_pem=forge.pem(signer, PKI.root))
    verifier = TdxVerifier(forge.trust_with(PKI.root))
    with pytest.raises(EvidenceError) as err:
        verifier.verify(world.quote(), forge.AT, world.collateral(tmp_path))
    prefix = "tcb_info signer: unusable public key: "
    assert (err.value.reason, str(err.value)[:len(prefix)]) == ("collateral", prefix)
    assert len(str(err.value)) > len(prefix)  # the library's reason follows
