"""RFC 8785 JSON Canonicalization Scheme (JCS): the byte string every audit record is hashed over.

Parsing is strict on purpose: a journal line whose meaning a canonical re-serialisation would change (duplicate
keys, NaN/Infinity, integers beyond IEEE-754 double precision) is refused rather than silently altered.

Speed: the reference implementation (the ``rfc8785`` package) is pure Python and costs ~140 us per record. For
values without floats, without integers beyond 2**53 and without object keys outside the Basic Multilingual
Plane, JCS output is byte-identical to ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
(RFC 8785 section 3.2.2.2 escapes exactly like it; 3.2.3 sorts by UTF-16 code units, which equals code point order
inside the BMP). ``Parsed.canonical`` takes that fast path when parsing proved those conditions, and the reference
implementation otherwise; tests/audit/test_canonical.py checks the equivalence property-based.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import rfc8785

_NON_BMP = re.compile(rb"[\xf0-\xf4]|\\u[dD][89abAB]")


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
        return int(text)

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


def canonicalize(value: Any, fast: bool = False) -> bytes:
    """The RFC 8785 bytes of ``value``; ``fast`` only when ``loads`` said the fast path is exact."""
    if fast:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalError("bad_number", str(exc)) from None
    except RecursionError:
        raise CanonicalError("not_json", "nested too deeply") from None
