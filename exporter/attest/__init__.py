"""Attestation evidence: parsing (snp, tdx), verification to vendor roots, and policy."""
