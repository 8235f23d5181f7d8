"""tee-audit: hash-chained, signed audit trail for confidential-computing hosts."""

__version__ = "0.1.0"
