"""The fast canonical path is byte-identical to the RFC 8785 reference wherever it is used."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.canonical import CanonicalError, canonicalize, dumps, loads

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_parsed_value_canonicalizes_exactly_like_rfc8785(value: object) -> None:
    parsed = loads(dumps(value))
    assert canonicalize(parsed.value, parsed.fast) == rfc8785.dumps(value)


def test_floats_and_big_integers_take_the_reference_path() -> None:
    assert loads(b'{"a":1.0}').fast is False
    assert loads(b'{"a":12345678901234567}').fast is False
    assert loads(b'{"\\ud83d\\ude00":1}').fast is False
    assert loads(b'{"a":1,"b":"x"}').fast is True


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"a":1,"a":2}', "duplicate_key"), (b'{"a":NaN}', "bad_number"), (b'{"a":Infinity}', "bad_number"),
    (b"\xff", "not_utf8"), (b"{", "not_json"),
])
def test_lines_that_would_change_meaning_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(CanonicalError) as err:
        loads(raw)
    assert err.value.reason == reason


def test_integer_beyond_double_precision_cannot_be_canonicalized() -> None:
    with pytest.raises(CanonicalError) as err:
        canonicalize({"n": 2**60})
    assert err.value.reason == "bad_number"
