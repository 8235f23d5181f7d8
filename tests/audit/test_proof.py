"""The shipped local store as a transparency log: C2SP tiles, tree checkpoints, receipts (prove / verify-proof).

One real shipper run (600 records: two full level-0 tiles, a partial one, a partial level-1 tile) is shared by the
tests; the receipts are checked by the real CLI, after the records were deleted, and with every byte flipped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint as cp
from audit import cosign, merkle, proof, proof_dictionary
from audit.prove_cli import ProveError, prove_store
from audit.readers import localstore as reader
from audit.sinks import localstore
from audit.tiles import TileReader, index_path, tile_path
from tests.audit.kit import TEE_AUDIT, keys, ship_once, write_journal

RECORDS = 600
CHAIN = "h1"


class Log:
    def __init__(self, tmp: Path) -> None:
        self.key_file, self.public_file = keys(tmp / "keys")
        self.public = cp.load_public(self.public_file)
        journal = tmp / "journal.jsonl"
        write_journal(journal, RECORDS)
        self.store = tmp / "store"
        assert ship_once([journal], self.key_file, tmp / "spool", store=self.store, every=100) == 0
        self.dir = self.store / CHAIN
        self.lines = list(localstore.read_lines(self.dir))
        self.tree = merkle.MemoryTree([merkle.leaf_hash(line) for line in self.lines])


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    return Log(tmp_path_factory.mktemp("log"))


def witness_key(name: str) -> tuple[Ed25519PrivateKey, str]:
    """A witness key pair; the verifier key in litewitness's text form."""
    private = Ed25519PrivateKey.generate()
    return private, vkey_text(name, private.public_key().public_bytes_raw())


def vkey_text(name: str, raw: bytes) -> str:
    """The verifier key text of the Ed25519 public key ``raw`` named ``name`` (cosignature/v1)."""
    blob = base64.b64encode(b"\x04" + raw).decode()
    return f"{name}+{cosign.key_id(name, raw).hex()}+{blob}"


def cosign_line(note_text: str, name: str, private: Ed25519PrivateKey) -> str:
    """A C2SP tlog-cosignature line as a witness would add it (the signing side lives in the witness, not here)."""
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    stamp = int(time.time())
    sig = private.sign(cosign.message(cp.parse(note_text), stamp))
    blob = base64.b64encode(cosign.key_id(name, raw) + struct.pack(">Q", stamp) + sig).decode()
    return f"\u2014 {name} {blob}\n"


def test_tile_paths_follow_c2sp_tlog_tiles() -> None:
    assert index_path(1234067) == "x001/x234/067"
    assert index_path(5) == "005"
    assert tile_path(1, 1234067, 8) == "tile/1/x001/x234/067.p/8"
    assert tile_path(0, 0) == "tile/0/000"


def test_tiles_hold_the_records_leaf_hashes_and_full_tile_roots(log: Log) -> None:
    leaves = [merkle.leaf_hash(line) for line in log.lines]
    assert (log.dir / "tile/0/000").read_bytes() == b"".join(leaves[:256])
    assert (log.dir / "tile/0/001").read_bytes() == b"".join(leaves[256:512])
    assert (log.dir / "tile/0/002.p/88").read_bytes() == b"".join(leaves[512:600])
    assert not (log.dir / "tile/0/000.p").exists(), "partial tiles are dropped once the full tile exists"
    level1 = (log.dir / "tile/1/000.p/2").read_bytes()
    assert level1 == log.tree.subtree(8, 0) + log.tree.subtree(8, 1)
    assert sorted(p.name for p in (log.dir / "tile/0/002.p").iterdir()) == ["88"], "only the newest width is kept"
    assert TileReader(log.dir).size() == RECORDS


def test_every_checkpoint_is_a_signed_tree_checkpoint_of_the_records(log: Log) -> None:
    notes = [cp.parse(t) for t in localstore.read_checkpoints(log.dir)]
    assert [n.size for n in notes] == list(range(100, 601, 100))
    for note in notes:
        assert cp.is_tree(note, log.public) and not cp.verify(note, log.public)
        assert note.root == merkle.root(log.tree.subtree, note.size)
        assert note.head is not None and note.head.hex() == log.lines[note.size - 1].split(b'"hash":"')[1][:64].decode()


def test_proofs_from_the_tiles_equal_proofs_from_the_whole_tree(log: Log) -> None:
    tiles = TileReader(log.dir)
    for size in (1, 255, 256, 257, 511, 512, 600):
        assert merkle.root(tiles.subtree, size) == merkle.root(log.tree.subtree, size)
        for index in {0, size // 2, size - 1}:
            assert merkle.inclusion_proof(tiles.subtree, index, size) == merkle.inclusion_proof(
                log.tree.subtree, index, size)
    assert merkle.consistency_proof(tiles.subtree, 300, 600) == merkle.consistency_proof(log.tree.subtree, 300, 600)


def test_record_lookup_by_binary_search_finds_every_record(log: Log) -> None:
    lay = reader.layout(log.store, CHAIN)
    for seq in (0, 1, 299, 598, 599):
        assert reader.find_record(lay, seq) == log.lines[seq]
    assert reader.find_record(lay, 600) is None


def test_receipt_verifies_offline_after_the_records_are_deleted(log: Log, tmp_path: Path) -> None:
    receipt = tmp_path / "r.tlog-proof"
    run = subprocess.run([*TEE_AUDIT, "prove", "--store", str(log.store), "--seq", "321", "--out", str(receipt)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert len(receipt.read_bytes()) < 2048
    copy = tmp_path / "copy"
    shutil.copytree(log.store, copy)
    shutil.rmtree(copy)  # retention, or the host, removed everything: the receipt alone must do
    run = subprocess.run([*TEE_AUDIT, "verify-proof", str(receipt), "--public-key", str(log.public_file)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("VALID: record 321 of chain h1 is in the log's tree of size 600")


def test_prove_refuses_a_seq_the_checkpoint_does_not_cover(log: Log) -> None:
    note = (log.dir / "checkpoints" / f"{100:020d}.note").read_text()
    with pytest.raises(ProveError, match="size 100 does not cover seq 100"):
        prove_store(log.store, CHAIN, 100, note)


def _receipt_with_witness(log: Log) -> tuple[str, cosign.WitnessKey]:
    private, vkey = witness_key("witness.example/w1")
    note = localstore.read_checkpoints(log.dir)[-1]
    text = prove_store(log.store, CHAIN, 77, note + cosign_line(note, "witness.example/w1", private))
    return text, cosign.WitnessKey.parse(vkey)


def test_no_flipped_byte_makes_a_witnessed_receipt_prove_anything_else(log: Log) -> None:
    """Every flip is refused, except one that leaves the compressed record inflating to the same bytes (DEFLATE's
    free padding bits): that receipt still proves exactly the original record, index and checkpoint."""
    text, witness = _receipt_with_witness(log)
    proven = proof.check(text, log.public, [witness], 1)
    assert proven["seq"] == 77
    data = text.encode()
    extra = range(data.index(b"\nextra ") + 7, data.index(b"\nindex "))
    for at in range(len(data)):
        forged = bytearray(data)
        forged[at] ^= 1 << (at % 8)
        try:
            forged_text = bytes(forged).decode("utf-8")
        except UnicodeDecodeError:
            continue  # refused before parsing by verify-proof: "not UTF-8 text"
        try:
            same = proof.check(forged_text, log.public, [witness], 1)
        except proof.ReceiptError:
            continue
        assert at in extra and same == proven, f"byte {at} flipped and the receipt proves {same}"


def _with_extra(text: str, extra: bytes) -> str:
    """The receipt with these bytes, base64-encoded, as its extra line."""
    lines = text.split("\n")
    return "\n".join([lines[0], f"extra {base64.b64encode(extra).decode()}", *lines[2:]])


def _deflated(data: bytes, dictionary: bytes | None = None) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY, *([dictionary] if dictionary
                                                                                             else []))
    return packer.compress(data) + packer.flush()


def test_the_record_rides_compressed_with_the_named_dictionary(log: Log) -> None:
    """zlib (RFC 1950) with FDICT set and the dictionary's Adler-32 as DICTID: an independent verifier can inflate it."""
    text, _ = _receipt_with_witness(log)
    packed = base64.b64decode(text.split("\n")[1].removeprefix("extra "))
    assert packed[1] & 0x20 and int.from_bytes(packed[2:6], "big") == zlib.adler32(proof_dictionary.V1)
    body = zlib.decompressobj(zdict=proof_dictionary.V1).decompress(packed)
    stored = log.lines[77]
    own = json.loads(stored)["chain"]["hash"]  # the SHA-256 of the body: put back by the verifier
    assert body == stored.replace(f'"hash":"{own}",'.encode(), b"") and hashlib.sha256(body).hexdigest() == own
    assert len(packed) < 0.6 * len(stored)


def test_the_dictionary_is_frozen() -> None:
    """Receipts name it by this Adler-32: a changed dictionary would make every receipt made with it unreadable."""
    assert (zlib.adler32(proof_dictionary.V1), len(proof_dictionary.V1)) == (3475629503, 2198)
    assert proof_dictionary.BY_ID[3475629503] is proof_dictionary.V1


@pytest.mark.parametrize("extra", [lambda record: record, lambda record: _deflated(record)],
                         ids=["uncompressed (receipts before compression)", "zlib without a dictionary"])
def test_other_encodings_of_the_same_record_prove_the_same(log: Log, extra) -> None:  # type: ignore[no-untyped-def]
    text, witness = _receipt_with_witness(log)
    assert proof.check(_with_extra(text, extra(log.lines[77])), log.public, [witness], 1) == \
        proof.check(text, log.public, [witness], 1)


@pytest.mark.parametrize(("extra", "reason"), [
    (lambda record: b"[" + record, "the extra line holds neither a record nor a zlib stream"),
    (lambda record: _deflated(record, b"another dictionary"), "compressed with an unknown dictionary \\(id "),
    (lambda record: _deflated(record, proof_dictionary.V1)[:-9], "truncated or followed by other bytes"),
    (lambda record: _deflated(record, proof_dictionary.V1) + b"\0", "truncated or followed by other bytes"),
    (lambda record: _deflated(record, proof_dictionary.V1)[:-1] + b"\0", "corrupt .*incorrect data check"),
    (lambda record: _deflated(b"{" + b" " * (proof.RECORD_LIMIT + 1)), "inflates past 4194304 bytes"),
])
def test_a_bad_compressed_record_fails_for_its_one_reason(log: Log, extra, reason: str) -> None:  # type: ignore[no-untyped-def]
    text, witness = _receipt_with_witness(log)
    with pytest.raises(proof.ReceiptError, match=reason):
        proof.check(_with_extra(text, extra(log.lines[77])), log.public, [witness], 1)


def _with_record(text: str, record: bytes) -> str:
    """The receipt with another record in its extra line (compressed as prove does), all else kept."""
    receipt = proof.parse(text)
    return proof.build(record, receipt.index, list(receipt.proof), receipt.note)


def _flip_record(text: str) -> str:
    """The forger edits the record; its hash is recomputed by the verifier, so it is self-consistent but not the
    logged one."""
    return _with_record(text, proof.parse(text).record.replace(b"vm-77", b"vm-78"))


def _flip_whole_record(text: str) -> str:
    """The same edit in a receipt carrying the whole record (the form before compression): its hash is stale."""
    return _with_extra(text, proof.parse(text).record.replace(b"vm-77", b"vm-78"))


def _respelled_body(text: str) -> str:
    """The hashed body in a non-RFC 8785 spelling: the hash the verifier puts back is not the record's own."""
    record = proof.parse(text).record
    own = json.loads(record)["chain"]["hash"]
    return _with_extra(text, _deflated(record.replace(f'"hash":"{own}",'.encode(), b"").replace(b":", b": ", 1)))


def _flip_proof(text: str) -> str:
    first = base64.b64encode(proof.parse(text).proof[0]).decode()
    return text.replace(first, base64.b64encode(b"\xff" + proof.parse(text).proof[0][1:]).decode())


def _flip_root(text: str) -> str:
    note = cp.parse(proof.parse(text).note)
    return text.replace(base64.b64encode(note.root).decode(), base64.b64encode(b"\x00" * 32).decode())


def _other_index(text: str) -> str:
    return text.replace("\nindex 77\n", "\nindex 76\n")


@pytest.mark.parametrize(("forge", "reason"), [
    (_flip_record, "the record is not entry 77 of the signed tree: inclusion proof leads to another root"),
    (_flip_whole_record, "the record's content does not match its own hash"),
    (_respelled_body, "the record's content does not match its own hash"),
    (_flip_proof, "the record is not entry 77 of the signed tree"),
    (_flip_root, "the checkpoint is not a tree checkpoint signed by the log's public key"),
    (_other_index, "the record's seq 77 is not the receipt's index 76"),
])
def test_forged_receipt_fails_for_its_one_reason(log: Log, forge, reason: str) -> None:  # type: ignore[no-untyped-def]
    text, witness = _receipt_with_witness(log)
    with pytest.raises(proof.ReceiptError, match=reason):
        proof.check(forge(text), log.public, [witness], 1)


def test_record_rehashed_after_its_edit_is_not_in_the_tree(log: Log) -> None:
    """In a receipt carrying the whole record, the forger recomputes the record's own hash: the record is
    self-consistent, but not the logged one."""
    text, witness = _receipt_with_witness(log)
    from audit.canonical import canonicalize, loads
    from audit.chain import record_hash

    doc = loads(proof.parse(text).record).value
    doc["message"] = "domain vm-78 started"
    doc["chain"]["hash"] = record_hash(doc)
    forged = _with_extra(text, canonicalize(doc))
    with pytest.raises(proof.ReceiptError, match="is not entry 77 of the signed tree: inclusion proof leads to "
                                                 "another root"):
        proof.check(forged, log.public, [witness], 1)


def test_receipt_without_the_required_witness_is_refused(log: Log) -> None:
    text, _ = _receipt_with_witness(log)
    _, other = witness_key("witness.example/w2")
    with pytest.raises(proof.ReceiptError, match=r"0 of the 1 witnesses given cosigned the checkpoint \(none\); 1"):
        proof.check(text, log.public, [cosign.WitnessKey.parse(other)], 1)


def test_one_witness_given_twice_cannot_meet_a_quorum_of_two(log: Log, tmp_path: Path) -> None:
    """A quorum counts signers: the same witness key twice is refused, not counted as two cosignatures."""
    text, witness = _receipt_with_witness(log)
    receipt, vkey = tmp_path / "r.tlog-proof", tmp_path / "w.vkey"
    receipt.write_text(text)
    vkey.write_text(vkey_text(witness.name, witness.public.public_bytes_raw()))
    run = subprocess.run([*TEE_AUDIT, "verify-proof", str(receipt), "--public-key", str(log.public_file),
                          "--witness-key", str(vkey), "--witness-key", str(vkey), "--quorum", "2"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert (run.returncode, run.stdout) == (2, ""), run.stdout
    assert "witness 'witness.example/w1' is listed twice (by name or by key)" in run.stderr, run.stderr


@pytest.mark.parametrize(("lines", "reason"), [
    (["witness w1 {w1}", "witness w1 {w1}", "quorum 2"], "witness 'w1' is listed twice"),
    (["witness w1 {w1}", "witness w2 {w1_as_w2}", "quorum 2"], "witness 'w2' is listed twice"),
    (["witness w1 {w1}", "quorum \u00b2"], "not a policy line: 'quorum \u00b2'"),
    (["witness w1 {w1}", "quorum " + "1" * 5000], "not a policy line"),
])
def test_a_policy_that_counts_one_witness_twice_is_refused(tmp_path: Path, lines: list[str], reason: str) -> None:
    private, w1 = witness_key("w1")
    w1_as_w2 = vkey_text("w2", private.public_key().public_bytes_raw())  # the same key under another name
    policy = tmp_path / "policy"
    policy.write_text("\n".join(lines).format(w1=w1, w1_as_w2=w1_as_w2) + "\n")
    with pytest.raises(cosign.WitnessKeyError, match=re.escape(reason)):
        cosign.load_policy(policy)


def test_non_utf8_receipt_is_invalid_not_a_crash(log: Log, tmp_path: Path) -> None:
    receipt = tmp_path / "bad.tlog-proof"
    receipt.write_bytes(b"c2sp.org/tlog-proof@v1\n\xff\n")
    run = subprocess.run([*TEE_AUDIT, "verify-proof", str(receipt), "--public-key", str(log.public_file)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1 and run.stdout.startswith("INVALID: the receipt is not UTF-8 text"), run.stdout


def test_checkpoint_show_knows_tree_checkpoints(log: Log) -> None:
    note = log.dir / "checkpoints" / f"{600:020d}.note"
    run = subprocess.run([*TEE_AUDIT, "checkpoint", "show", str(note), "--public-key", str(log.public_file)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0 and '"signature_valid": true' in run.stdout and '"kind": "tree"' in run.stdout
