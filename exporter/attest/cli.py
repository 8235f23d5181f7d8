"""``tee-exporter attest``: a one-shot check of attestation evidence for operators and auditors.

Exit status: 0 every piece of evidence verified and is within the policy; 1 at least one was rejected (each reason
is listed); 2 the check could not run (unreadable or non-regular evidence file, bad policy, bad collateral, bad
trust root, bad ``--at``). In a batch, a file that cannot be read is reported as such and the other files still
get their verdicts.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from exporter.attest.collateral import CollateralSet, load_dir
from exporter.attest.errors import EvidenceError
from exporter.attest.evidence import Attester, Outcome, certs_beside, read_evidence
from exporter.attest.policy import PolicyError, load_policy
from exporter.attest.trust import TrustStore

EXIT_OK, EXIT_REJECTED, EXIT_ERROR = 0, 1, 2


def parse_at(value: str | None) -> dt.datetime:
    """ISO 8601 (``2025-07-01``, ``2025-07-01T12:00:00Z``); a time without zone is UTC."""
    if value is None:
        return dt.datetime.now(dt.UTC)
    try:
        when = dt.datetime.fromisoformat(value)
        return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise click.BadParameter(f"{value[:60]!r} is not an ISO 8601 date/time in range",
                                 param_hint="--at") from None


def outcome_doc(path: Path, outcome: Outcome) -> dict[str, Any]:
    doc: dict[str, Any] = {"evidence": str(path), "tee_type": outcome.tee_type, "ok": outcome.ok,
                           "reasons": outcome.reasons, "policy": outcome.policy_result}
    if outcome.error is not None:
        doc["error"] = {"reason": outcome.error.reason, "message": str(outcome.error)}
    doc["violations"] = [{"rule": v.rule, "reason": v.reason, "message": v.message} for v in outcome.violations]
    v = outcome.verified
    if v is not None:
        doc.update(sha256=v.sha256, version=v.version, measurement=v.measurement, debug=v.debug, tcb=v.tcb,
                   tcb_status=v.tcb_status, product=v.product, signer=v.signer, warnings=list(v.warnings),
                   details=v.details)
    return doc


def unreadable_doc(path: Path, exc: OSError) -> dict[str, Any]:
    return {"evidence": str(path), "tee_type": "unknown", "ok": False, "reasons": ["unreadable"],
            "policy": "not_evaluated", "error": {"reason": "unreadable", "message": _describe(exc)},
            "violations": []}


def _line(doc: dict[str, Any]) -> str:
    if doc["ok"]:
        extra = f" tcb_status={doc['tcb_status']}" if doc.get("tcb_status") else ""
        return (f"OK     {doc['evidence']}: {doc['tee_type']} v{doc['version']} {doc['measurement']} "
                f"debug={str(doc['debug']).lower()}{extra}")
    lines = [f"REJECT {doc['evidence']}: {', '.join(doc['reasons'])}"]
    if "error" in doc:
        lines.append(f"  - {doc['error']['reason']}: {doc['error']['message']}")
    lines += [f"  - {v['rule']}: {v['message']}" for v in doc["violations"]]
    return "\n".join(lines)


@click.command()
@click.argument("evidence", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--certs", "certs_dir", type=click.Path(path_type=Path, file_okay=False),
              help="SEV-SNP certificates in snpguest's layout (vcek.pem/der or vlek, ask/asvk, ark). Default: "
                   "<evidence>.certs/ or the evidence's folder. TDX quotes carry their PCK chain.")
@click.option("--collateral", "collateral_dir", type=click.Path(path_type=Path, file_okay=False),
              help="TDX collateral folder (PCS TCB info, QE identity, CRLs, TCB signing chain); never fetched.")
@click.option("--trust-root", "trust_roots", multiple=True, type=click.Path(path_type=Path),
              help="Extra trust root PEM, added to the shipped ones: an AMD ARK (ARK-<product>, with its ASK/ASVK "
                   "if wanted) or an Intel SGX Root CA, e.g. a private test hierarchy. Filed under its vendor.")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path),
              help="Policy JSON (attestation_policy is applied; see docs/attestation.md).")
@click.option("--at", "at", metavar="TIME",
              help="Verify as of this ISO 8601 time (stored evidence outlives its certificates). Default: now.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with every result.")
def attest(evidence: tuple[Path, ...], certs_dir: Path | None, collateral_dir: Path | None,
           trust_roots: tuple[Path, ...], policy_file: Path | None, at: str | None, as_json: bool) -> None:
    """Verify SEV-SNP reports and TDX quotes against the vendor roots and a policy.

    Exit 0 when every EVIDENCE file verified and is within the policy, 1 when any was rejected, 2 when the
    check could not run.
    """
    try:
        when = parse_at(at)
        attester = _attester(trust_roots, policy_file, collateral_dir)
    except click.BadParameter as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(EXIT_ERROR)
    except (OSError, PolicyError, EvidenceError) as exc:
        click.echo(f"error: {_describe(exc)}", err=True)
        sys.exit(EXIT_ERROR)
    docs = [_check_one(attester, path, certs_dir, when) for path in evidence]
    if as_json:
        click.echo(json.dumps({"at": when.isoformat(), "results": docs}, indent=2))
    else:
        for doc in docs:
            click.echo(_line(doc))
    if any(d["reasons"] == ["unreadable"] for d in docs):
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_OK if all(d["ok"] for d in docs) else EXIT_REJECTED)


def _check_one(attester: Attester, path: Path, certs_dir: Path | None, when: dt.datetime) -> dict[str, Any]:
    try:
        data = read_evidence(path)
    except OSError as exc:
        click.echo(f"error: {_describe(exc)}", err=True)
        return unreadable_doc(path, exc)
    return outcome_doc(path, attester.check(data, at=when, certs_dir=certs_dir or certs_beside(path)))


def _attester(trust_roots: tuple[Path, ...], policy_file: Path | None, collateral_dir: Path | None) -> Attester:
    policy = load_policy(policy_file).attestation if policy_file else None
    collateral: CollateralSet | None = load_dir(collateral_dir) if collateral_dir else None
    return Attester(TrustStore.default(trust_roots), policy, collateral)


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)
