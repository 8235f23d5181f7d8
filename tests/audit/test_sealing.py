"""The shipper's hot path (audit/sealing.py) arrives at the contract's bytes: the strict parse's value and verdict,
and chain.seal + RFC 8785 for the stored record, on every input, property-based."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import sealing
from audit.canonical import CanonicalError, dumps, loads
from audit.chain import GENESIS, Head
from audit.chain import seal as seal_doc

scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
           | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                max_size=4),
    max_leaves=20)
events = st.dictionaries(st.text(max_size=8).filter(lambda k: k != "chain"), json_values, max_size=6)


def _renderings(value: object) -> list[bytes]:
    """The same value as the exporter writes it, with ASCII escapes, with whitespace, sorted."""
    return [dumps(value), json.dumps(value).encode(), json.dumps(value, indent=1).encode(),
            json.dumps(value, sort_keys=True, separators=(",", ":")).encode()]


@settings(max_examples=300, deadline=None)
@given(events)
def test_parse_and_seal_equal_the_strict_parse_and_rfc8785(event: dict) -> None:
    head = Head("h1", 7, GENESIS)
    for raw in _renderings(event):
        try:
            strict = loads(raw)
        except CanonicalError as exc:
            with pytest.raises(CanonicalError) as err:
                sealing.parse(raw)
            assert err.value.reason == exc.reason
            continue
        parsed = sealing.parse(raw)
        assert parsed.value == strict.value and repr(parsed.value) == repr(strict.value)
        try:
            doc, want_head = seal_doc(strict.value, head)
            want = rfc8785.dumps(doc)
        except (CanonicalError, ValueError, TypeError):
            continue  # integers beyond double precision: refused on both roads (next test)
        assert sealing.seal(parsed.value, head, parsed.fast) == (want, want_head)


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"a":1,"a":2}', "duplicate_key"), (b'{"a":NaN}', "bad_number"), (b"\xff", "not_utf8"),
    (b'{"a":123456789012345678901}', "bad_number"),
])
def test_what_the_strict_parse_refuses_is_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(CanonicalError) as err:
        parsed = sealing.parse(raw)
        sealing.seal(parsed.value, Head("h1"), parsed.fast)
    assert err.value.reason == reason


def test_a_lone_surrogate_is_refused_as_not_canonical() -> None:
    with pytest.raises(CanonicalError) as err:
        sealing.parse(b'{"m":"\\udc00"}')
    assert err.value.reason == "not_canonical"


@pytest.mark.parametrize(("raw", "fast"), [
    (b'{"@timestamp":"2026-11-28T16:36:50.758877Z","n":5}', True),  # times in strings are not numbers
    (b'{"a":1.5}', False), (b'{"a":[1,2.5]}', False), (b'{"a":[-1e5]}', False),
    (b'{"a":12345678901234567}', False), (b'{"\xf0\x9f\x98\x80":1}', False),
])
def test_floats_long_integers_and_non_bmp_text_leave_the_fast_path(raw: bytes, fast: bool) -> None:
    assert sealing.parse(raw).fast is fast


def test_nesting_beyond_orjsons_limits_takes_the_strict_road() -> None:
    raw = b'{"a":' + b"[" * 300 + b"1" + b"]" * 300 + b"}"
    parsed = sealing.parse(raw)
    assert parsed.value == loads(raw).value
    data, _ = sealing.seal(parsed.value, Head("h1"), parsed.fast)
    assert data == rfc8785.dumps(seal_doc(parsed.value, Head("h1"))[0])
