"""The shipper's per-record hot path: parse a journal line and seal it into the bytes it is stored as.

The contract is ``audit.canonical`` (strict parse, RFC 8785) and ``audit.chain.seal``; this module only takes a
faster road where it provably arrives at the same bytes, and the contract's own road everywhere else:

- ``parse``: orjson reads the line; the value is taken only when orjson's compact rendering of it is the line
  itself. That rules out duplicate keys (orjson keeps the last one, so the rendering is shorter), whitespace,
  escapes written another way, and numbers orjson would read differently; orjson refuses NaN/Infinity, lone
  surrogates, invalid UTF-8 and integers beyond 64 bits outright. Any other line goes to ``canonical.loads``,
  which decides it (and names the reason it is refused); a string with a lone surrogate escape (``"\udc00"``),
  which has no UTF-8 form to hash, is refused there as ``not_canonical``.
- ``seal``: for values without floats, integers beyond 15 digits and non-BMP characters (``Parsed.fast``),
  orjson's key-sorted compact output is the RFC 8785 form (same escapes, code point order = UTF-16 order inside
  the BMP; ``tests/audit/test_sealing.py`` checks it against the ``rfc8785`` reference property-based). Otherwise
  ``chain.seal`` + ``canonicalize``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from audit.canonical import CanonicalError, Parsed, canonicalize, dumps, loads
from audit.chain import FIELD, ChainError, Head
from audit.chain import seal as seal_doc

# In a line that is orjson's compact rendering, every number is a member value right after '":' or an array element
# right after '[' or ','. A float or a long integer there (or, harmlessly, such text inside a string) leaves the
# fast path. Candidates are found after any ':' (one fast scan) and kept only after '":', so that the times inside
# an @timestamp string ("16:36:50.75") are not taken for numbers.
_CANDIDATE = re.compile(rb"[\[,:]-?\d+(?:[.eE]|\d{15})")


def _exotic(raw: bytes) -> bool:
    at = 0
    while (match := _CANDIDATE.search(raw, at)) is not None:
        start = match.start()
        if raw[start] != 0x3A or raw[start - 1] == 0x22:  # '[' or ',', or ':' closing a key ('":')
            return True
        at = start + 1
    return False


_NON_BMP = re.compile(rb"[\xf0-\xf4]")  # a 4-byte UTF-8 sequence: sorted differently by RFC 8785 (UTF-16)
_SORTED = orjson.OPT_SORT_KEYS


def parse(raw: bytes) -> Parsed:
    """The strict parse of ``raw`` (``canonical.loads``), faster for lines in compact form."""
    try:
        value = orjson.loads(raw)
        if orjson.dumps(value) != raw:
            return _strict(raw)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # incl. nesting beyond orjson's limits
        return _strict(raw)
    return Parsed(value, not _exotic(raw) and (raw.isascii() or _NON_BMP.search(raw) is None))


def _strict(raw: bytes) -> Parsed:
    parsed = loads(raw)
    try:
        dumps(parsed.value)
    except UnicodeEncodeError:  # "\udc00": valid JSON, but no UTF-8 (so no RFC 8785) form
        raise CanonicalError("not_canonical", "a string holds a lone surrogate") from None
    return parsed


def seal(event: dict[str, Any], head: Head, fast: bool) -> tuple[bytes, Head]:
    """``event`` appended to the chain at ``head``: its stored bytes (RFC 8785, ``hash`` opening the chain object)
    and the new head. Raises ``ChainError`` or ``CanonicalError`` when it cannot be sealed."""
    if not fast:
        doc, new_head = seal_doc(event, head)
        return canonicalize(doc), new_head
    if FIELD in event:
        raise ChainError(f"the top-level field {FIELD!r} is reserved for the audit chain")
    doc = dict(event)
    link = {"id": head.chain_id, "prev_hash": head.hash, "seq": head.next_seq}
    doc[FIELD] = link
    try:
        digest = hashlib.sha256(orjson.dumps(doc, option=_SORTED)).hexdigest()
        doc[FIELD] = {"hash": digest, **link}
        data = orjson.dumps(doc, option=_SORTED)
    except orjson.JSONEncodeError:  # not expected for a value parse() called fast; the contract's road decides
        return seal(event, head, False)
    return data, Head(head.chain_id, head.next_seq + 1, digest)
