"""Vendor trust anchors shipped as package data (PEM).

- ``amd-<product>.pem``: ASK (or ASVK for ``-vlek``) followed by ARK, as AMD KDS serves ``cert_chain``.
- ``intel-sgx-root-ca.pem``: the Intel SGX Root CA.

Only the self-signed roots (ARKs, Intel root) are trust anchors; ASK/ASVK are intermediates, verified against
their ARK like any other certificate. Fingerprints are pinned in ``exporter.attest.trust`` and the tests.
"""
