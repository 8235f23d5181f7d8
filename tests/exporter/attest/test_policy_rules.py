"""Policy rules at their edges and in their messages, on hand-made verified results (no evidence needed).

Found by mutation testing (docs/testing.md): each test fails when the rule it names in exporter/attest/policy.py is
switched off, bent at an edge, or loses what its message says.
"""

from __future__ import annotations

import dataclasses

import pytest

from exporter.attest.policy import PolicyError, check_attestation, load_policy, parse_policy, parse_size
from exporter.attest.result import Verified

SNP = Verified(tee_type="sev-snp", evidence_format="snp-report", version=3, sha256="00", measurement="sha384:" + "11" * 48,
               debug=False, tcb={"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
               details={"vmpl": "0", "migrate_ma": "false"})
TDX = Verified(tee_type="tdx", evidence_format="tdx-quote", version=4, sha256="00", measurement="sha384:" + "22" * 48,
               debug=False, tcb={"tee_tcb_svn_0": 3, "pcesvn": 11}, tcb_status="UpToDate",
               details={"tee_tcb_svn": "030102" + "00" * 13, "sgx_tcb_svn": "0303020204010005" + "00" * 8})


def attestation(**rules) -> object:
    policy = parse_policy({"version": "1.0", "attestation_policy": rules}).attestation
    assert policy is not None
    return policy


def violations(verified: Verified, **rules) -> list[tuple[str, str]]:
    return [(v.rule, v.message) for v in check_attestation(attestation(**rules), verified)]


# --- SVNs written as strings -------------------------------------------------------------------------------------

def test_svns_may_be_written_as_decimal_or_hex_strings() -> None:
    policy = attestation(min_tcb_level={"snp": "0x0A", "tee": "0", "microcode": "255", "bootloader": 0})
    assert dict(policy.min_tcb_level) == {"snp": 10, "tee": 0, "microcode": 255, "bootloader": 0}


@pytest.mark.parametrize("value", ["256", "0x100", "-1", 256, -1, "0X0A", "ten", True])
def test_svn_outside_a_byte_or_misspelt_is_refused(value) -> None:
    with pytest.raises(PolicyError, match=r"^attestation_policy\.min_tcb_level\.snp: expected an SVN between 0 and "
                                          r"255 \(got "):
        attestation(min_tcb_level={"snp": value})


# --- minimum TCB ----------------------------------------------------------------------------------------------------

def test_tcb_below_names_each_component_and_the_rule() -> None:
    assert violations(SNP, min_tcb_level={"snp": 9, "tee": 1, "bootloader": 3}) == [
        ("min_tcb_level", "TCB below the policy minimum: snp 8 < 9, tee 0 < 1")]


def test_tdx_tcb_met_on_every_byte_it_names_passes() -> None:
    assert violations(TDX, min_tcb_level={"tdx_tcb": "0x030102" + "00" * 13}) == []


def test_tdx_tcb_rule_fails_closed_on_snp_evidence() -> None:
    assert violations(SNP, min_tcb_level={"tdx_tcb": "0x01"}) == [
        ("min_tcb_level", "TCB below the policy minimum: tdx_tcb 0x < 0x01")]


def test_sgx_and_tdx_shortfalls_are_both_listed() -> None:
    rules = {"min_tcb_level": {"tdx_tcb": "0x04", "sgx_tcb": "0x04"}, "tee_type": "tdx"}
    assert violations(TDX, **rules) == [
        ("min_tcb_level", "TCB below the policy minimum: tdx_tcb 0x03 < 0x04, sgx_tcb comp01 3 < 4")]


def test_sgx_tcb_pcesvn_shortfall_and_several_components_are_named() -> None:
    wanted = "0x0404" + "00" * 14 + "000c"  # comp01, comp02 above; PCESVN 12 > 11
    assert violations(TDX, min_tcb_level={"sgx_tcb": wanted}) == [
        ("min_tcb_level", "TCB below the policy minimum: sgx_tcb comp01 3 < 4, comp02 3 < 4, pcesvn 11 < 12")]


def test_sgx_tcb_of_exactly_sixteen_components_has_no_pcesvn() -> None:
    assert violations(TDX, min_tcb_level={"sgx_tcb": "0x" + "00" * 16}) == []


def test_sgx_tcb_fails_closed_on_snp_evidence() -> None:
    assert violations(SNP, min_tcb_level={"sgx_tcb": "0x01"}) == [
        ("min_tcb_level", ("TCB below the policy minimum: sgx_tcb cannot be checked: sev-snp evidence carries no "
                           "SGX TCB"))]


def test_all_ff_sgx_tcb_says_no_platform_meets_it() -> None:
    [(_, message)] = violations(TDX, min_tcb_level={"sgx_tcb": "0xFF"})
    assert message.endswith("comp01 3 < 255 (a component minimum of 0xFF = 255 is met by no Intel platform: the "
                            "all-FF sgx_tcb of the example policy rejects every quote; set it from your PCK "
                            "certificate, see docs/attestation.md)")


# --- the other rules: every violation listed, each message -----------------------------------------------------

def test_every_broken_rule_is_listed_with_its_message() -> None:
    debug_td = dataclasses.replace(TDX, debug=True, tcb_status="OutOfDate")
    rules = {"tee_type": "sev-snp", "min_tcb_level": {"tdx_tcb": "0x04"}, "allowed_measurements": [],
             "enforce_debug_disabled": True, "require_secure_boot": True,
             "allowed_tcb_status": ["UpToDate", "SWHardeningNeeded"], "required_vmpl": 0, "allow_migrate_ma": False}
    assert violations(debug_td, **rules) == [
        ("tee_type", "evidence is tdx, policy requires sev-snp"),
        ("min_tcb_level", "TCB below the policy minimum: tdx_tcb 0x03 < 0x04"),
        ("allowed_measurements", f"measurement sha384:{'22' * 48} is not allowed"),
        ("enforce_debug_disabled", "the guest allows debugging"),
        ("require_secure_boot", ("the evidence cannot show that secure boot was enabled (no event log); failing "
                                 "closed")),
        ("allowed_tcb_status", "TCB status OutOfDate is not one of UpToDate, SWHardeningNeeded"),
        ("required_vmpl", "report VMPL unknown is not the required 0"),
        ("allow_migrate_ma", ("the guest policy allows a migration agent (MIGRATE_MA), or the evidence cannot "
                              "show it does not")),
    ]


def test_empty_tcb_status_list_allows_none_and_says_so() -> None:
    assert violations(dataclasses.replace(TDX, tcb_status=None), allowed_tcb_status=[]) == [
        ("allowed_tcb_status", "TCB status not evaluated (no collateral, or not TDX) is not one of (none)")]


def test_required_vmpl_names_the_reports() -> None:
    assert violations(SNP, required_vmpl=3) == [("required_vmpl", "report VMPL 0 is not the required 3")]


def test_shown_secure_boot_passes_the_rule() -> None:
    assert violations(dataclasses.replace(SNP, secure_boot=True), require_secure_boot=True) == []


def test_vmpl_three_is_the_highest() -> None:
    assert attestation(required_vmpl=3).required_vmpl == 3
    with pytest.raises(PolicyError, match="required_vmpl: expected a VMPL between 0 and 3"):
        attestation(required_vmpl=4)


def test_bad_list_of_names_names_the_choices() -> None:
    with pytest.raises(PolicyError) as err:
        attestation(allow_missing_collateral=["crl"])
    assert str(err.value) == ("attestation_policy.allow_missing_collateral: expected a list of pck_crl, "
                              "root_ca_crl, qe_identity (got ['crl'])")


# --- runtime rules and the file ----------------------------------------------------------------------------------

def test_one_cpu_and_one_byte_are_the_smallest_limits() -> None:
    runtime = parse_policy({"version": "1.0", "runtime_policy": {"max_cpus": 1, "max_memory": 1}}).runtime
    assert runtime is not None and (runtime.max_cpus, runtime.max_memory_bytes) == (1, 1)
    assert parse_size("x", "1") == 1
    for bad in (0, "0", "0GB", -1):
        with pytest.raises(PolicyError):
            parse_size("x", bad)


def test_runtime_without_memory_limit_has_none() -> None:
    runtime = parse_policy({"version": "1.0", "runtime_policy": {"max_cpus": 2}}).runtime
    assert runtime is not None and runtime.max_memory_bytes is None


@pytest.mark.parametrize(("runtime", "message"), [
    ({"allowed_devices": ["virtio-net", ""]}, "runtime_policy.allowed_devices: expected a list of device names"),
    ({"max_ram": 1}, "runtime_policy.max_ram: unknown field"),
    ({"max_cpus": 0}, "runtime_policy.max_cpus: expected a positive integer (got 0)"),
])
def test_bad_runtime_rules_are_named(runtime: dict, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy({"version": "1.0", "runtime_policy": runtime})
    assert str(err.value).startswith(message)


def test_policy_file_is_read_up_to_one_mib(tmp_path) -> None:
    path = tmp_path / "policy.json"
    text = '{"version": "1.0"}'
    path.write_text(text + " " * (1024 * 1024 - len(text)))
    assert load_policy(path).version == "1.0"
    path.write_text(text + " " * (1024 * 1024 + 1 - len(text)))
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(err.value).startswith(f"{path}: cannot read policy file: ")


def test_policy_file_that_is_not_json_is_named(tmp_path) -> None:
    path = tmp_path / "policy.json"
    path.write_text("{version")
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(err.value).startswith(f"{path}: not valid JSON: Expecting property name")


def test_rules_left_out_are_off() -> None:
    policy = attestation()
    assert (policy.enforce_debug_disabled, policy.require_secure_boot, policy.allow_migrate_ma) == (False, False, True)


def test_unsupported_version_string_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"^version: expected one of \['1.0'\] \(got '2.0'\)$"):
        parse_policy({"version": "2.0"})


def test_non_boolean_rule_is_named() -> None:
    with pytest.raises(PolicyError, match="^attestation_policy.require_secure_boot: expected true or false"):
        attestation(require_secure_boot="yes")


def test_sgx_tcb_in_an_snp_policy_says_which_components_exist() -> None:
    with pytest.raises(PolicyError) as err:
        attestation(tee_type="snp", min_tcb_level={"sgx_tcb": "0x01"})
    assert str(err.value) == ("attestation_policy.min_tcb_level.sgx_tcb: not valid with tee_type sev-snp (an SGX TCB "
                              "exists only on Intel TDX platforms; use bootloader, tee, snp, microcode, fmc)")


def test_unknown_field_lists_the_allowed_ones() -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy({"version": "1.0", "runtime_policy": {"max_ram": 1}})
    assert str(err.value) == ("runtime_policy.max_ram: unknown field (allowed: allowed_devices, max_cpus, max_memory, "
                              "network_policy)")


def test_duplicate_key_names_the_file_and_the_key(tmp_path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"version": "1.0", "version": "1.0"}')
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(err.value) == f"{path}: duplicate key 'version'"
