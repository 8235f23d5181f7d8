"""The operator's policy file: attestation rules and runtime rules for confidential domains.

The accepted JSON shape is the one operators already write (see docs/attestation.md)::

    {"version": "1.0",
     "attestation_policy": {"tee_type": "tdx",
       "min_tcb_level": {"sgx_tcb": "0xFFFFFFFFFFFFFFFF", "tdx_tcb": "0x03000000"},
       "allowed_measurements": ["sha384:<96 hex>"], "enforce_debug_disabled": true, "require_secure_boot": true},
     "runtime_policy": {"max_memory": "16GB", "max_cpus": 8, "allowed_devices": ["virtio-net", "virtio-blk"],
       "network_policy": {"allow_egress": ["10.0.0.0/8"], "deny_egress": ["0.0.0.0/0"]}}}

Unknown or ill-typed fields raise ``PolicyError`` naming the field (dotted path), so a typo is a start-up error
rather than a silently ignored rule. Loading is separate from parsing (``parse_policy`` takes the decoded JSON) so
the rules can be fuzzed and tested without files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.attest.regular import read_regular
from exporter.attest.result import Verified
from exporter.egress.rules import EgressRules, parse_cidrs

SUPPORTED_VERSIONS = ("1.0",)

# Operators write "sev-snp" (libvirt's name) or "snp"; both mean the same evidence format.
TEE_TYPES = {"tdx": "tdx", "sev-snp": "sev-snp", "snp": "sev-snp"}

# SNP TCB components by name, as the VCEK extensions and the SNP ABI name them.
SNP_TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")
TDX_TCB_KEYS = ("tdx_tcb", "sgx_tcb")

RUNTIME_RULES = ("max_memory", "max_cpus", "allowed_devices")

_MEASUREMENT_RE = re.compile(r"^sha384:[0-9a-f]{96}$")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGTP]?)(i?B?)?\s*$", re.IGNORECASE)
_HEX_RE = re.compile(r"^0x[0-9a-fA-F]{2,32}$")

# Attestation-policy fields about the evidence itself: TDX TCB status and collateral, SEV-SNP VMPL and MIGRATE_MA.
EVIDENCE_RULE_FIELDS = ("allowed_tcb_status", "required_vmpl", "allow_migrate_ma", "allow_missing_collateral")
TCB_STATUSES = ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
                "OutOfDate", "OutOfDateConfigurationNeeded")
OPTIONAL_COLLATERAL = ("pck_crl", "root_ca_crl", "qe_identity")


class PolicyError(Exception):
    """The policy file cannot be used; the message names the offending field."""


@dataclass(frozen=True)
class AttestationPolicy:
    """Rules applied to verified evidence. ``None``/``False`` means the rule is not configured."""

    tee_type: str | None = None  # "sev-snp" or "tdx": evidence of another type is a violation
    # SNP: component name -> minimum SVN. TDX: "tdx_tcb" -> minimum TEE_TCB_SVN bytes (component-wise).
    min_tcb_level: Mapping[str, int | bytes] | None = None
    allowed_measurements: tuple[str, ...] | None = None  # normalized "sha384:<lowercase hex>"
    enforce_debug_disabled: bool = False
    require_secure_boot: bool = False
    allowed_tcb_status: tuple[str, ...] | None = None  # TDX TCB statuses accepted; no status at all fails closed
    required_vmpl: int | None = None  # SEV-SNP: the report must come from exactly this VMPL
    allow_migrate_ma: bool = True  # SEV-SNP: false refuses guests whose policy allows a migration agent
    allow_missing_collateral: tuple[str, ...] = ()  # TDX collateral items that may be absent (pck_crl, ...)


@dataclass(frozen=True)
class RuntimePolicy:
    """Limits on a confidential domain's libvirt definition."""

    max_memory_bytes: int | None = None
    max_cpus: int | None = None
    allowed_devices: tuple[str, ...] | None = None
    network: EgressRules | None = None  # runtime_policy.network_policy, judged by exporter.collectors.egress


@dataclass(frozen=True)
class Policy:
    version: str
    attestation: AttestationPolicy | None
    runtime: RuntimePolicy | None


def load_policy(path: Path) -> Policy:
    """Read and validate the policy file; every problem is a ``PolicyError`` naming the file and field."""
    try:
        text = read_regular(Path(path), 1024 * 1024).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc}") from None
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:
        raise PolicyError(f"{path}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, an int of over 4300 digits; nesting too deep
        raise PolicyError(f"{path}: not valid JSON: {str(exc)[:120]}") from None
    try:
        return parse_policy(doc)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


class _DuplicateKeyError(ValueError):
    """A key given twice in one object. json.loads would keep the last one silently; a reviewer reading the file
    sees the first, so the file would not say what it means."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_policy(doc: Any) -> Policy:
    """Validate decoded JSON into a ``Policy``."""
    _require_mapping("(top level)", doc, {"version", "attestation_policy", "runtime_policy"})
    version = doc.get("version")
    if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
        raise PolicyError(f"version: expected one of {list(SUPPORTED_VERSIONS)} (got {version!r})")
    attestation = doc.get("attestation_policy")
    runtime = doc.get("runtime_policy")
    return Policy(
        version=version,
        attestation=None if attestation is None else _attestation(attestation),
        runtime=None if runtime is None else _runtime(runtime),
    )


def _attestation(doc: Any) -> AttestationPolicy:
    where = "attestation_policy"
    _require_mapping(where, doc, {"tee_type", "min_tcb_level", "allowed_measurements",
                                  "enforce_debug_disabled", "require_secure_boot", *EVIDENCE_RULE_FIELDS})
    tee_type = doc.get("tee_type")
    if tee_type is not None:
        if not isinstance(tee_type, str) or tee_type.lower() not in TEE_TYPES:
            raise PolicyError(f"{where}.tee_type: expected one of {sorted(TEE_TYPES)} (got {tee_type!r})")
        tee_type = TEE_TYPES[tee_type.lower()]
    _refuse_sgx_tcb_for_snp(tee_type, doc.get("min_tcb_level"))
    return AttestationPolicy(
        tee_type=tee_type,
        min_tcb_level=_min_tcb(doc.get("min_tcb_level")),
        allowed_measurements=_measurements(doc.get("allowed_measurements")),
        enforce_debug_disabled=_bool(f"{where}.enforce_debug_disabled", doc.get("enforce_debug_disabled", False)),
        require_secure_boot=_bool(f"{where}.require_secure_boot", doc.get("require_secure_boot", False)),
        allowed_tcb_status=_names(f"{where}.allowed_tcb_status", doc.get("allowed_tcb_status"), TCB_STATUSES),
        required_vmpl=_vmpl(f"{where}.required_vmpl", doc.get("required_vmpl")),
        allow_migrate_ma=_bool(f"{where}.allow_migrate_ma", doc.get("allow_migrate_ma", True)),
        allow_missing_collateral=_names(f"{where}.allow_missing_collateral", doc.get("allow_missing_collateral"),
                                        OPTIONAL_COLLATERAL) or (),
    )


def _names(where: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...] | None:
    """A list of names from ``allowed`` (``None`` when absent); an empty list is kept as written."""
    if value is None:
        return None
    if not isinstance(value, list) or any(item not in allowed for item in value):
        raise PolicyError(f"{where}: expected a list of {', '.join(allowed)} (got {str(value)[:80]})")
    return tuple(value)


def _vmpl(where: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
        raise PolicyError(f"{where}: expected a VMPL between 0 and 3 (got {value!r})")
    return value


def _min_tcb(doc: Any) -> Mapping[str, int | bytes] | None:
    where = "attestation_policy.min_tcb_level"
    if doc is None:
        return None
    _require_mapping(where, doc, set(SNP_TCB_COMPONENTS) | set(TDX_TCB_KEYS))
    out: dict[str, int | bytes] = {}
    for key, value in doc.items():
        if key == "sgx_tcb":
            out[key] = _sgx_tcb(f"{where}.{key}", value)
        elif key == "tdx_tcb":
            # "0x0300..." lists TEE_TCB_SVN bytes in order; each must be met component-wise.
            if not isinstance(value, str) or not _HEX_RE.fullmatch(value) or len(value) % 2:
                raise PolicyError(f"{where}.{key}: expected a hex string of whole bytes like \"0x03000000\"")
            out[key] = bytes.fromhex(value[2:])
        else:
            out[key] = _svn(f"{where}.{key}", value)
    return out


def _svn(where: str, value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]{1,2}|\d{1,3}", value):
        value = int(value, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise PolicyError(f"{where}: expected an SVN between 0 and 255 (got {value!r})")
    return value


def _measurements(doc: Any) -> tuple[str, ...] | None:
    where = "attestation_policy.allowed_measurements"
    if doc is None:
        return None
    if not isinstance(doc, list):
        raise PolicyError(f"{where}: expected a list of \"sha384:<96 hex digits>\"")
    # An empty list allows no measurement at all (fail closed); leave the field out to not check measurements.
    out = []
    for i, item in enumerate(doc):
        if not isinstance(item, str) or not _MEASUREMENT_RE.match(item.lower()):
            raise PolicyError(f"{where}[{i}]: expected \"sha384:<96 hex digits>\" (got {item!r})")
        out.append(item.lower())
    return tuple(out)


def _runtime(doc: Any) -> RuntimePolicy:
    where = "runtime_policy"
    _require_mapping(where, doc, {"max_memory", "max_cpus", "allowed_devices", "network_policy"})
    max_cpus = doc.get("max_cpus")
    if max_cpus is not None and (isinstance(max_cpus, bool) or not isinstance(max_cpus, int) or max_cpus < 1):
        raise PolicyError(f"{where}.max_cpus: expected a positive integer (got {max_cpus!r})")
    devices = doc.get("allowed_devices")
    if devices is not None:
        if not isinstance(devices, list) or not all(isinstance(d, str) and d for d in devices):
            raise PolicyError(f"{where}.allowed_devices: expected a list of device names")
        devices = tuple(devices)
    memory = doc.get("max_memory")
    return RuntimePolicy(
        max_memory_bytes=None if memory is None else parse_size(f"{where}.max_memory", memory),
        max_cpus=max_cpus,
        allowed_devices=devices,
        network=_network_policy(doc.get("network_policy")),
    )


_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_size(where: str, value: Any) -> int:
    """``"16GB"``/``"16GiB"``/``"16G"``/``17179869184`` -> bytes.

    Units are binary (1 GB = 1024**3 bytes) for every spelling: operators size guests in GiB and write "GB",
    and a policy that rejected a 16 GiB guest under "max_memory": "16GB" would be a trap.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) <= 0:
        raise PolicyError(f"{where}: expected a size like \"16GB\" or a number of bytes (got {value!r})")
    return int(match.group(1)) * 1024 ** _UNITS[match.group(2).upper()]


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{where}: expected true or false (got {value!r})")
    return value


def _require_mapping(where: str, doc: Any, allowed: set[str]) -> None:
    if not isinstance(doc, dict):
        raise PolicyError(f"{where}: expected an object")
    for key in doc:
        if key not in allowed:
            prefix = "" if where == "(top level)" else f"{where}."
            raise PolicyError(f"{prefix}{key}: unknown field (allowed: {', '.join(sorted(allowed))})")


def check_runtime(runtime: RuntimePolicy, *, memory_bytes: int, vcpus: int, devices: Iterable[str]) -> list[str]:
    """Rule names (from ``RUNTIME_RULES``) that a domain definition violates, in a stable order."""
    violated = []
    if runtime.max_memory_bytes is not None and memory_bytes > runtime.max_memory_bytes:
        violated.append("max_memory")
    if runtime.max_cpus is not None and vcpus > runtime.max_cpus:
        violated.append("max_cpus")
    if runtime.allowed_devices is not None:
        allowed = set(runtime.allowed_devices)
        if any(device not in allowed for device in devices):
            violated.append("allowed_devices")
    return violated


# Attestation rule name -> the bounded failure reason it reports (metric label and journal event.reason).
ATTESTATION_RULES = {
    "tee_type": "tee_type",
    "min_tcb_level": "tcb",
    "allowed_measurements": "measurement",
    "enforce_debug_disabled": "debug",
    "require_secure_boot": "secure_boot",
    "allowed_tcb_status": "tcb",
    "required_vmpl": "policy",
    "allow_migrate_ma": "policy",
}


@dataclass(frozen=True)
class Violation:
    rule: str  # a key of ATTESTATION_RULES
    message: str

    @property
    def reason(self) -> str:
        return ATTESTATION_RULES[self.rule]


def check_attestation(policy: AttestationPolicy, verified: Verified) -> list[Violation]:
    """Every rule the verified evidence breaks. Unknowable facts fail closed (secure boot, missing TCB parts)."""
    out: list[Violation] = []
    if policy.tee_type is not None and policy.tee_type != verified.tee_type:
        out.append(Violation("tee_type", f"evidence is {verified.tee_type}, policy requires {policy.tee_type}"))
    if policy.min_tcb_level:
        out += _check_tcb(policy.min_tcb_level, verified)
    if policy.allowed_measurements is not None and verified.measurement not in policy.allowed_measurements:
        out.append(Violation("allowed_measurements", f"measurement {verified.measurement} is not allowed"))
    if policy.enforce_debug_disabled and verified.debug:
        out.append(Violation("enforce_debug_disabled", "the guest allows debugging"))
    if policy.require_secure_boot and verified.secure_boot is not True:
        out.append(Violation("require_secure_boot", "the evidence cannot show that secure boot was enabled "
                                                    "(no event log); failing closed"))
    out += _check_evidence_rules(policy, verified)
    return out


def _check_evidence_rules(policy: AttestationPolicy, verified: Verified) -> list[Violation]:
    out: list[Violation] = []
    if policy.allowed_tcb_status is not None and verified.tcb_status not in policy.allowed_tcb_status:
        shown = verified.tcb_status or "not evaluated (no collateral, or not TDX)"
        out.append(Violation("allowed_tcb_status", f"TCB status {shown} is not one of "
                                                   f"{', '.join(policy.allowed_tcb_status) or '(none)'}"))
    snp = verified.tee_type == "sev-snp"
    if policy.required_vmpl is not None and (not snp or verified.details.get("vmpl") != str(policy.required_vmpl)):
        out.append(Violation("required_vmpl", f"report VMPL {verified.details.get('vmpl', 'unknown')} is not the "
                                              f"required {policy.required_vmpl}"))
    if not policy.allow_migrate_ma and (not snp or verified.details.get("migrate_ma") != "false"):
        out.append(Violation("allow_migrate_ma", "the guest policy allows a migration agent (MIGRATE_MA), or the "
                                                 "evidence cannot show it does not"))
    return out


def _check_tcb(minimum: Mapping[str, int | bytes], verified: Verified) -> list[Violation]:
    below = []
    for key, wanted in minimum.items():
        if key == "sgx_tcb":
            below += _sgx_tcb_below(wanted, verified)  # type: ignore[arg-type]
        elif isinstance(wanted, bytes):  # tdx_tcb: TEE_TCB_SVN bytes, component-wise
            have = bytes.fromhex(verified.details.get("tee_tcb_svn", "")) if verified.tee_type == "tdx" else b""
            if len(have) < len(wanted) or any(h < w for h, w in zip(have, wanted, strict=False)):
                below.append(f"{key} 0x{have[:len(wanted)].hex()} < 0x{wanted.hex()}")
        elif verified.tcb.get(key) is None or verified.tcb[key] < wanted:
            below.append(f"{key} {verified.tcb.get(key)} < {wanted}")
    if below:
        return [Violation("min_tcb_level", "TCB below the policy minimum: " + ", ".join(below))]
    return []


# --- min_tcb_level.sgx_tcb -------------------------------------------------------------------------------------
# A TDX quote is signed by the Quoting Enclave, an SGX enclave; the platform's SGX TCB is in the PCK certificate's
# SGX extension (Intel "SGX PCK Certificate and CRL Profile", the TCB sequence, OID 1.2.840.113741.1.13.1.2,
# components 1..16 "SGX TCB Comp01..16 SVN" and 17 "PCESVN"). sgx_tcb lists minimums in that order: one byte per
# component 01..16, then optionally PCESVN as two bytes big-endian (bytes 17-18). Components the value does not
# reach are not constrained. The verified values come from Verified.details["sgx_tcb_svn"] and tcb["pcesvn"].
SGX_TCB_COMPONENTS = 16
_SGX_HEX_RE = re.compile(r"^0x(?:[0-9a-fA-F]{2}){1,18}$")


def _sgx_tcb(where: str, value: Any) -> bytes:
    if not isinstance(value, str) or not _SGX_HEX_RE.fullmatch(value) or len(value) - 2 == 34:
        raise PolicyError(f"{where}: expected 1 to 16 bytes of hex (SGX TCB comp 01..16 SVNs), optionally followed "
                          f"by 2 bytes of PCESVN, like \"0x0303020203\" (got {value!r})")
    return bytes.fromhex(value[2:])


def _refuse_sgx_tcb_for_snp(tee_type: str | None, min_tcb: Any) -> None:
    if tee_type == "sev-snp" and isinstance(min_tcb, dict) and "sgx_tcb" in min_tcb:
        raise PolicyError("attestation_policy.min_tcb_level.sgx_tcb: not valid with tee_type sev-snp (an SGX TCB "
                          "exists only on Intel TDX platforms; use bootloader, tee, snp, microcode, fmc)")


def _sgx_tcb_below(wanted: bytes, verified: Verified) -> list[str]:
    """What falls short of the ``sgx_tcb`` minimum, or [] if it is met. Evidence without an SGX TCB (SEV-SNP, or a
    quote whose PCK certificate could not be read) fails closed."""
    comps = bytes.fromhex(verified.details.get("sgx_tcb_svn", "")) if verified.tee_type == "tdx" else b""
    if len(comps) != SGX_TCB_COMPONENTS:
        return [f"sgx_tcb cannot be checked: {verified.tee_type} evidence carries no SGX TCB"]
    short = [f"comp{i + 1:02d} {have} < {want}"
             for i, (have, want) in enumerate(zip(comps, wanted[:SGX_TCB_COMPONENTS], strict=False)) if have < want]
    pcesvn = verified.tcb.get("pcesvn", -1)
    if len(wanted) > SGX_TCB_COMPONENTS and pcesvn < int.from_bytes(wanted[SGX_TCB_COMPONENTS:], "big"):
        short.append(f"pcesvn {pcesvn} < {int.from_bytes(wanted[SGX_TCB_COMPONENTS:], 'big')}")
    if not short:
        return []
    message = "sgx_tcb " + ", ".join(short)
    if 0xFF in wanted[:SGX_TCB_COMPONENTS]:
        message += (" (a component minimum of 0xFF = 255 is met by no Intel platform: the all-FF sgx_tcb of the "
                    "example policy rejects every quote; set it from your PCK certificate, see docs/attestation.md)")
    return [message]


# --- runtime_policy.network_policy -----------------------------------------------------------------------------
def _network_policy(doc: Any) -> EgressRules | None:
    where = "runtime_policy.network_policy"
    if doc is None:
        return None
    _require_mapping(where, doc, {"allow_egress", "deny_egress"})
    lists = {}
    for key in ("allow_egress", "deny_egress"):
        items = doc.get(key, [])
        if not isinstance(items, list):
            raise PolicyError(f"{where}.{key}: expected a list of CIDR networks like [\"10.0.0.0/8\"]")
        try:
            lists[key] = parse_cidrs(items)
        except ValueError as exc:
            raise PolicyError(f"{where}.{key}{exc}") from None
    return EgressRules(allow=lists["allow_egress"], deny=lists["deny_egress"])
