"""The fast canonical path is byte-identical to the RFC 8785 reference wherever it is used."""

from __future__ import annotations

import struct

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
    (b'{"a":' + b"9" * 5000 + b"}", "bad_number"),  # int() refuses 4301+ digits with a plain ValueError
])
def test_lines_that_would_change_meaning_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(CanonicalError) as err:
        loads(raw)
    assert err.value.reason == reason


def test_integer_beyond_double_precision_cannot_be_canonicalized() -> None:
    with pytest.raises(CanonicalError) as err:
        canonicalize({"n": 2**60})
    assert err.value.reason == "bad_number"


# The general path (floats, any text) against the reference, on values built to hit its corners: floats of every
# magnitude, strings holding NUL or the text "\u0000" (which must send it to the reference), keys beyond the BMP.
corner_text = st.text() | st.sampled_from(["\x00", "\\u0000", "\x00F1\x00", "\U0001f600", "\ufb33", "\ue000"])
any_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | corner_text
    | st.floats(allow_nan=False, allow_infinity=False) | st.floats(min_value=-1e-5, max_value=1e-5)
    | st.floats(min_value=1e20, max_value=1e22),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(corner_text, children, max_size=4),
    max_leaves=24,
)


@settings(max_examples=1500, deadline=None)
@given(any_values)
def test_canonicalize_gives_the_reference_bytes_for_any_value(value: object) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)


# RFC 8785 Appendix B: IEEE-754 bit patterns and their required serialisation (NaN and Infinity are refused).
RFC8785_NUMBERS = [
    ("0000000000000000", "0"), ("8000000000000000", "0"), ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"), ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"), ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"), ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"), ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"), ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"), ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"), ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"), ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"), ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"), ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "text"), RFC8785_NUMBERS)
def test_rfc8785_appendix_b_numbers(bits: str, text: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonicalize([value]) == b"[%s]" % text.encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000"])
def test_rfc8785_appendix_b_nan_and_infinity_are_refused(bits: str) -> None:
    with pytest.raises(CanonicalError):
        canonicalize({"n": struct.unpack(">d", bytes.fromhex(bits))[0]})


def test_rfc8785_section_3_2_3_sorts_keys_by_utf16_code_units() -> None:
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    out = canonicalize({k: 0 for k in keys}).decode()
    order = ["\\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert out == "{" + ",".join(f'"{k}":0' for k in order) + "}"


def test_rfc8785_section_3_2_4_example() -> None:
    source = (b'{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001], '
              b'"string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}')
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}').encode()
    parsed = loads(source)
    assert canonicalize(parsed.value, parsed.fast) == expected


def test_deep_nesting_and_lone_surrogates_raise_canonical_error_only() -> None:
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    for value in (deep, {"a": "\udc00"}):
        with pytest.raises(CanonicalError):
            canonicalize(value)
        with pytest.raises(CanonicalError):
            canonicalize(value, fast=True)
