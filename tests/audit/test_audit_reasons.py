"""The audit trail's own checks, called in process through their public functions, each refusal for its reason.

The hash chain (audit/chain.py) and the C2SP checkpoints (audit/checkpoint.py) are pure; the tests that ship and
verify through ``tee-audit`` subprocesses cannot see a mutant (docs/testing.md), so every rule those modules
promise is pinned here: what a sealed record links to, what ``canonical_link`` accepts, which checkpoint texts,
signature lines and keys are refused and with which message, and which signatures count.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint as cp
from audit.canonical import canonicalize
from audit.chain import FIELD, GENESIS, ChainError, Head, canonical_link, doc_id, record_hash, seal

EVENT = {"@timestamp": "2026-01-01T00:00:00Z", "message": "domain vm-1 started", "n": 1}


# --- the hash chain ---------------------------------------------------------------------------------------------

def sealed(count: int, chain_id: str = "h1") -> list[dict]:
    head, out = Head(chain_id), []
    for i in range(count):
        doc, head = seal(dict(EVENT, n=i), head)
        out.append(doc)
    return out


def test_seal_links_each_record_to_its_predecessor() -> None:
    first, second = sealed(2)
    assert first[FIELD]["seq"] == 0 and first[FIELD]["prev_hash"] == GENESIS == "0" * 64
    assert second[FIELD] == {"id": "h1", "seq": 1, "prev_hash": first[FIELD]["hash"],
                             "hash": record_hash(second)}
    body = {**second, FIELD: {k: v for k, v in second[FIELD].items() if k != "hash"}}
    assert second[FIELD]["hash"] == hashlib.sha256(canonicalize(body)).hexdigest()


def test_seal_returns_the_next_head() -> None:
    doc, head = seal(EVENT, Head("h1", 7, "ab" * 32))
    assert head == Head("h1", 8, doc[FIELD]["hash"]) and doc[FIELD]["prev_hash"] == "ab" * 32


def test_event_carrying_the_reserved_field_is_refused_not_overwritten() -> None:
    with pytest.raises(ChainError, match="the top-level field 'chain' is reserved for the audit chain"):
        seal({**EVENT, "chain": {"seq": 99}}, Head("h1"))


def test_record_hash_ignores_only_the_stored_hash() -> None:
    (doc,) = sealed(1)
    assert record_hash({**doc, FIELD: {**doc[FIELD], "hash": "ff" * 32}}) == doc[FIELD]["hash"]
    assert record_hash({**doc, "n": 2}) != doc[FIELD]["hash"]
    assert record_hash({**doc, FIELD: {**doc[FIELD], "seq": 1}}) != doc[FIELD]["hash"]


def test_fast_and_reference_canonical_forms_hash_alike() -> None:
    (doc,) = sealed(1)
    assert record_hash(doc, fast=True) == record_hash(doc, fast=False)


def stored_line(doc: dict) -> bytes:
    return canonicalize(doc)


@pytest.fixture
def two() -> tuple[dict, dict]:
    first, second = sealed(2)
    return first, second


def test_canonical_link_accepts_the_stored_record_it_expects(two) -> None:
    first, second = two
    chain_json = canonicalize("h1")
    assert canonical_link(stored_line(first), chain_json, 0, GENESIS) == first[FIELD]["hash"]
    assert canonical_link(stored_line(second), chain_json, 1, first[FIELD]["hash"]) == second[FIELD]["hash"]


@pytest.mark.parametrize("change", ["seq", "prev", "chain", "content", "hash", "two chain members", "no hash"])
def test_canonical_link_refuses_any_other_line(two, change: str) -> None:
    first, second = two
    line, chain_json, seq, prev = stored_line(second), canonicalize("h1"), 1, first[FIELD]["hash"]
    if change == "seq":
        seq = 2
    elif change == "prev":
        prev = "00" + prev[2:]
    elif change == "chain":
        chain_json = canonicalize("h2")
    elif change == "content":
        line = line.replace(b'"n":1', b'"n":2')
    elif change == "hash":
        line = line.replace(second[FIELD]["hash"].encode(), ("0" * 64).encode())
    elif change == "two chain members":
        line = line.replace(b'"message":"', b'"message":"\\"chain\\":{', 1).replace(b'\\"chain\\":{', b'"chain":{')
    else:
        line = canonicalize({**second, FIELD: {k: v for k, v in second[FIELD].items() if k != "hash"}})
    assert canonical_link(line, chain_json, seq, prev) is None


def test_doc_id_is_chain_and_seq() -> None:
    assert doc_id("node-1", 42) == "node-1:42"


# --- checkpoints: parsing (C2SP tlog-checkpoint and signed-note) -----------------------------------------------

@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def note(key: Ed25519PrivateKey, size: int = 5, root: str = "ab" * 32, chain_id: str = "h1") -> str:
    return cp.sign(key, chain_id, size, root)


def test_signed_checkpoint_round_trips(key) -> None:
    text = note(key)
    parsed = cp.parse(text)
    assert (parsed.origin, parsed.size, parsed.root_hex, parsed.chain_id) == ("tee-audit/h1", 5, "ab" * 32, "h1")
    assert parsed.body == f"tee-audit/h1\n5\n{base64.b64encode(bytes.fromhex('ab' * 32)).decode()}\n"
    assert parsed.text == text
    ((name, key_id, signature),) = parsed.signatures
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert name == "tee-audit" and key_id == hashlib.sha256(b"tee-audit\n\x01" + raw).digest()[:4]
    assert len(signature) == 64 and cp.verify(parsed, key.public_key())


def test_origin_names_the_chain() -> None:
    assert cp.origin_for("node-1") == "tee-audit/node-1"


@pytest.mark.parametrize(("text", "message"), [
    ("tee-audit/h1\n5\nAAAA\n", "not a signed note: no empty line between body and signatures"),
    ("tee-audit/h1\n5\nAAAA\n\n\u2014 k AAAAAAAA", "not a signed note: no empty line between body and signatures"),
    ("o\n\n\u2014 k AAAAAAAA\n", "checkpoint body needs origin, size and root lines"),
    ("\n5\nAAAA\n\n\u2014 k AAAAAAAA\n", "checkpoint body needs origin, size and root lines"),
    ("o\nfive\nAAAA\n\n\u2014 k AAAAAAAA\n", "checkpoint size 'five' is not a decimal number"),
    ("o\n05\nAAAA\n\n\u2014 k AAAAAAAA\n", "checkpoint size '05' is not a decimal number"),
    ("o\n-5\nAAAA\n\n\u2014 k AAAAAAAA\n", "checkpoint size '-5' is not a decimal number"),
    ("o\n5\n!!!!\n\n\u2014 k AAAAAAAA\n", "checkpoint root is not base64"),
    ("o\n5\nAAAA\n\n\u2014 k AAAAAAAA\n", "checkpoint root is not a SHA-256 hash"),
    (f"o\n5\n{'A' * 43}=\n\n- k AAAAAAAA\n", "bad signature line '- k AAAAAAAA'"),
    (f"o\n5\n{'A' * 43}=\n\n\u2014 k !!!!\n", "signature is not base64"),
    (f"o\n5\n{'A' * 43}=\n\n\u2014 k AAAA\n", "signature too short"),
])
def test_malformed_checkpoint_is_refused_for_its_reason(text: str, message: str) -> None:
    with pytest.raises(cp.CheckpointError) as err:
        cp.parse(text)
    assert str(err.value) == message


def test_size_zero_is_a_decimal_number(key) -> None:
    assert cp.parse(note(key, size=0)).size == 0


def test_extension_lines_after_the_root_are_kept_in_the_signed_body(key) -> None:
    """tlog-checkpoint allows extension lines; they are part of what the signature covers."""
    body = cp.body_text("tee-audit/h1", 5, bytes(32)) + "extra line\n"
    signature = key.sign(body.encode())
    blob = base64.b64encode(cp.key_id(cp.KEY_NAME, key.public_key()) + signature).decode()
    parsed = cp.parse(f"{body}\n\u2014 {cp.KEY_NAME} {blob}\n")
    assert parsed.body == body and cp.verify(parsed, key.public_key())


# --- checkpoints: which signatures count -----------------------------------------------------------------------

def test_a_signature_by_another_key_does_not_count(key) -> None:
    assert not cp.verify(cp.parse(note(Ed25519PrivateKey.generate())), key.public_key())


def test_a_signature_under_another_key_name_does_not_count(key) -> None:
    parsed = cp.parse(cp.sign(key, "h1", 5, "ab" * 32, name="someone-else"))
    assert not cp.verify(parsed, key.public_key())
    assert cp.verify(parsed, key.public_key(), name="someone-else")


def test_an_altered_body_fails_the_signature(key) -> None:
    parsed = cp.parse(note(key).replace("\n5\n", "\n6\n", 1))
    assert not cp.verify(parsed, key.public_key())


def test_a_cosigned_note_verifies_with_either_key(key) -> None:
    """signed-note allows several signatures; the trusted key's line may come after a witness's."""
    witness = Ed25519PrivateKey.generate()
    body = cp.body_text("tee-audit/h1", 5, bytes(32))

    def line(k: Ed25519PrivateKey, name: str) -> str:
        blob = base64.b64encode(cp.key_id(name, k.public_key()) + k.sign(body.encode())).decode()
        return f"\u2014 {name} {blob}\n"

    parsed = cp.parse(body + "\n" + line(witness, "witness") + line(key, cp.KEY_NAME))
    assert cp.verify(parsed, key.public_key())
    assert cp.verify_note(parsed.body, parsed.signatures, witness.public_key(), "witness")


def test_a_forged_line_with_the_right_key_id_fails(key) -> None:
    body = cp.body_text("tee-audit/h1", 5, bytes(32))
    forged = base64.b64encode(cp.key_id(cp.KEY_NAME, key.public_key()) + bytes(64)).decode()
    assert not cp.verify(cp.parse(f"{body}\n\u2014 {cp.KEY_NAME} {forged}\n"), key.public_key())


# --- keys ---------------------------------------------------------------------------------------------------------

def test_generate_writes_the_key_files(tmp_path: Path) -> None:
    private, public = cp.generate(tmp_path / "k")
    assert (private, public) == (tmp_path / "k" / "audit.key", tmp_path / "k" / "audit.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = cp.load_private(private)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert cp.load_public(public).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw
    vkey = (tmp_path / "k" / "audit.vkey").read_text()
    assert vkey == cp.vkey(cp.KEY_NAME, key.public_key()) + "\n"
    assert vkey.startswith(f"tee-audit+{cp.key_id(cp.KEY_NAME, key.public_key()).hex()}+")
    loaded = cp.load_public(tmp_path / "k" / "audit.vkey")
    assert loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw
    with pytest.raises(FileExistsError):
        cp.generate(tmp_path / "k")


def test_unusable_private_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(cp.CheckpointError, match="cannot load the signing key"):
        cp.load_private(tmp_path / "missing.key")
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(cp.CheckpointError, match="not an Ed25519 private key$"):
        cp.load_private(ec_key)


def _pem_public(tmp_path: Path) -> Path:
    path = tmp_path / "ec.pub"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read"),
    ("ec", "not an Ed25519 public key$"),
    ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "ec.pub: "),
    ("tee-audit+00000000+" + base64.b64encode(b"\x02" + bytes(32)).decode(), "not an Ed25519 verifier key$"),
    ("tee-audit+00000000+" + base64.b64encode(b"\x01" + bytes(31)).decode(), "not an Ed25519 verifier key$"),
    ("tee-audit+00000000+!!!!", "neither a PEM public key nor a note verifier key$"),
    ("just-a-name", "neither a PEM public key nor a note verifier key$"),
])
def test_unusable_public_keys_are_refused(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "ec.pub"
    if content == "ec":
        _pem_public(tmp_path)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(cp.CheckpointError, match=message):
        cp.load_public(path)


def test_verifier_key_whose_base64_contains_plus_is_read(tmp_path: Path) -> None:
    for _ in range(200):  # find a key whose base64 has a "+": the split must stop at the second "+"
        key = Ed25519PrivateKey.generate()
        text = cp.vkey("tee-audit", key.public_key())
        if "+" in text.split("+", 2)[2]:
            break
    (tmp_path / "k.vkey").write_text(text + "\n")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    loaded = cp.load_public(tmp_path / "k.vkey")
    assert loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw


def test_checkpoint_json_is_not_a_note() -> None:
    with pytest.raises(cp.CheckpointError):
        cp.parse(json.dumps({"size": 5}))


def test_record_hash_is_over_the_rfc8785_number_form() -> None:
    """1e-7 is "1e-7" in RFC 8785 (ECMAScript number form), "1e-07" to Python's json: the hash takes the former."""
    (doc,) = sealed(1)
    doc = {**doc, "ratio": 1e-7}
    body = {**doc, FIELD: {k: v for k, v in doc[FIELD].items() if k != "hash"}}
    assert b'"ratio":1e-7' in canonicalize(body)
    assert record_hash(doc) == hashlib.sha256(canonicalize(body)).hexdigest()


# --- signed-note details (C2SP signed-note; golang.org/x/mod/sumdb/note behaves the same) -----------------------

def _sign_body(key: Ed25519PrivateKey, body: str, name: str = cp.KEY_NAME) -> str:
    blob = base64.b64encode(cp.key_id(name, key.public_key()) + key.sign(body.encode())).decode()
    return f"\u2014 {name} {blob}\n"


def test_signatures_start_after_the_last_empty_line(key) -> None:
    """An empty line inside the text (before an extension line) is text: the note splits at the last one."""
    body = cp.body_text("tee-audit/h1", 5, bytes(32)) + "\nextension\n"
    parsed = cp.parse(body + "\n" + _sign_body(key, body))
    assert parsed.body == body and cp.verify(parsed, key.public_key())


def test_origin_may_contain_spaces(key) -> None:
    parsed = cp.parse(cp.sign(key, "rack 7/host 3", 5, "ab" * 32))
    assert parsed.origin == "tee-audit/rack 7/host 3"


def test_missing_root_line_is_an_empty_root() -> None:
    with pytest.raises(cp.CheckpointError, match="^checkpoint root is not a SHA-256 hash$"):
        cp.parse("o\n5\n\n\u2014 k AAAAAAAA\n")


def test_a_same_named_line_by_another_key_does_not_hide_the_trusted_one(key) -> None:
    """Two lines named tee-audit: the first by another key (other key id) is skipped, the second verifies."""
    impostor = Ed25519PrivateKey.generate()
    body = cp.body_text("tee-audit/h1", 5, bytes(32))
    parsed = cp.parse(body + "\n" + _sign_body(impostor, body) + _sign_body(key, body))
    assert cp.verify(parsed, key.public_key())


def test_bad_signature_line_is_quoted_to_40_characters() -> None:
    line = "- " + "x" * 60
    with pytest.raises(cp.CheckpointError) as err:
        cp.parse(f"o\n5\n{'A' * 43}=\n\n{line}\n")
    assert str(err.value) == f"bad signature line {line[:40]!r}"


@pytest.mark.parametrize(("line", "message"), [
    ("\u2014 tee audit AAAAAAAA", "signature is not base64"),  # a key name holds no space
    ("\u2014 tee-audit AAAAAAAA ", "signature is not base64"),  # nor does the base64 blob
])
def test_signature_line_fields_are_split_exactly(line: str, message: str) -> None:
    with pytest.raises(cp.CheckpointError, match=f"^{message}$"):
        cp.parse(f"o\n5\n{'A' * 43}=\n\n{line}\n")


def test_shortest_signature_line_is_read(key) -> None:
    """Four bytes of key id and one of signature: parsed (it cannot verify, which is verify's business)."""
    parsed = cp.parse(f"tee-audit/h1\n5\n{'A' * 43}=\n\n\u2014 tee-audit {base64.b64encode(bytes(5)).decode()}\n")
    assert parsed.signatures == (("tee-audit", bytes(4), bytes(1)),)
    assert not cp.verify(parsed, key.public_key())


def test_signature_blob_ending_in_x_is_read() -> None:
    parsed = cp.parse(f"o\n5\n{'A' * 43}=\n\n\u2014 k AAAAAAAX\n")
    assert parsed.signatures == (("k", base64.b64decode("AAAAAAAX")[:4], base64.b64decode("AAAAAAAX")[4:]),)


def test_generate_creates_missing_parent_directories(tmp_path: Path) -> None:
    private, _ = cp.generate(tmp_path / "etc" / "tee-audit")
    assert private.exists()


def test_verifier_key_file_that_is_not_utf8_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "k.vkey"
    path.write_bytes(b"tee-audit+00000000+\xff\xfe")
    with pytest.raises(cp.CheckpointError, match="neither a PEM public key nor a note verifier key$"):
        cp.load_public(path)
