"""The seed's policy, exactly as operators copy it (issue 14): it loads, and every field of it decides a verdict.

Measurements are the MRTDs of real quotes (data/SOURCES.md); the SGX TCB values are those of their PCK
certificates: quote-v4-3's PCK says SGX TCB comp01..16 = 03 03 02 02 04 01 00 05 00.., PCESVN 11.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest
from click.testing import CliRunner

from exporter.attest.evidence import Attester
from exporter.attest.policy import PolicyError, check_runtime, load_policy, parse_policy
from exporter.attest.tdx import parse_quote
from exporter.attest.trust import TrustStore
from exporter.attest.verify_tdx import _verified, pck_facts
from exporter.cli import main

from .vectors import SNP, SNP_AT, SNP_VECTORS, TDX, TDX_AT, snp_certs

MRTD_V4_3 = "sha384:91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
MRTD_V5_4 = "sha384:273828c46252fcbdd8ad2dd907130222b03466d52a2911d70c1a5950895d6bd1ae451d382d5a9b1b4c0ed0e5ae9a3dbd"

SEED: dict[str, Any] = {
    "version": "1.0",
    "attestation_policy": {"tee_type": "tdx",
                           "min_tcb_level": {"sgx_tcb": "0xFFFFFFFFFFFFFFFF", "tdx_tcb": "0x03000000"},
                           "allowed_measurements": [MRTD_V4_3, MRTD_V5_4],
                           "enforce_debug_disabled": True, "require_secure_boot": True},
    "runtime_policy": {"max_memory": "16GB", "max_cpus": 8, "allowed_devices": ["virtio-net", "virtio-blk"],
                       "network_policy": {"allow_egress": ["10.0.0.0/8"], "deny_egress": ["0.0.0.0/0"]}},
}
# The seed with the two rules that no real quote can meet relaxed, so each test can flip exactly one field.
# (require_secure_boot fails closed for every raw quote: no event log, see docs/attestation.md.)
USABLE = copy.deepcopy(SEED)
USABLE["attestation_policy"].update(min_tcb_level={"sgx_tcb": "0x0303020204010005", "tdx_tcb": "0x03000000"},
                                    require_secure_boot=False)
V4_3 = (TDX / "quote-v4-3.dat").read_bytes()


def _reasons(doc: dict[str, Any], evidence: bytes = V4_3, **kwargs: Any) -> list[str]:
    policy = parse_policy(doc).attestation
    return Attester(TrustStore.default(), policy).check(evidence, at=TDX_AT, **kwargs).reasons


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(USABLE)
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node[leaf] = value
    return doc


def test_seed_policy_loads_from_file_as_written(tmp_path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(SEED, indent=2))
    policy = load_policy(path)
    assert policy.attestation is not None and policy.runtime is not None
    assert policy.attestation.min_tcb_level == {"sgx_tcb": b"\xff" * 8, "tdx_tcb": bytes([3, 0, 0, 0])}
    assert policy.attestation.allowed_measurements == (MRTD_V4_3, MRTD_V5_4)
    network = policy.runtime.network
    assert network is not None and [str(n) for n in network.allow] == ["10.0.0.0/8"]
    assert [str(n) for n in network.deny] == ["0.0.0.0/0"]


def test_attest_cli_accepts_the_seed_policy_and_says_why_the_quote_fails(tmp_path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(SEED))
    result = CliRunner().invoke(main, ["attest", str(TDX / "quote-v4-3.dat"), "--policy", str(path),
                                       "--at", "2026-06-01", "--json"])
    assert result.exit_code == 1, result.stderr  # rejected (exit 1), not refused (exit 2: policy unusable)
    [doc] = json.loads(result.stdout)["results"]
    assert doc["reasons"] == ["tcb", "secure_boot"]


def test_usable_variant_of_the_seed_accepts_the_real_quote() -> None:
    assert _reasons(USABLE) == []


def test_seed_all_ff_sgx_tcb_rejects_every_quote_and_says_so() -> None:
    doc = _with("attestation_policy.min_tcb_level", {"sgx_tcb": "0xFFFFFFFFFFFFFFFF"})
    doc["attestation_policy"]["allowed_measurements"] = None
    policy = parse_policy(doc)
    for name in ("quote-v4-3.dat", "quote-v5-4.dat", "quote-v4-6.dat"):
        outcome = Attester(TrustStore.default(), policy.attestation).check((TDX / name).read_bytes(), at=TDX_AT)
        assert outcome.reasons == ["tcb"], name
    message = outcome.violations[0].message
    assert "comp01 2 < 255" in message and "met by no Intel platform" in message


@pytest.mark.parametrize(("path", "value", "reasons"), [
    ("attestation_policy.min_tcb_level", {"sgx_tcb": "0x0303020204010006"}, ["tcb"]),  # comp08 5 < 6
    ("attestation_policy.min_tcb_level", {"tdx_tcb": "0x07"}, ["tcb"]),  # TEE_TCB_SVN[0] 6 < 7
    ("attestation_policy.allowed_measurements", [MRTD_V5_4], ["measurement"]),
    ("attestation_policy.require_secure_boot", True, ["secure_boot"]),
])
def test_each_attestation_field_changes_the_verdict(path: str, value: Any, reasons: list[str]) -> None:
    assert _reasons(_with(path, value)) == reasons


def test_tee_type_changes_the_verdict() -> None:
    doc = _with("attestation_policy.min_tcb_level", None)  # sgx_tcb in an SNP policy is refused (tested below)
    assert _reasons(doc) == []
    doc["attestation_policy"]["tee_type"] = "sev-snp"
    assert _reasons(doc) == ["tee_type"]


def test_enforce_debug_disabled_changes_the_verdict_of_a_debug_td() -> None:
    debug = (TDX / "quote-v4-debug-5.dat").read_bytes()
    doc = _with("attestation_policy.allowed_measurements", None)
    doc["attestation_policy"]["min_tcb_level"] = None
    assert _reasons(doc, debug) == ["debug"]
    doc["attestation_policy"]["enforce_debug_disabled"] = False
    assert _reasons(doc, debug) == []


@pytest.mark.parametrize(("rule", "kwargs"), [
    ("max_memory", {"memory_bytes": 16 * 1024**3 + 1}),
    ("max_cpus", {"vcpus": 9}),
    ("allowed_devices", {"devices": ["virtio-net", "vfio-pci"]}),
])
def test_each_runtime_field_changes_the_verdict(rule: str, kwargs: dict[str, Any]) -> None:
    runtime = parse_policy(SEED).runtime
    within = {"memory_bytes": 16 * 1024**3, "vcpus": 8, "devices": ["virtio-net", "virtio-blk"]}
    assert check_runtime(runtime, **within) == []
    assert check_runtime(runtime, **{**within, **kwargs}) == [rule]


def test_network_policy_field_changes_the_verdict() -> None:
    rules = parse_policy(SEED).runtime.network
    assert rules.judge("10.20.30.40").verdict == "allowed"
    assert rules.judge("192.0.2.7").verdict == "denied"
    widened = parse_policy(_with("runtime_policy.network_policy", {"allow_egress": ["10.0.0.0/8", "192.0.2.0/24"],
                                                                    "deny_egress": ["0.0.0.0/0"]}))
    assert widened.runtime.network.judge("192.0.2.7").verdict == "allowed"


# --- sgx_tcb: what it compares, and what a weaker check would let through ------------------------------------------

def test_sgx_tcb_is_compared_component_wise_not_as_a_number() -> None:
    # As one big-endian number 0x0303.. > 0x0204, so a numeric comparison passes; comp02 is 3 < 4.
    assert _reasons(_with("attestation_policy.min_tcb_level", {"sgx_tcb": "0x0204"})) == ["tcb"]
    assert _reasons(_with("attestation_policy.min_tcb_level", {"sgx_tcb": "0x0203"})) == []


def test_sgx_tcb_reads_the_pck_sgx_components_not_the_tdx_tee_tcb_svn() -> None:
    # quote-v4-3: TEE_TCB_SVN starts 06 01, the PCK's SGX TCB starts 03 03.
    assert _reasons(_with("attestation_policy.min_tcb_level", {"sgx_tcb": "0x0303"})) == []
    assert _reasons(_with("attestation_policy.min_tcb_level", {"sgx_tcb": "0x0601"})) == ["tcb"]


def test_sgx_tcb_pcesvn_bytes() -> None:
    sixteen = "0x03030202040100050000000000000000"
    assert _reasons(_with("attestation_policy.min_tcb_level", {"sgx_tcb": sixteen + "000B"})) == []  # PCESVN 11
    doc = _with("attestation_policy.min_tcb_level", {"sgx_tcb": sixteen + "000C"})
    policy = parse_policy(doc).attestation
    outcome = Attester(TrustStore.default(), policy).check(V4_3, at=TDX_AT)
    assert outcome.reasons == ["tcb"] and "pcesvn 11 < 12" in outcome.violations[0].message


def test_sgx_tcb_fails_closed_on_evidence_without_an_sgx_tcb() -> None:
    leaf, chain = SNP_VECTORS["genoa-report-5.bin"]
    policy = parse_policy({"version": "1.0", "attestation_policy": {"min_tcb_level": {"sgx_tcb": "0x00"}}})
    outcome = Attester(TrustStore.default(), policy.attestation).check(
        (SNP / "genoa-report-5.bin").read_bytes(), at=SNP_AT, snp_certs=snp_certs(leaf, chain))
    assert outcome.reasons == ["tcb"] and "carries no SGX TCB" in outcome.violations[0].message


def test_sgx_tcb_svn_outside_a_byte_is_kept_within_it_not_a_traceback() -> None:
    # DER INTEGERs are signed: a PCK certificate under an operator-added trust root can carry -1 (the profile says
    # 0..255). bytes() raised ValueError out of verification; -1 must read as below any minimum, i.e. 0.
    quote = parse_quote(V4_3)
    forged = dataclasses.replace(pck_facts(quote.pck_chain_pem), sgx_svns=(-1, 300, *range(14)))
    assert _verified(quote, forged, None, []).details["sgx_tcb_svn"].startswith("00ff0001")


# --- bad input: a start-up error naming the field ----------------------------------------------------------------------

def test_sgx_tcb_in_an_snp_policy_names_the_field_and_the_tee_type() -> None:
    doc = {"version": "1.0", "attestation_policy": {"tee_type": "sev-snp",
                                                    "min_tcb_level": {"sgx_tcb": "0x03", "snp": 8}}}
    with pytest.raises(PolicyError) as err:
        parse_policy(doc)
    assert str(err.value).startswith("attestation_policy.min_tcb_level.sgx_tcb: not valid with tee_type sev-snp")


@pytest.mark.parametrize(("value", "field"), [
    ("FFFF", "attestation_policy.min_tcb_level.sgx_tcb"),  # no 0x
    ("0xFFF", "attestation_policy.min_tcb_level.sgx_tcb"),  # half a byte
    ("0x" + "00" * 17, "attestation_policy.min_tcb_level.sgx_tcb"),  # 17 bytes: PCESVN needs two
    (255, "attestation_policy.min_tcb_level.sgx_tcb"),
    # a trailing newline: "$" matched before it and the length check counted it, so 17 bytes loaded
    ("0x" + "00" * 16 + "01\n", "attestation_policy.min_tcb_level.sgx_tcb"),
    # the same for tdx_tcb: 3 hex digits + newline passed as "whole bytes", then fromhex raised a bare ValueError
    ("0x030\n", "attestation_policy.min_tcb_level.tdx_tcb"),
])
def test_malformed_sgx_tcb_is_named(value: Any, field: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(_with("attestation_policy.min_tcb_level", {field.rpartition(".")[2]: value}))
    assert str(err.value).startswith(field + ":")


@pytest.mark.parametrize(("network_policy", "field"), [
    ({"allow_egress": ["10.0.0.0/33"]}, "runtime_policy.network_policy.allow_egress[0]"),
    ({"allow_egress": ["10.0.0.0/8"], "deny_egress": ["0.0.0.0/0", "10.0.0.1/8"]},
     "runtime_policy.network_policy.deny_egress[1]"),  # host bits set: refused, not masked
    ({"deny_egress": ["any"]}, "runtime_policy.network_policy.deny_egress[0]"),
    ({"deny_egress": "0.0.0.0/0"}, "runtime_policy.network_policy.deny_egress"),
    ({"allow_egress": [], "allow_ingress": ["10.0.0.0/8"]}, "runtime_policy.network_policy.allow_ingress"),
])
def test_malformed_cidr_or_unknown_network_field_is_named(network_policy: dict, field: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(_with("runtime_policy.network_policy", network_policy))
    assert str(err.value).startswith(field + ":"), str(err.value)


# --- the file itself: JSON that decodes to something else than the operator reads ------------------------------
def test_duplicate_key_in_the_policy_file_is_an_error_naming_it(tmp_path) -> None:
    # A reviewer reading top-down sees the deny list; json.loads would keep the later, empty one.
    path = tmp_path / "policy.json"
    path.write_text('{"version": "1.0", "runtime_policy": {"network_policy": '
                    '{"deny_egress": ["0.0.0.0/0"], "allow_egress": [], "deny_egress": []}}}')
    with pytest.raises(PolicyError, match=r"policy.json: duplicate key 'deny_egress'$"):
        load_policy(path)


@pytest.mark.parametrize("text", ['{"version": "1.0", "runtime_policy": {"max_cpus": ' + "9" * 5000 + "}}",
                                  "[" * 100_000 + "]" * 100_000], ids=["5000-digit-int", "100000-deep"])
def test_json_python_cannot_decode_is_a_policy_error_not_a_traceback(tmp_path, text: str) -> None:
    # 5000-digit integer (int max_str_digits) and 100000-deep nesting (recursion limit)
    path = tmp_path / "policy.json"
    path.write_text(text)
    with pytest.raises(PolicyError, match="policy.json: not valid JSON: "):
        load_policy(path)
