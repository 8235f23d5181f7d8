"""Following other programs' logs (rotation, persisted offsets) and parsing them: Trustee attestation-service and
key-broker lines. Verification and policy stay in ``exporter.attest``.
"""
