"""The operator policy: accepted exactly as written, typos rejected by name, rules applied to verified evidence."""

from __future__ import annotations

import json

import pytest

from exporter.attest.evidence import Attester
from exporter.attest.policy import (
    PolicyError,
    RuntimePolicy,
    check_runtime,
    load_policy,
    parse_policy,
    parse_size,
)
from exporter.attest.trust import TrustStore
from exporter.attest.verify_snp import SnpCerts

from . import forge
from .vectors import SNP, SNP_AT, SNP_VECTORS, TDX, TDX_AT, snp_certs

DESIGN_EXAMPLE = {
    "version": "1.0",
    "attestation_policy": {"tee_type": "tdx", "min_tcb_level": {"tdx_tcb": "0x03000000"},
                           "allowed_measurements": ["sha384:" + "ab" * 48], "enforce_debug_disabled": True,
                           "require_secure_boot": True},
    "runtime_policy": {"max_memory": "16GB", "max_cpus": 8, "allowed_devices": ["virtio-net", "virtio-blk"]},
}
MRTD_V4_3 = "sha384:91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"


def test_design_example_loads_from_file(tmp_path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(DESIGN_EXAMPLE))
    policy = load_policy(path)
    assert policy.attestation is not None and policy.runtime is not None
    assert policy.attestation.tee_type == "tdx"
    assert policy.attestation.min_tcb_level == {"tdx_tcb": bytes([3, 0, 0, 0])}
    assert policy.runtime == RuntimePolicy(16 * 1024**3, 8, ("virtio-net", "virtio-blk"))


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d["attestation_policy"].update(enforce_debug=True), "attestation_policy.enforce_debug"),
    (lambda d: d["attestation_policy"].update(enforce_debug_disabled="yes"),
     "attestation_policy.enforce_debug_disabled"),
    (lambda d: d["attestation_policy"]["min_tcb_level"].update(sgx=1), "attestation_policy.min_tcb_level.sgx"),
    (lambda d: d["attestation_policy"].update(allowed_measurements=["sha256:00"]),
     "attestation_policy.allowed_measurements[0]"),
    (lambda d: d["attestation_policy"].update(tee_type="sgx"), "attestation_policy.tee_type"),
    (lambda d: d["runtime_policy"].update(max_cpus="8"), "runtime_policy.max_cpus"),
    (lambda d: d["runtime_policy"].update(max_memory="lots"), "runtime_policy.max_memory"),
    (lambda d: d["runtime_policy"].update(allowed_devices="virtio-net"), "runtime_policy.allowed_devices"),
    (lambda d: d.update(version=1.0), "version"),
])
def test_unknown_or_ill_typed_field_is_named(mutate, field: str) -> None:
    doc = json.loads(json.dumps(DESIGN_EXAMPLE))
    mutate(doc)
    with pytest.raises(PolicyError) as err:
        parse_policy(doc)
    assert str(err.value).startswith(field + ":")


def test_unreadable_or_invalid_policy_file_is_an_error(tmp_path) -> None:
    with pytest.raises(PolicyError):
        load_policy(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PolicyError) as err:
        load_policy(bad)
    assert "bad.json" in str(err.value)


@pytest.mark.parametrize(("text", "size"), [("16GB", 16 * 1024**3), ("16GiB", 16 * 1024**3), ("512M", 512 * 1024**2),
                                            ("1024", 1024), (2048, 2048)])
def test_sizes(text, size) -> None:
    assert parse_size("x", text) == size


def test_runtime_rules_report_each_violation() -> None:
    runtime = RuntimePolicy(max_memory_bytes=16 * 1024**3, max_cpus=8, allowed_devices=("virtio-net", "virtio-blk"))
    assert check_runtime(runtime, memory_bytes=8 * 1024**3, vcpus=8, devices=["virtio-net"]) == []
    assert check_runtime(runtime, memory_bytes=32 * 1024**3, vcpus=9, devices=["virtio-net", "e1000"]) == [
        "max_memory", "max_cpus", "allowed_devices"]
    assert check_runtime(RuntimePolicy(), memory_bytes=1 << 50, vcpus=512, devices=["anything"]) == []


def _attester(**attestation) -> Attester:
    policy = parse_policy({"version": "1.0", "attestation_policy": attestation})
    return Attester(TrustStore.default(), policy.attestation)


def test_debug_snp_report_fails_enforce_debug_disabled() -> None:
    leaf, chain = SNP_VECTORS["milan-report-1.bin"]
    outcome = _attester(enforce_debug_disabled=True).check((SNP / "milan-report-1.bin").read_bytes(), at=SNP_AT,
                                                           snp_certs=snp_certs(leaf, chain))
    assert outcome.verified is not None and not outcome.ok
    assert outcome.reasons == ["debug"] and outcome.violations[0].rule == "enforce_debug_disabled"


def test_debug_td_fails_enforce_debug_disabled() -> None:
    outcome = _attester(enforce_debug_disabled=True).check((TDX / "quote-v4-debug-5.dat").read_bytes(), at=TDX_AT)
    assert outcome.reasons == ["debug"]
    clean = _attester(enforce_debug_disabled=True).check((TDX / "quote-v4-3.dat").read_bytes(), at=TDX_AT)
    assert clean.ok


def test_measurement_allowlist_passes_and_fails() -> None:
    data = (TDX / "quote-v4-3.dat").read_bytes()
    assert _attester(allowed_measurements=[MRTD_V4_3.upper().replace("SHA384", "sha384")]).check(data, at=TDX_AT).ok
    rejected = _attester(allowed_measurements=["sha384:" + "00" * 48]).check(data, at=TDX_AT)
    assert rejected.reasons == ["measurement"]


def test_snp_measurement_allowlist() -> None:
    leaf, chain = SNP_VECTORS["milan-report-2.bin"]
    data = (SNP / "milan-report-2.bin").read_bytes()
    good = "sha384:7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
    assert _attester(allowed_measurements=[good]).check(data, at=SNP_AT, snp_certs=snp_certs(leaf, chain)).ok
    assert not _attester(allowed_measurements=[good]).check(
        (SNP / "milan-report-3.bin").read_bytes(), at=SNP_AT, snp_certs=snp_certs("milan-vcek-3.der", None)).ok


def test_secure_boot_requirement_fails_closed() -> None:
    outcome = _attester(require_secure_boot=True).check((TDX / "quote-v4-3.dat").read_bytes(), at=TDX_AT)
    assert outcome.reasons == ["secure_boot"]
    assert "cannot show" in outcome.violations[0].message


def test_tee_type_and_min_tcb() -> None:
    data = (TDX / "quote-v4-3.dat").read_bytes()  # tee_tcb_svn 06 01 03 ...
    assert _attester(tee_type="tdx", min_tcb_level={"tdx_tcb": "0x06010300"}).check(data, at=TDX_AT).ok
    assert _attester(min_tcb_level={"tdx_tcb": "0x07"}).check(data, at=TDX_AT).reasons == ["tcb"]
    assert _attester(tee_type="sev-snp").check(data, at=TDX_AT).reasons == ["tee_type"]
    leaf, chain = SNP_VECTORS["genoa-report-5.bin"]
    snp = (SNP / "genoa-report-5.bin").read_bytes()
    certs = snp_certs(leaf, chain)
    assert _attester(min_tcb_level={"snp": 23, "microcode": 84}).check(snp, at=SNP_AT, snp_certs=certs).ok
    assert _attester(min_tcb_level={"snp": 24}).check(snp, at=SNP_AT, snp_certs=certs).reasons == ["tcb"]
    # an SNP minimum cannot be shown by a TDX quote: fail closed
    assert _attester(min_tcb_level={"snp": 1}).check(data, at=TDX_AT).reasons == ["tcb"]


# --- fields for the evidence itself: TCB status, VMPL, MIGRATE_MA, incomplete collateral --------------------------

AMD = forge.amd_pki()
VCEK_KEY, VCEK = AMD.vcek()


def _forged_attester(**attestation) -> Attester:
    policy = parse_policy({"version": "1.0", "attestation_policy": attestation})
    return Attester(forge.trust_with(AMD.ark, forge.intel_pki().root), policy.attestation)


def _snp(attester: Attester, **report) -> list[str]:
    outcome = attester.check(forge.snp_report(VCEK_KEY, **report), at=forge.AT,
                             snp_certs=SnpCerts(VCEK, (AMD.ask,)))
    assert outcome.verified is not None
    return [v.rule for v in outcome.violations]


def test_required_vmpl() -> None:
    assert _snp(_forged_attester(required_vmpl=0), vmpl=0) == []
    assert _snp(_forged_attester(required_vmpl=0), vmpl=1) == ["required_vmpl"]
    tdx = _forged_attester(required_vmpl=0).check(forge.tdx_world().quote(), at=forge.AT)
    assert tdx.reasons == ["policy"]  # a TDX quote cannot show a VMPL: fail closed


def test_migrate_ma_can_be_refused() -> None:
    with_ma = 0x30000 | (1 << 18)
    assert _snp(_forged_attester(), policy=with_ma) == []  # allowed unless the policy says otherwise
    assert _snp(_forged_attester(allow_migrate_ma=False), policy=0x30000) == []
    assert _snp(_forged_attester(allow_migrate_ma=False), policy=with_ma) == ["allow_migrate_ma"]


def test_empty_measurement_list_allows_nothing() -> None:
    assert _snp(_forged_attester(allowed_measurements=[])) == ["allowed_measurements"]


def test_allowed_tcb_status_without_collateral_fails_closed() -> None:
    outcome = _forged_attester(allowed_tcb_status=["UpToDate"]).check(forge.tdx_world().quote(), at=forge.AT)
    assert outcome.reasons == ["tcb"] and "not evaluated" in outcome.violations[0].message


def test_allowed_tcb_status_with_collateral(tmp_path) -> None:
    world = forge.tdx_world()
    collateral = world.collateral(tmp_path)
    for allowed, ok in ((["UpToDate"], True), (["OutOfDate"], False)):
        policy = parse_policy({"version": "1.0", "attestation_policy": {"allowed_tcb_status": allowed}})
        attester = Attester(forge.trust_with(world.pki.root), policy.attestation, collateral)
        assert attester.check(world.quote(), at=forge.AT).ok is ok


def test_allow_missing_collateral_reaches_the_verifier(tmp_path) -> None:
    world = forge.tdx_world().replace(qe_identity=None)
    collateral = world.collateral(tmp_path)
    strict = Attester(forge.trust_with(world.pki.root), None, collateral).check(world.quote(), at=forge.AT)
    assert strict.reasons == ["collateral"]
    policy = parse_policy({"version": "1.0", "attestation_policy": {"allow_missing_collateral": ["qe_identity"]}})
    lenient = Attester(forge.trust_with(world.pki.root), policy.attestation, collateral)
    assert lenient.check(world.quote(), at=forge.AT).ok


@pytest.mark.parametrize(("field", "value"), [
    ("allowed_tcb_status", ["Revoked"]), ("allowed_tcb_status", "UpToDate"), ("required_vmpl", 4),
    ("required_vmpl", True), ("allow_migrate_ma", "no"), ("allow_missing_collateral", ["tcb_info"]),
])
def test_new_fields_are_validated(field: str, value) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy({"version": "1.0", "attestation_policy": {field: value}})
    assert str(err.value).startswith(f"attestation_policy.{field}:")


@pytest.mark.parametrize(("attestation", "field"), [
    ({"min_tcb_level": {"tdx_tcb": "0x030"}}, "attestation_policy.min_tcb_level.tdx_tcb"),
    ({"min_tcb_level": {"tdx_tcb": 3}}, "attestation_policy.min_tcb_level.tdx_tcb"),
    ({"min_tcb_level": {"snp": 256}}, "attestation_policy.min_tcb_level.snp"),
    ({"min_tcb_level": {"snp": True}}, "attestation_policy.min_tcb_level.snp"),
    ({"allowed_measurements": "sha384:" + "ab" * 48}, "attestation_policy.allowed_measurements"),
])
def test_ill_typed_attestation_values_are_named(attestation: dict, field: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy({"version": "1.0", "attestation_policy": attestation})
    assert str(err.value).startswith(field + ":")


def test_attestation_policy_must_be_an_object() -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy({"version": "1.0", "attestation_policy": ["tdx"]})
    assert str(err.value) == "attestation_policy: expected an object"
