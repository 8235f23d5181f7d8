"""RFC 8785 JSON Canonicalization Scheme (JCS): the byte string every audit record is hashed over.

Parsing is strict on purpose: a journal line whose meaning a canonical re-serialisation would change (duplicate
keys, NaN/Infinity, integers beyond IEEE-754 double precision) is refused rather than silently altered.

Speed: the reference implementation (the ``rfc8785`` package) is pure Python and costs ~140 us per record. This
module produces the same bytes through the C JSON encoder:

- ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` escapes strings exactly like RFC 8785
  section 3.2.2.2 (``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, other controls as lower-case ``\\u00xx``, nothing else),
  writes integers, ``true``/``false``/``null`` alike, and sorts keys by code point, which equals RFC 8785 3.2.3's
  UTF-16 code unit order as long as no key holds a character beyond the BMP.
- Only floats differ: ``json`` writes Python's ``repr``, RFC 8785 3.2.2.3 the ECMAScript ``Number::toString``
  (ECMA-262 7.1.12.1). ``_prepare`` copies the value with every float replaced by a placeholder string
  ``"\\x00<ECMAScript text>\\x00"``; after encoding, each placeholder is the only source of ``\\u0000`` text in the
  output when the count of ``\\u0000`` is exactly twice the number of floats, and is then replaced by its number.
  Any other count (a string really holding NUL or the text ``\\u0000``), or a key beyond the BMP, takes the
  reference implementation.
- ``Parsed.fast`` (no floats, no big integers, no non-BMP text: proved while parsing) skips the copy altogether.

tests/audit/test_canonical.py checks every path against the reference on hypothesis-generated values and against
RFC 8785's own test vectors (Appendix B number samples, section 3.2.3 sorting, section 3.2.4 example).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import rfc8785

_NON_BMP = re.compile(rb"[\xf0-\xf4]|\\u[dD][89abAB]")
_PLACEHOLDER = re.compile(r'"\\u0000([-+.0-9e]*)\\u0000"')
_INT_LIMIT = 2**53 - 1
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class CanonicalError(ValueError):
    """The value cannot be represented canonically without changing it; ``reason`` is a bounded label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Parsed:
    value: Any
    fast: bool  # json.dumps is known to produce the JCS bytes for ``value`` (and for it extended by plain fields)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise CanonicalError("duplicate_key", "an object repeats a key")
    return obj


def _refuse_constant(name: str) -> Any:
    raise CanonicalError("bad_number", f"{name} is not JSON")


def loads(data: bytes) -> Parsed:
    """Strict JSON parse of UTF-8 bytes (duplicate keys and NaN/Infinity refused), noting whether the fast
    canonical path is exact for it."""
    exotic: list[str] = []  # numbers the fast path would not render like RFC 8785

    def _float(text: str) -> float:
        exotic.append(text)
        return float(text)

    def _int(text: str) -> int:
        if len(text) > 15:
            exotic.append(text)
        try:
            return int(text)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits, 4300 by default)
            raise CanonicalError("bad_number", f"an integer of {len(text)} digits") from None

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalError("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant,
                           parse_float=_float, parse_int=_int)
    except json.JSONDecodeError as exc:
        raise CanonicalError("not_json", f"{exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise CanonicalError("not_json", "nested too deeply") from None
    fast = not exotic and (data.isascii() and b"\\u" not in data or not _NON_BMP.search(data))
    return Parsed(value, fast)


def dumps(value: Any) -> bytes:
    """Compact JSON, as stored in the spool and the sinks (not necessarily canonical)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def number(x: float) -> str:
    """ECMA-262 7.1.12.1 ``Number::toString`` of a finite float, as RFC 8785 3.2.2.3 requires.

    ``repr`` gives the shortest digit string that reads back as ``x`` (correctly rounded), which is the ``s`` of
    the ECMAScript algorithm; only the layout differs."""
    if not math.isfinite(x):
        raise CanonicalError("bad_number", f"{x} is not JSON")
    if x == 0:
        return "0"  # -0 too
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    stripped = digits.lstrip("0")
    n = len(whole) - (len(digits) - len(stripped)) + int(exp or 0)  # x = 0.<digits> * 10**n
    s = stripped.rstrip("0")
    k = len(s)
    if k <= n <= 21:
        text = s + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{s[:n]}.{s[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + s
    else:
        e = n - 1
        text = (s if k == 1 else f"{s[0]}.{s[1:]}") + ("e+" if e > 0 else "e-") + str(abs(e))
    return sign + text


class _Reference(Exception):
    """The value needs the reference implementation (a key beyond the BMP)."""


def _prepare(value: Any, floats: list[int]) -> Any:
    """A copy of ``value`` with floats as placeholders (counted in ``floats``); raises on what JCS refuses."""
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise CanonicalError("not_json", "an object key is not a string")
            if not key.isascii() and max(key) > "\uffff":
                raise _Reference
        return {key: _prepare(item, floats) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_prepare(item, floats) for item in value]
    if kind is float:
        floats.append(1)
        return f"\x00{number(value)}\x00"
    if kind is int and not -_INT_LIMIT <= value <= _INT_LIMIT:
        raise CanonicalError("bad_number", f"{value} exceeds the integer range of IEEE-754 doubles")
    if value is None or kind in (str, int, bool):
        return value
    raise CanonicalError("not_json", f"a {kind.__name__} is not a JSON value")


def _reference(value: Any) -> bytes:
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalError("bad_number", str(exc)) from None


def canonicalize(value: Any, fast: bool = False) -> bytes:
    """The RFC 8785 bytes of ``value``; ``fast`` only when ``loads`` said it is plain (no floats, big integers or
    non-BMP text). Raises only ``CanonicalError``."""
    try:
        if fast:
            return _ENCODER.encode(value).encode()
        floats: list[int] = []
        try:
            text = _ENCODER.encode(_prepare(value, floats))
        except _Reference:
            return _reference(value)
        if floats:
            if text.count("\\u0000") != 2 * len(floats):
                return _reference(value)
            text = _PLACEHOLDER.sub(r"\1", text)
        return text.encode()
    except RecursionError:
        raise CanonicalError("not_json", "nested too deeply") from None
    except UnicodeEncodeError:
        raise CanonicalError("not_utf8", "a string holds a lone surrogate") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CanonicalError):
            raise
        raise CanonicalError("not_json", str(exc)) from None
