"""What a successful verification establishes, in one shape for both TEE types.

The policy check, the CLI's output and the collector's metrics and journal events all read this, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Verified:
    tee_type: str  # "sev-snp" | "tdx"
    evidence_format: str  # "snp-report" | "tdx-quote"
    version: int
    sha256: str  # of the evidence bytes
    measurement: str  # "sha384:<hex>": SNP launch measurement, TDX MRTD
    debug: bool  # SNP policy bit 19 / TD_ATTRIBUTES.DEBUG
    tcb: dict[str, int] = field(default_factory=dict)  # component -> SVN, bounded names
    tcb_status: str | None = None  # TDX with collateral: UpToDate, OutOfDate, ...
    product: str | None = None  # Milan/Genoa/Turin, or the TDX FMSPC
    signer: str = ""  # "vcek" | "vlek" | "pck"
    warnings: tuple[str, ...] = ()
    details: dict[str, str] = field(default_factory=dict)  # extra hex fields for humans (report_data, rtmrs)
    secure_boot: bool | None = None  # raw evidence never shows it: None means "cannot tell"
