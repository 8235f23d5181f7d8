"""The one error type of the attestation boundary: why evidence was not accepted.

``reason`` is a short machine word from ``REASONS`` (it becomes a bounded metric label and the journal's
``event.reason``); the message is the human text an operator can act on.
"""

from __future__ import annotations

# Parse problems: the bytes are not well-formed evidence.
PARSE_REASONS = ("truncated", "malformed", "unsupported")
# Verification problems: well-formed evidence that is not trustworthy or not acceptable.
VERIFY_REASONS = ("signature", "chain", "certificate", "revoked", "expired", "collateral", "tcb")
POLICY_REASONS = ("tee_type", "measurement", "debug", "secure_boot", "policy")
REASONS = PARSE_REASONS + VERIFY_REASONS + POLICY_REASONS


class EvidenceError(Exception):
    """Evidence was rejected; ``reason`` is bounded (``REASONS``), ``str(exc)`` explains."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown evidence error reason {reason!r}")
        super().__init__(message)
        self.reason = reason

    @property
    def metric_reason(self) -> str:
        """The coarser reason used as a metric label: every parse problem is ``parse``."""
        return "parse" if self.reason in PARSE_REASONS else self.reason
