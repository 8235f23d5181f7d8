"""Open bug (issue 17, docs/testing.md "What it found"): a forged line past the last checkpoint that is framed like a
record but is not one still takes ``canonical_link``'s shortcut on both verify paths. Kept apart from
test_forged_tail.py and out of the mutation selections (tests/mutation/modules.toml): a strict xfail that passes
under a mutant would count a mutant that happens to fix the bug as killed."""

from __future__ import annotations

import pytest

from audit.readers.localstore import records_of_lines
from audit.verify import verify
from tests.audit.test_forged_tail import CHAIN, KEY, forge, genuine

# Framing is all canonical_link can check without parsing. A forged last line framed like the shipper's but holding
# the member inside another object, or bytes elsewhere that are not JSON or not RFC 8785, still takes the shortcut
# on both paths (an INTACT report counting it as a record), where the full parse reports it. Sound only with the
# lines nothing vouches for (past the last checkpoint) parsed in full: a change to audit/verify.py, left to its
# owner (reported with issue 17).
UNFRAMED: dict[str, tuple[bytes, bytes, tuple[str, int | None]]] = {
    "member nested in another object": (b'{"x":{', b"}}", ("inserted", None)),
    "not JSON before the member": (b'{"a":,', b"}", ("inserted", None)),
    "respelled number before the member": (b'{"a":1.0,', b"}", ("modified", 3)),
}


@pytest.mark.xfail(strict=True, reason="bug: lines past the last checkpoint take canonical_link's shortcut "
                   "(audit/verify.py parse_record and scan_chunk), reported with issue 17")
@pytest.mark.parametrize("name", list(UNFRAMED))
def test_forged_last_line_framed_like_a_record_is_reported(name: str) -> None:
    before, after, finding = UNFRAMED[name]
    lines, head = genuine(3)
    full = verify(CHAIN, records_of_lines([*lines, forge(before, head, after)], CHAIN), [], KEY.public_key())
    assert [(f.kind, f.seq) for f in full.findings] == [finding]
