"""Checkpoints interoperate with C2SP signed-note / tlog-checkpoint tooling and reject what they should."""

from __future__ import annotations

import base64
import re
import stat
import subprocess
from pathlib import Path

import pytest

from audit import checkpoint as cp
from tests.audit.kit import TEE_AUDIT, keys

# The example from golang.org/x/mod/sumdb/note (the reference implementation of C2SP signed-note).
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_NOTE = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n"
           "\n"
           "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6"
           "RyyBwJnAM=\n")


def test_reference_signed_note_verifies_with_reference_verifier_key(tmp_path: Path) -> None:
    vkey = tmp_path / "peter.vkey"
    vkey.write_text(GO_VKEY + "\n")
    public = cp.load_public(vkey)
    assert cp.vkey("PeterNeumann", public) == GO_VKEY
    body, signatures = cp.parse_note(GO_NOTE)
    assert cp.verify_note(body, signatures, public, "PeterNeumann")
    assert not cp.verify_note(body.replace("answer", "question"), signatures, public, "PeterNeumann")


def test_checkpoint_body_follows_tlog_checkpoint_layout(tmp_path: Path) -> None:
    key, public = keys(tmp_path)
    note = cp.sign(cp.load_private(key), "node-1", 42, "ab" * 32)
    body, _, sigline = note.partition("\n\n")
    assert body.split("\n") == ["tee-audit/node-1", "42", base64.b64encode(bytes.fromhex("ab" * 32)).decode()]
    assert sigline.startswith("\u2014 tee-audit ") and sigline.endswith("\n")
    parsed = cp.parse(note)
    assert (parsed.chain_id, parsed.size, parsed.root_hex) == ("node-1", 42, "ab" * 32)
    assert cp.verify(parsed, cp.load_public(public))
    assert cp.verify(parsed, cp.load_public(tmp_path / "audit.vkey"))


def test_checkpoint_with_altered_size_fails_signature(tmp_path: Path) -> None:
    key, public = keys(tmp_path)
    note = cp.sign(cp.load_private(key), "node-1", 42, "ab" * 32).replace("\n42\n", "\n43\n", 1)
    assert not cp.verify(cp.parse(note), cp.load_public(public))


@pytest.mark.parametrize("text", ["", "origin\n1\n\n", "o\nx\nAAAA\n\n\u2014 k AAAAAAAA\n",
                                  "o\n1\nAAAA\n\n\u2014 k AAAAAAAA\n"])
def test_malformed_checkpoint_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(cp.CheckpointError):
        cp.parse(text)


ROOT = base64.b64encode(b"\x01" * 32).decode()


@pytest.mark.parametrize(("size", "read"), [("0", 0), ("7", 7), ("9" * 20, int("9" * 20))])
def test_checkpoint_size_is_ascii_decimal_up_to_twenty_digits(size: str, read: int) -> None:
    assert cp.parse(f"o\n{size}\n{ROOT}\n\n\u2014 k AAAAAAAA\n").size == read


@pytest.mark.parametrize("size", ["\u00b2", "\u0663", "07", "+7", " 7", "7 ", "", "1" * 21, "6" * 5000])
def test_checkpoint_size_int_would_refuse_or_misread_is_refused_for_its_reason(size: str) -> None:
    """str.isdigit takes "\u00b2" and Arabic-Indic digits; int() refuses the first and more than 4300 digits."""
    reason = f"^checkpoint size {re.escape(repr(size[:24]))} is not a decimal number$"
    with pytest.raises(cp.CheckpointError, match=reason):
        cp.parse(f"o\n{size}\n{ROOT}\n\n\u2014 k AAAAAAAA\n")


def test_keygen_writes_private_key_readable_only_by_owner_and_refuses_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "k"
    run = subprocess.run([*TEE_AUDIT, "keygen", "--out", str(out)], capture_output=True, text=True, check=False)
    assert run.returncode == 0
    assert stat.S_IMODE((out / "audit.key").stat().st_mode) == 0o600
    again = subprocess.run([*TEE_AUDIT, "keygen", "--out", str(out)], capture_output=True, text=True, check=False)
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr


def test_checkpoint_show_reports_signature_validity(tmp_path: Path) -> None:
    key, public = keys(tmp_path / "a")
    _, other = keys(tmp_path / "b")
    note = tmp_path / "cp.note"
    note.write_text(cp.sign(cp.load_private(key), "node-1", 7, "cd" * 32))
    good = subprocess.run([*TEE_AUDIT, "checkpoint", "show", str(note), "--public-key", str(public)],
                          capture_output=True, text=True, check=False)
    assert good.returncode == 0 and '"signature_valid": true' in good.stdout and '"size": 7' in good.stdout
    bad = subprocess.run([*TEE_AUDIT, "checkpoint", "show", str(note), "--public-key", str(other)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and '"signature_valid": false' in bad.stdout
