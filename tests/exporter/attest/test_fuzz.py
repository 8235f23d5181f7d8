"""Property-based fuzzing: any bytes give a value or the boundary's typed error, never another exception.

Seeds are the real vectors (byte mutations) and evidence/collateral forged under the test PKIs and *re-signed* after
each mutation, so the mutated input gets past the signatures into the deeper checks. The budget is
``TEE_FUZZ_EXAMPLES`` examples per property: default 150 (seconds in all), 3000 when ``CI=true`` (minutes); e.g.
``TEE_FUZZ_EXAMPLES=5000 pytest tests/exporter/attest/test_fuzz.py`` for a longer hunt.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.attest.collateral import CollateralSet, parse_pcs_json
from exporter.attest.errors import POLICY_REASONS, REASONS, VERIFY_REASONS, EvidenceError
from exporter.attest.evidence import Attester, detect_format
from exporter.attest.policy import PolicyError, load_policy, parse_policy
from exporter.attest.snp import REPORT_SIZE, parse_report
from exporter.attest.tdx import parse_quote
from exporter.attest.trust import TrustStore, load_certificates
from exporter.attest.verify_snp import SnpCerts, SnpVerifier
from exporter.attest.verify_tdx import TdxVerifier
from exporter.logs.trustee import LogLineError, parse_as_line, parse_kbs_line

from . import forge
from .vectors import SNP, SNP_AT, TDX, TDX_QUOTES, snp_certs

# CI (CI=true, as .ci/run is started) runs minutes of fuzzing; a developer's run takes seconds. Either can be set.
EXAMPLES = int(os.environ.get("TEE_FUZZ_EXAMPLES", "3000" if os.environ.get("CI") == "true" else "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
QUOTES = [(TDX / q).read_bytes() for q in TDX_QUOTES]
REPORTS = [(SNP / r).read_bytes() for r in ("milan-report-2.bin", "genoa-report-5.bin", "milan-vlek-report-4.bin")]
ATTESTER = Attester(TrustStore.default())
METRIC_REASONS = {"parse", *VERIFY_REASONS, *POLICY_REASONS}


def _typed(fn, data):
    try:
        fn(data)
    except EvidenceError as exc:
        assert exc.reason in REASONS


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A real piece of evidence with a few bytes changed and possibly cut short or extended."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    if cut is not None:
        data = data[:cut]
    return bytes(data) + draw(st.binary(max_size=8))


@FUZZ
@given(st.one_of(st.binary(max_size=2048), st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE)))
def test_snp_parser_any_bytes(data: bytes) -> None:
    _typed(parse_report, data)


@FUZZ
@given(mutated(REPORTS))
def test_snp_parser_mutated_reports(data: bytes) -> None:
    _typed(parse_report, data)


@FUZZ
@given(st.binary(max_size=6000))
def test_tdx_parser_any_bytes(data: bytes) -> None:
    _typed(parse_quote, data)
    _typed(detect_format, data)


@FUZZ
@given(mutated(QUOTES))
def test_tdx_parser_mutated_quotes(data: bytes) -> None:
    _typed(parse_quote, data)


@settings(max_examples=max(60, EXAMPLES // 2), deadline=None, database=None)
@given(mutated(QUOTES + REPORTS))
def test_full_check_of_mutated_evidence_never_raises(data: bytes) -> None:
    outcome = ATTESTER.check(data, at=SNP_AT, snp_certs=snp_certs("milan-vcek-2.der", None))
    assert outcome.ok or outcome.reason in METRIC_REASONS


LOG_PREFIXES = [b"[2025-01-10T08:12:33Z INFO  actix_web::middleware::logger] ",
                b"2025-01-10T08:12:33.123456Z  INFO actix_web::middleware::logger: ",
                b"2025-01-10T08:12:33.123456Z ERROR kbs::error: ", b""]


@FUZZ
@given(st.sampled_from(LOG_PREFIXES), st.binary(max_size=300))
def test_log_parsers_any_bytes(prefix: bytes, rest: bytes) -> None:
    for parse in (parse_kbs_line, parse_as_line):
        try:
            parse(prefix + rest)
        except LogLineError:
            pass


@FUZZ
@given(st.sampled_from(LOG_PREFIXES[:2]), st.text(max_size=200))
def test_access_log_shaped_text(prefix: bytes, text: str) -> None:
    line = prefix + f'10.0.0.1 "GET /kbs/v0/resource/{text} HTTP/1.1" 200 1 "-" "x" 0.1'.encode()
    try:
        parse_kbs_line(line)
    except LogLineError:
        pass


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=24), inner,
                                                                                    max_size=4), max_leaves=12)
POLICY_KEYS = st.sampled_from(["version", "attestation_policy", "runtime_policy", "tee_type", "min_tcb_level",
                               "max_memory", "max_cpus", "allowed_devices", "allowed_measurements",
                               "allowed_tcb_status", "required_vmpl", "allow_migrate_ma",
                               "allow_missing_collateral"])


@FUZZ
@given(st.one_of(JSONISH, st.dictionaries(POLICY_KEYS, JSONISH, max_size=4)))
def test_policy_parser_any_json(doc) -> None:
    try:
        parse_policy(doc)
    except PolicyError:
        pass


@FUZZ
@given(st.one_of(st.text(max_size=300), JSONISH.map(json.dumps)))
def test_collateral_parser_any_text(text: str) -> None:
    _typed(parse_pcs_json, text)


@FUZZ
@given(st.dictionaries(POLICY_KEYS, JSONISH, max_size=6), st.integers(0, 3000))
def test_policy_loader_any_file(attestation, depth: int) -> None:
    """The loader from a file: valid-looking documents and ones nested deep enough to exhaust recursion."""
    doc = {"version": "1.0", "attestation_policy": attestation}
    text = json.dumps(doc) if depth < 1000 else '{"version": "1.0", "x": ' + "[" * depth * 40 + "]" * depth * 40 + "}"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.json"
        path.write_text(text)
        try:
            load_policy(path)
        except PolicyError:
            pass


# --- mutations that keep signatures valid (re-signed under the test PKIs) ------------------------------------------

AMD = forge.amd_pki()
VCEK_KEY, VCEK = AMD.vcek()
SNP_VERIFIER = SnpVerifier(forge.trust_with(AMD.ark))
SNP_CERTS = SnpCerts(VCEK, (AMD.ask,))
WORLD = forge.tdx_world()
TDX_VERIFIER = TdxVerifier(forge.trust_with(WORLD.pki.root))
with tempfile.TemporaryDirectory(prefix="fuzz-collateral-") as _folder:
    BASE_COLLATERAL = WORLD.collateral(Path(_folder))  # read into memory; the files are not needed after
U8 = st.integers(0, 255)


def _only_typed(call) -> None:
    try:
        call()
    except EvidenceError as exc:
        assert exc.reason in REASONS


@FUZZ
@given(version=st.sampled_from([2, 3, 5, 4, 0x81]), vmpl=st.integers(0, 5), policy=st.integers(0, 2**64 - 1) |
       st.sampled_from([0x30000, 0x70000, 0xB0000]), cpuid=st.tuples(U8, U8, U8) | st.just((0x19, 1, 1)),
       tcb=st.fixed_dictionaries({k: U8 for k in forge.MILAN_TCB}) | st.just(forge.MILAN_TCB),
       chip_id=st.binary(min_size=64, max_size=64) | st.just(b"\x5a" * 64), signing_key=st.integers(0, 7),
       mask=st.booleans(), patch=st.dictionaries(st.integers(0, 0x29F), st.binary(min_size=1, max_size=4), max_size=3))
def test_resigned_snp_reports_only_typed_errors(version, vmpl, policy, cpuid, tcb, chip_id, signing_key, mask,
                                                patch) -> None:
    report = forge.snp_report(VCEK_KEY, version=version, vmpl=vmpl, policy=policy, cpuid=cpuid, tcb=tcb,
                              chip_id=chip_id, signing_key=signing_key, mask_chip_key=mask, patch=patch)
    _only_typed(lambda: SNP_VERIFIER.verify(report, SNP_CERTS, forge.AT))


@FUZZ
@given(version=st.sampled_from([4, 5]), svn=st.binary(min_size=16, max_size=16) | st.just(forge.TdFields().tee_tcb_svn),
       mrsigner=st.sampled_from([bytes(48), b"\x01" * 48]), attrs=st.binary(min_size=8, max_size=8),
       qe_svn=st.integers(0, 0xFFFF), qe_attrs=st.binary(min_size=16, max_size=16), bind=st.booleans(),
       trailing=st.binary(max_size=16))
def test_resigned_tdx_quotes_only_typed_errors(version, svn, mrsigner, attrs, qe_svn, qe_attrs, bind,
                                               trailing) -> None:
    world = WORLD.replace(td=forge.TdFields(tee_tcb_svn=svn, mrsignerseam=mrsigner, seam_attributes=attrs),
                          qe=forge.QeFields(isvsvn=qe_svn, attributes=qe_attrs))
    quote = world.quote(version=version, bind=bind, trailing=trailing)
    _only_typed(lambda: TDX_VERIFIER.verify(quote, forge.AT, BASE_COLLATERAL))


def _set_path(doc, path: list, value) -> None:
    """Replace the value at ``path`` (keys and list indexes, each taken modulo what exists) in place."""
    node = doc
    for step in path[:-1]:
        if isinstance(node, dict) and node:
            node = node[sorted(node)[step % len(node)]]
        elif isinstance(node, list) and node:
            node = node[step % len(node)]
        else:
            return
    if isinstance(node, dict) and node:
        node[sorted(node)[path[-1] % len(node)]] = value
    elif isinstance(node, list) and node:
        node[path[-1] % len(node)] = value


@FUZZ
@given(st.sampled_from(["tcb_info", "qe_identity"]), st.lists(st.integers(0, 40), min_size=1, max_size=6), JSONISH)
def test_resigned_collateral_only_typed_errors(kind: str, path: list, value) -> None:
    """Any field of a validly signed TCB info or QE identity replaced by any JSON value."""
    doc = forge.tcb_info_doc() if kind == "tcb_info" else forge.qe_identity_doc()
    _set_path(doc, path, value)
    text = forge.signed_json("tcbInfo" if kind == "tcb_info" else "enclaveIdentity", doc, WORLD.pki.signing_key)
    try:
        parsed = parse_pcs_json(text)
    except EvidenceError as exc:
        assert exc.reason == "collateral"
        return
    collateral = CollateralSet(
        tcb_infos=parsed.tcb_infos if kind == "tcb_info" else BASE_COLLATERAL.tcb_infos,
        qe_identities=parsed.qe_identities if kind == "qe_identity" else BASE_COLLATERAL.qe_identities,
        crls=BASE_COLLATERAL.crls, certs=BASE_COLLATERAL.certs)
    _only_typed(lambda: TDX_VERIFIER.verify(WORLD.quote(), forge.AT, collateral))


@FUZZ
@given(st.sampled_from(["pck_crl", "root_ca_crl", "tcb_info_issuer_chain", "pck_crl_issuer_chain"]),
       st.dictionaries(st.integers(0, 700), U8, min_size=1, max_size=4))
def test_mutated_crls_and_issuer_chains_only_typed_errors(field: str, changes: dict) -> None:
    """Bytes of a bundle's DER CRLs and PEM-wrapped certificates changed: loading and verifying give typed errors."""
    doc = json.loads(WORLD.bundle())
    if field.endswith("chain"):
        certs = forge.x509.load_pem_x509_certificates(doc[field].encode())
        der = bytearray(certs[0].public_bytes(forge.serialization.Encoding.DER))
        for pos, byte in changes.items():
            der[pos % len(der)] = byte
        doc[field] = forge.pem_der(bytes(der)) + forge.pem(*certs[1:]).decode()
    else:
        der = bytearray(bytes.fromhex(doc[field]))
        for pos, byte in changes.items():
            der[pos % len(der)] = byte
        doc[field] = der.hex()

    def check() -> None:
        TDX_VERIFIER.verify(WORLD.quote(), forge.AT, parse_pcs_json(json.dumps(doc)))

    _only_typed(check)


def _mutate_der(cert, changes: dict) -> bytes:
    der = bytearray(cert.public_bytes(forge.serialization.Encoding.DER))
    for pos, byte in changes.items():
        der[pos % len(der)] = byte
    return bytes(der)


@FUZZ
@given(st.dictionaries(st.integers(0, 1500), U8, min_size=1, max_size=4), st.booleans())
def test_mutated_certificates_only_typed_errors(changes: dict, snp: bool) -> None:
    """A VCEK (SNP) or the PCK leaf inside a re-signed quote (TDX) with bytes changed: typed errors only."""
    if snp:
        def check() -> None:
            leaf = load_certificates(_mutate_der(VCEK, changes), "vcek")[0]
            SnpVerifier(forge.trust_with(AMD.ark)).verify(forge.snp_report(VCEK_KEY), SnpCerts(leaf, (AMD.ask,)),
                                                          forge.AT)
    else:
        chain = (forge.pem_der(_mutate_der(WORLD.pck, changes)) + forge.pem(WORLD.pki.ca, WORLD.pki.root).decode())

        def check() -> None:
            TdxVerifier(forge.trust_with(WORLD.pki.root)).verify(
                forge.tdx_quote(WORLD.pck_key, chain.encode(), td=WORLD.td), forge.AT, BASE_COLLATERAL)
    _only_typed(check)
