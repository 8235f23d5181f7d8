"""A minimal DER (X.690) TLV reader for the vendor certificate extensions ``cryptography`` leaves opaque.

Only what the AMD VCEK and Intel PCK extensions use: definite lengths, INTEGER, OCTET STRING, OID, SEQUENCE.
Parsing only, no cryptography. Malformed input raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterator

INTEGER, OCTET_STRING, OID, IA5_STRING, SEQUENCE, ENUMERATED = 0x02, 0x04, 0x06, 0x16, 0x30, 0x0A


def read_tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, value, next position) of the element at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("DER element truncated")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("DER length invalid")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("DER value truncated")
    return tag, data[pos:pos + length], pos + length


def iter_elements(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos < len(data):
        tag, value, pos = read_tlv(data, pos)
        yield tag, value


def decode_oid(value: bytes) -> str:
    if not value:
        raise ValueError("empty OID")
    parts = [value[0] // 40, value[0] % 40]
    acc = 0
    for byte in value[1:]:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(acc)
            acc = 0
    return ".".join(map(str, parts))


def decode_integer(value: bytes) -> int:
    if not value:
        raise ValueError("empty INTEGER")
    return int.from_bytes(value, "big", signed=True)


def integer(der: bytes) -> int:
    """A whole DER-encoded INTEGER (as AMD encodes its TCB extensions)."""
    tag, value, end = read_tlv(der)
    if tag != INTEGER or end != len(der):
        raise ValueError("expected a DER INTEGER")
    return decode_integer(value)


def oid_map(sequence_value: bytes) -> dict[str, tuple[int, bytes]]:
    """A SEQUENCE OF SEQUENCE { OID, value } (Intel's SGX extension layout) as {oid: (tag, value)}."""
    out: dict[str, tuple[int, bytes]] = {}
    for tag, item in iter_elements(sequence_value):
        if tag != SEQUENCE:
            raise ValueError("expected SEQUENCE in OID map")
        elements = list(iter_elements(item))
        if len(elements) != 2 or elements[0][0] != OID:
            raise ValueError("expected {OID, value} pair")
        out[decode_oid(elements[0][1])] = elements[1]
    return out
