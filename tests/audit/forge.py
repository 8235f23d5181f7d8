"""What an attacker with write access to a sink (but not the signing key) can build: correctly linked records that
continue a stored chain, in the very bytes the shipper writes, and checkpoint notes signed by another key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from audit import checkpoint as cp
from audit.canonical import canonicalize
from audit.chain import Head, seal


def forged_records(after: dict[str, Any], count: int) -> list[tuple[int, bytes]]:
    """``count`` records linked to the stored record ``after`` (seq, prev_hash and hash all correct)."""
    chain = after["chain"]
    head = Head(chain["id"], chain["seq"] + 1, chain["hash"])
    out = []
    for i in range(count):
        event = {"@timestamp": "2026-11-01T00:00:00.000000Z", "message": f"nothing happened {i}",
                 "event": {"action": "started", "kind": "event"}, "host": {"name": "h1"}}
        doc, head = seal(event, head)
        out.append((head.next_seq - 1, canonicalize(doc)))
    return out


def last_stored(store: Path, chain: str = "h1") -> dict[str, Any]:
    segment = max((store / chain).glob("records-*.jsonl"))
    return json.loads(segment.read_bytes().splitlines()[-1])


def foreign_note(directory: Path, chain: str, size: int, root: str) -> str:
    """A well-formed C2SP note for this chain and size, signed by a key that is not the shipper's."""
    cp.generate(directory)
    return cp.sign(cp.load_private(directory / "audit.key"), chain, size, root)
