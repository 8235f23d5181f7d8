"""Tree checkpoints (tee-audit v2) next to head checkpoints (v1): how a note says which it is, and what its head
extension line vouches for (audit/checkpoint.py; docs/audit.md "Transparency log"). In process, so that mutation
testing of the checkpoint module sees every rule here (docs/testing.md)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint as cp

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()
ROOT = bytes(range(32))
HEAD = "ab" * 32


def test_tree_checkpoint_is_signed_under_its_origin_and_carries_the_head() -> None:
    text = cp.sign_tree(KEY, "h1", 7, ROOT, HEAD)
    body = f"tee-audit/h1\n7\n{base64.b64encode(ROOT).decode()}\ntee-audit-head {HEAD}\n"
    assert text.startswith(body + "\n\u2014 tee-audit/h1 ")
    note = cp.parse(text)
    assert (note.origin, note.chain_id, note.size, note.root, note.head, note.body) == (
        "tee-audit/h1", "h1", 7, ROOT, bytes.fromhex(HEAD), body)
    assert [name for name, _, _ in note.signatures] == ["tee-audit/h1"]
    assert (cp.is_tree(note, PUBLIC), cp.verify(note, PUBLIC), cp.signed_any(note, PUBLIC)) == (True, False, True)


def test_head_checkpoint_is_no_tree_checkpoint_and_has_no_head_line() -> None:
    note = cp.parse(cp.sign(KEY, "h1", 7, HEAD))
    assert (note.root, note.head) == (bytes.fromhex(HEAD), None)
    assert (cp.is_tree(note, PUBLIC), cp.verify(note, PUBLIC), cp.signed_any(note, PUBLIC)) == (False, True, True)


@pytest.mark.parametrize("text", [lambda: cp.sign_tree(KEY, "h1", 7, ROOT, HEAD), lambda: cp.sign(KEY, "h1", 7, HEAD)])
def test_a_note_by_another_key_is_signed_in_neither_way(text) -> None:
    note = cp.parse(text())
    other = Ed25519PrivateKey.generate().public_key()
    assert (cp.is_tree(note, other), cp.verify(note, other), cp.signed_any(note, other)) == (False, False, False)


def test_relabelled_tree_note_verifies_as_neither() -> None:
    """Signatures cover the body only; renaming the signer to ``tee-audit`` changes the key id it must match."""
    text = cp.sign_tree(KEY, "h1", 7, ROOT, HEAD).replace("\u2014 tee-audit/h1 ", "\u2014 tee-audit ")
    note = cp.parse(text)
    assert (cp.is_tree(note, PUBLIC), cp.signed_any(note, PUBLIC)) == (False, False)


def _with_extension(*extra: str) -> cp.Checkpoint:
    body = f"tee-audit/h1\n7\n{base64.b64encode(ROOT).decode()}\n" + "".join(f"{line}\n" for line in extra)
    return cp.parse(f"{body}\n\u2014 tee-audit/h1 {base64.b64encode(b'12345' + bytes(64)).decode()}\n")


@pytest.mark.parametrize(("extra", "head"), [
    ((), None),
    ((f"tee-audit-head {HEAD}",), bytes.fromhex(HEAD)),
    (("other ext", f"tee-audit-head {HEAD}"), bytes.fromhex(HEAD)),  # extension lines in any order
    ((f"tee-audit-head {HEAD[:-2]}",), None),  # 63 hex digits
    ((f"tee-audit-head {HEAD}00",), None),  # 66
    (("tee-audit-head " + "zz" * 32,), None),  # not hex
    ((f"tee-audit-headx {HEAD}",), None),
    ((f"tee-audit-head  {HEAD}",), None),  # a second space: 65 characters
    ((f"x tee-audit-head {HEAD}",), None),
])
def test_head_is_read_only_from_a_well_formed_extension_line(extra: tuple[str, ...], head: bytes | None) -> None:
    assert _with_extension(*extra).head == head


def test_head_is_never_read_from_the_first_three_lines() -> None:
    """An origin spelled like the extension line is still the origin."""
    text = f"tee-audit-head {HEAD}\n7\n{base64.b64encode(ROOT).decode()}\n\n\u2014 x {base64.b64encode(bytes(69)).decode()}\n"
    assert cp.parse(text).head is None
