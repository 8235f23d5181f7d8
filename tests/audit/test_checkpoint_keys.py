"""Verifier keys in the note form ``name+id+base64(0x01 || key)`` (C2SP signed-note), as a witness policy names the
log's key, and the one spelling a signature may have. In process, for mutation testing of audit/checkpoint.py."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint as cp


def _key_with_plus() -> Ed25519PrivateKey:
    """A key whose vkey's base64 holds a "+", the separator: only the first two separate fields."""
    while True:
        key = Ed25519PrivateKey.generate()
        if "+" in cp.vkey("tee-audit/h1", key.public_key()).split("+", 2)[2]:
            return key


def test_note_verifier_key_gives_the_raw_public_key() -> None:
    key = _key_with_plus()
    text = cp.vkey("tee-audit/h1", key.public_key())
    raw = cp.raw_public(key.public_key())
    assert len(raw) == 32 and raw == key.public_key().public_bytes_raw()
    assert cp.load_public_text(f"  {text}\n") == raw


LONG = "not a key " * 8  # longer than the 60 characters a message quotes
B64 = base64.b64encode


@pytest.mark.parametrize(("text", "message"), [
    (LONG, f"{LONG[:60]!r} is not a note verifier key"),
    ("tee-audit+0123abcd", "'tee-audit+0123abcd' is not a note verifier key"),
    ("tee-audit+0123abcd+AQ!" + B64(b"\x01" + bytes(32)).decode()[2:], None),  # outside base64: refused, not skipped
    ("tee-audit+0123abcd+" + B64(b"\x02" + bytes(32)).decode(), "not an Ed25519 verifier key"),
    ("tee-audit+0123abcd+" + B64(b"\x01" + bytes(31)).decode(), "not an Ed25519 verifier key"),
    ("tee-audit+0123abcd+" + B64(b"\x01" + bytes(33)).decode(), "not an Ed25519 verifier key"),
    (LONG + "+id+" + B64(b"\x02" + bytes(32)).decode(), f"{(LONG + '+id+')[:60]!r} is not an Ed25519 verifier key"),
])
def test_malformed_note_verifier_key_is_refused_with_its_reason(text: str, message: str | None) -> None:
    with pytest.raises(cp.CheckpointError) as err:
        cp.load_public_text(text)
    if message is None:
        assert str(err.value).endswith("is not a note verifier key")
    elif message.startswith("'"):
        assert str(err.value) == message
    else:
        assert str(err.value) == f"{text[:60]!r} is {message}"


def test_signature_with_nonzero_padding_bits_is_refused() -> None:
    """68 bytes take one "=": the last character's two low bits are padding, which a lax decoder ignores."""
    blob = B64(bytes(68)).decode()
    assert blob.endswith("A=")
    note = f"tee-audit/h1\n1\n{B64(bytes(32)).decode()}\n\n\u2014 tee-audit {blob[:-2]}B=\n"
    with pytest.raises(cp.CheckpointError) as err:
        cp.parse(note)
    assert str(err.value) == "signature is not in canonical base64"
