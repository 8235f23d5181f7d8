"""Property-based fuzzing: any bytes give a value or the boundary's typed error, never another exception."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.attest.collateral import parse_pcs_json
from exporter.attest.errors import POLICY_REASONS, REASONS, VERIFY_REASONS, EvidenceError
from exporter.attest.evidence import Attester, detect_format
from exporter.attest.policy import PolicyError, parse_policy
from exporter.attest.snp import REPORT_SIZE, parse_report
from exporter.attest.tdx import parse_quote
from exporter.attest.trust import TrustStore
from exporter.logs.trustee import LogLineError, parse_as_line, parse_kbs_line

from .vectors import SNP, SNP_AT, TDX, TDX_QUOTES, snp_certs

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
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


@settings(max_examples=60, deadline=None, database=None)
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
                               "max_memory", "max_cpus", "allowed_devices", "allowed_measurements"])


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
