"""Attacks on receipts whose record rides as its compressed hashed body (audit/proof.py), by a host operator who
wants an auditor's ``verify-proof`` to show a record, seq, chain or tree size the log did not sign.

Each forged receipt is built here from a genuine one (the shared 600-record log of test_proof.py, record 77,
cosigned by one witness) and is refused for its one reason, with every earlier check passing; a re-encoding that
proves the same thing (DEFLATE and zlib leave choices to the encoder) must return exactly the genuine result.
Exotic records (floats, non-BMP keys, escapes) the shared log cannot hold are sealed into a small tree here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from audit import checkpoint as cp
from audit import merkle, proof
from audit.canonical import canonicalize
from audit.chain import Head, seal
from audit.cosign import WitnessKey
from audit.proof_dictionary import V1
from audit.prove_cli import prove_store
from tests.audit.kit import TEE_AUDIT
from tests.audit.test_proof import CHAIN, RECORDS, Log, _receipt_with_witness, _with_extra

SEQ = 77  # the record _receipt_with_witness proves
NOT_A_RECORD = re.escape(proof.NOT_A_RECORD)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    return Log(tmp_path_factory.mktemp("log"))


@pytest.fixture(scope="module")
def genuine(log: Log) -> tuple[str, WitnessKey, dict[str, Any]]:
    """The genuine receipt for record 77, its witness, and what it proves."""
    text, witness = _receipt_with_witness(log)
    return text, witness, proof.check(text, log.public, [witness], 1)


def _check(log: Log, genuine: tuple[str, WitnessKey, dict[str, Any]], text: str) -> dict[str, Any]:
    return proof.check(text, log.public, [genuine[1]], 1)


def _doc(log: Log, seq: int = SEQ) -> dict[str, Any]:
    return json.loads(log.lines[seq])


def _body(doc: dict[str, Any]) -> bytes:
    """The hashed body of ``doc`` (RFC 8785, without ``chain.hash``), as prove writes it before compressing."""
    doc = json.loads(json.dumps(doc))
    doc["chain"].pop("hash", None)
    return canonicalize(doc)


def _packed(data: bytes, wbits: int = zlib.MAX_WBITS, level: int = 9, dictionary: bytes | None = V1) -> bytes:
    packer = zlib.compressobj(level, zlib.DEFLATED, wbits, 9, zlib.Z_DEFAULT_STRATEGY,
                              *([dictionary] if dictionary is not None else []))
    return packer.compress(data) + packer.flush()


def _header(cmf: int, flg_high: int) -> bytes:
    """An RFC 1950 §2.2 header: CMF, and FLG with FCHECK set so that CMF*256 + FLG is a multiple of 31."""
    flg = flg_high & 0xE0
    return bytes([cmf, flg + (31 - (cmf * 256 + flg) % 31) % 31])


def _extra_text(text: str) -> str:
    return text.split("\n")[1].removeprefix("extra ")


def _with_extra_text(text: str, extra: str) -> str:
    lines = text.split("\n")
    return "\n".join([lines[0], f"extra {extra}", *lines[2:]])


# --- Found by these attacks, fixed in audit/proof.py: tracebacks, and a reason printing a second line --------

def _big_int_body(log: Log) -> bytes:
    """A body holding a 5000-digit integer: Python's int() refuses it (a ValueError, which canonical.loads turns
    into a CanonicalError)."""
    return _body(_doc(log)).replace(b'"ecs":', b'"big":' + b"7" * 5000 + b',"ecs":')


def _spoofing_seq(log: Log) -> bytes:
    doc = _doc(log)
    doc["chain"]["seq"] = f"{SEQ}\nVALID: record {SEQ} of chain {CHAIN} is in the log's tree of size {RECORDS}"
    return _body(doc)


CRASHES = {
    "index ² (isdigit, but int() refuses it)": (
        lambda log, text: text.replace(f"\nindex {SEQ}\n", "\nindex \u00b2\n"),
        "the receipt's index line is not 'index <decimal>'"),
    "index of 5000 digits (int() refuses past 4300)": (
        lambda log, text: text.replace(f"\nindex {SEQ}\n", "\nindex " + "1" * 5000 + "\n"),
        "the receipt's index line is not 'index <decimal>'"),
    "checkpoint size ²": (
        lambda log, text: text.replace(f"tee-audit/{CHAIN}\n{RECORDS}\n", f"tee-audit/{CHAIN}\n\u00b2\n"),
        "the checkpoint cannot be read: checkpoint size '²' is not a decimal number"),
    "checkpoint size of 5000 digits": (
        lambda log, text: text.replace(f"tee-audit/{CHAIN}\n{RECORDS}\n", f"tee-audit/{CHAIN}\n{'6' * 5000}\n"),
        "the checkpoint cannot be read: checkpoint size '666666666666666666666666' is not a decimal number$"),
    "compressed body with a 5000-digit integer": (
        lambda log, text: _with_extra(text, _packed(_big_int_body(log))), NOT_A_RECORD),
    "whole record with a 5000-digit integer": (
        lambda log, text: _with_extra(text, log.lines[SEQ].replace(b'"ecs":', b'"big":' + b"7" * 5000 + b',"ecs":')),
        NOT_A_RECORD),
    "seq holding a newline and a VALID line": (
        lambda log, text: _with_extra(text, _packed(_spoofing_seq(log))),
        (r"the record's seq \"77\\nVALID: record 77 of chain h1 is in the log's tree of size 600\" is not the "
         r"receipt's index 77$")),
}


@pytest.mark.parametrize("name", list(CRASHES))
def test_input_that_crashed_the_verifier_is_refused_for_one_reason(log: Log, genuine, name: str) -> None:  # type: ignore[no-untyped-def]
    forge, reason = CRASHES[name]
    with pytest.raises(proof.ReceiptError, match=reason) as caught:
        _check(log, genuine, forge(log, genuine[0]))
    assert "\n" not in str(caught.value), "one reason, on one line: an INVALID output must not print a VALID line"


@pytest.mark.parametrize("name", list(CRASHES))
def test_verify_proof_cli_prints_one_invalid_line_never_a_traceback(log: Log, genuine, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                    name: str) -> None:
    forge, reason = CRASHES[name]
    receipt = tmp_path / "forged.tlog-proof"
    receipt.write_text(forge(log, genuine[0]))
    base = [*TEE_AUDIT, "verify-proof", str(receipt), "--public-key", str(log.public_file)]
    run = subprocess.run(base, capture_output=True, text=True, timeout=60, check=False)
    assert (run.returncode, run.stderr, run.stdout.count("\n")) == (1, "", 1), run.stdout + run.stderr
    assert run.stdout.startswith("INVALID: "), run.stdout
    run = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert (run.returncode, run.stderr) == (1, ""), run.stderr
    answer = json.loads(run.stdout)
    assert answer["valid"] is False and re.search(reason, answer["reason"])


@pytest.mark.parametrize(("index", "reason"), [
    ("077", "the receipt's index line is not 'index <decimal>'"),
    ("+77", "the receipt's index line is not 'index <decimal>'"),
    (" 77", "the receipt's index line is not 'index <decimal>'"),
    ("77 ", "the receipt's index line is not 'index <decimal>'"),
    ("\u0667\u0667", "the receipt's index line is not 'index <decimal>'"),  # Arabic-Indic 77: int() reads it
    ("1" * 21, "the receipt's index line is not 'index <decimal>'"),
    ("18446744073709551615", "the record's seq 77 is not the receipt's index 18446744073709551615"),
])
def test_the_index_line_is_ascii_decimal_up_to_a_uint64(log: Log, genuine, index: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(proof.ReceiptError, match=reason):
        _check(log, genuine, genuine[0].replace(f"\nindex {SEQ}\n", f"\nindex {index}\n"))


def test_index_0_is_a_decimal(log: Log) -> None:
    assert proof.check(prove_store(log.store, CHAIN, 0), log.public)["seq"] == 0


# --- The hashed body: what the verifier rebuilds must be the stored record, or it is refused ------------------

def test_the_genuine_receipt_shows_exactly_the_stored_record(log: Log, genuine) -> None:  # type: ignore[no-untyped-def]
    """The bytes whose leaf hash is checked are the stored line itself, and the record shown is their parse."""
    assert proof.parse(genuine[0]).record == log.lines[SEQ]
    assert genuine[2] == {"valid": True, "chain": CHAIN, "seq": SEQ, "tree_size": RECORDS,
                          "witnesses": ["witness.example/w1"], "record": _doc(log)}


def _hash_moved(log: Log, where: str) -> bytes:
    """A canonical body whose record's own hash sits elsewhere than ``chain.hash``: the verifier puts another one
    there, and the rebuilt record is not the logged one."""
    doc = _doc(log)
    own = doc["chain"].pop("hash")
    if where == "top":
        doc["hash"] = own
    else:
        doc["chain"]["link"] = {"hash": own}
    return canonicalize(doc)


def _escaped(log: Log) -> bytes:
    """The same value, one character spelled as a JSON escape: not RFC 8785, so the hash put back is not its own."""
    return _body(_doc(log)).replace(f"vm-{SEQ}".encode(), f"\\u0076m-{SEQ}".encode())


def _duplicate_message(log: Log) -> bytes:
    """A parser keeping the first of two keys would show "vm-78"; one keeping the last, the logged record."""
    body = _body(_doc(log))
    return body.replace(b'"message":', f'"message":"domain vm-{SEQ + 1} started","message":'.encode())


def _with_hash(log: Log, value: Any) -> bytes:
    doc = _doc(log)
    doc["chain"]["hash"] = value
    return canonicalize(doc)


def _with_chain(log: Log, value: Any) -> bytes:
    doc = _doc(log)
    doc["chain"] = value
    return canonicalize(doc)


def _without_chain(log: Log) -> bytes:
    doc = _doc(log)
    del doc["chain"]
    return canonicalize(doc)


def _with_field(log: Log, text: bytes) -> bytes:
    return _body(_doc(log)).replace(b'"ecs":', b'"x":' + text + b',"ecs":')


BODIES = {
    "chain.hash moved to the top level": (lambda log: _hash_moved(log, "top"),
                                          "is not entry 77 of the signed tree: inclusion proof leads to another root"),
    "chain.hash nested deeper in chain": (lambda log: _hash_moved(log, "nested"),
                                          "is not entry 77 of the signed tree: inclusion proof leads to another root"),
    "a character as a \\u escape": (_escaped, "the record's content does not match its own hash"),
    "a trailing newline after the body": (lambda log: _body(_doc(log)) + b"\n",
                                          "the record's content does not match its own hash"),
    "a duplicate key": (_duplicate_message, NOT_A_RECORD),
    "the whole record, chain.hash stale after an edit": (
        lambda log: log.lines[SEQ].replace(f"vm-{SEQ}".encode(), f"vm-{SEQ + 1}".encode()),
        "the record's content does not match its own hash"),
    "chain.hash a number": (lambda log: _with_hash(log, 0), "the record's content does not match its own hash"),
    "chain.hash null": (lambda log: _with_hash(log, None), "the record's content does not match its own hash"),
    "chain.hash a list holding the real hash": (lambda log: _with_hash(log, [_doc(log)["chain"]["hash"]]),
                                                "the record's content does not match its own hash"),
    "chain the string 'hash'": (lambda log: _with_chain(log, "hash"), NOT_A_RECORD),
    "chain a list holding 'hash'": (lambda log: _with_chain(log, ["hash"]), NOT_A_RECORD),
    "chain null": (lambda log: _with_chain(log, None), NOT_A_RECORD),
    "no chain": (_without_chain, NOT_A_RECORD),
    "an integer beyond 2**53": (lambda log: _with_field(log, str(2**53).encode()), NOT_A_RECORD),
    "a float overflowing to infinity": (lambda log: _with_field(log, b"1e400"), NOT_A_RECORD),
    "NaN": (lambda log: _with_field(log, b"NaN"), NOT_A_RECORD),
    "a lone surrogate": (lambda log: _with_field(log, b'"\\ud800"'), NOT_A_RECORD),
    "a body that is a JSON array": (lambda log: b"[" + _body(_doc(log)) + b"]", NOT_A_RECORD),
    "a body that is a JSON string": (lambda log: b'"chain"', NOT_A_RECORD),
    "a body that is a number": (lambda log: b"77", NOT_A_RECORD),
    "an empty body": (lambda log: b"", NOT_A_RECORD),
    "nesting past the recursion limit": (lambda log: _with_field(log, b"[" * 100_000 + b"]" * 100_000),
                                         NOT_A_RECORD),
}


@pytest.mark.parametrize("name", list(BODIES))
def test_a_forged_body_is_refused_for_its_one_reason(log: Log, genuine, name: str) -> None:  # type: ignore[no-untyped-def]
    forge, reason = BODIES[name]
    with pytest.raises(proof.ReceiptError, match=reason):
        _check(log, genuine, _with_extra(genuine[0], _packed(forge(log))))


@pytest.mark.parametrize("name", ["a character as a \\u escape", "a duplicate key", "chain.hash a number",
                                  "the whole record, chain.hash stale after an edit", "a lone surrogate"])
def test_the_same_forgery_uncompressed_is_refused_alike(log: Log, genuine, name: str) -> None:  # type: ignore[no-untyped-def]
    """The ``{`` switch to the form before compression gives the forger no other path past the checks."""
    forge, reason = BODIES[name]
    with pytest.raises(proof.ReceiptError, match=reason):
        _check(log, genuine, _with_extra(genuine[0], forge(log)))


def test_a_body_of_exactly_the_limit_is_inflated_and_one_byte_more_is_not(log: Log, genuine) -> None:  # type: ignore[no-untyped-def]
    body = _body(_doc(log))
    padded = body[:-1] + b" " * (proof.RECORD_LIMIT - len(body)) + b"}"
    assert len(padded) == proof.RECORD_LIMIT
    with pytest.raises(proof.ReceiptError, match="the record's content does not match its own hash"):
        _check(log, genuine, _with_extra(genuine[0], _packed(padded)))
    with pytest.raises(proof.ReceiptError, match="inflates past 4194304 bytes"):
        _check(log, genuine, _with_extra(genuine[0], _packed(padded[:-1] + b" }")))


def test_leading_whitespace_is_neither_the_uncompressed_form_nor_zlib(log: Log, genuine) -> None:  # type: ignore[no-untyped-def]
    """Only a first byte ``{`` means uncompressed; it cannot open a zlib stream (its low nibble is 0xB, not CM 8)."""
    assert ord("{") & 0x0F != zlib.DEFLATED
    with pytest.raises(proof.ReceiptError, match="the extra line holds neither a record nor a zlib stream"):
        _check(log, genuine, _with_extra(genuine[0], b" " + log.lines[SEQ]))


JSON_PIECES = [b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\", b"\\u0000", b"\\ud83d", b" ", b"\n",
               b'"hash":', b'"hash":"', b'"chain":{', b"\xf0\x9f\x98\x80", b"\xed\xa0\x80"]
VALUES = [b"9" * 4400, b"1e400", b"1E21", b"0.10", b"-0", b"9007199254740992", b'"\\ud800"', b'"\\u0076m-77"',
          b'"77"', b"77", b"76", b"77.0", b"true", b"null", b"[]", b"{}", b'"hash"', b'{"hash":"00"}', b'"h1"']
_MEMBER_VALUE = re.compile(rb'":("(?:[^"\\]|\\.)*"|[^,}\]]*)')
EDITS = st.lists(st.tuples(st.booleans(), st.floats(0, 1), st.integers(0, 8),
                           st.sampled_from(JSON_PIECES), st.sampled_from(VALUES)), min_size=1, max_size=3)


def _edited(data: bytes, edits: list[tuple[bool, float, int, bytes, bytes]]) -> bytes:
    """Each edit either replaces one member's scalar value (keeping the JSON well-formed) or splices raw bytes."""
    for on_value, at, cut, piece, value in edits:
        if on_value:
            members = list(_MEMBER_VALUE.finditer(data))
            member = members[int(at * len(members)) % len(members)]
            data = data[:member.start(1)] + value + data[member.end(1):]
        else:
            i = int(at * len(data))
            data = data[:i] + piece + data[i + cut:]
    return data


@settings(max_examples=300, derandomize=True, deadline=None)
@given(edits=EDITS, whole=st.booleans(), compressed=st.booleans())
def test_no_edit_of_the_record_proves_anything_else_or_crashes(log: Log, genuine, edits, whole: bool,  # type: ignore[no-untyped-def]
                                                               compressed: bool) -> None:
    """Edits where JSON is fragile (escapes, surrogates, numbers, the chain keys) to the body or the whole record,
    compressed or not: refused with a ReceiptError, or (an edit that cancels out) proving exactly the genuine."""
    data = _edited(log.lines[SEQ] if whole else _body(_doc(log)), edits)
    try:
        result = _check(log, genuine, _with_extra(genuine[0], _packed(data) if compressed else data))
    except proof.ReceiptError as exc:
        event(str(exc).split(":")[0][:50])  # --hypothesis-show-statistics: which checks the edits reach
        return
    assert result == genuine[2]


# --- The zlib stream -----------------------------------------------------------------------------------------

def _spliced(data: bytes, header: bytes) -> bytes:
    """``data``'s DEFLATE blocks and Adler-32 trailer under another zlib header."""
    return header + data[6:] if data[1] & 0x20 else header + data[2:]


STREAMS = {
    "FDICT set, the header cut after 2 bytes": (lambda body: _packed(body)[:2], r"unknown dictionary \(id \)"),
    "FDICT set, DICTID cut to 2 bytes": (lambda body: _packed(body)[:4],
                                         rf"unknown dictionary \(id {zlib.adler32(V1).to_bytes(4, 'big')[:2].hex()}\)"),
    "a window larger than 32 KiB (CINFO 8)": (
        lambda body: _spliced(_packed(body), _header(0x88, 0xE0) + zlib.adler32(V1).to_bytes(4, "big")),
        r"corrupt \(Error -3 while decompressing data: invalid window size\)"),
    "the dictionary's blocks without FDICT": (lambda body: _spliced(_packed(body), _header(0x78, 0xC0)),
                                              "corrupt .*invalid distance too far back"),
    "a raw DEFLATE stream": (lambda body: _packed(body, wbits=-15),
                             "the extra line holds neither a record nor a zlib stream"),
    "a gzip stream": (lambda body: _packed(body, wbits=31, dictionary=None),
                      "the extra line holds neither a record nor a zlib stream"),
    "a second zlib stream after the first": (lambda body: _packed(body) + _packed(body.replace(b"vm-77", b"vm-78")),
                                             "truncated or followed by other bytes"),
    "an empty extra line": (lambda body: b"", "the extra line holds neither a record nor a zlib stream"),
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_bad_zlib_stream_is_refused_for_its_one_reason(log: Log, genuine, name: str) -> None:  # type: ignore[no-untyped-def]
    forge, reason = STREAMS[name]
    with pytest.raises(proof.ReceiptError, match=reason):
        _check(log, genuine, _with_extra(genuine[0], forge(_body(_doc(log)))))


DICTID = zlib.adler32(V1).to_bytes(4, "big")
SAME = {
    "the body uncompressed (it starts with '{')": lambda log: _body(_doc(log)),
    "the whole record compressed": lambda log: _packed(log.lines[SEQ]),
    "a 512-byte window (CINFO 1)": lambda log: _packed(_body(_doc(log)), wbits=9),
    "stored blocks (level 0)": lambda log: _packed(_body(_doc(log)), level=0),
    "FDICT naming the dictionary over blocks that never use it": lambda log: _spliced(
        _packed(_body(_doc(log)), dictionary=None), _header(0x78, 0xE0) + DICTID),
    "another FLEVEL in the header": lambda log: _spliced(_packed(_body(_doc(log))), _header(0x78, 0x20) + DICTID),
}


@pytest.mark.parametrize("name", list(SAME))
def test_another_encoding_of_the_same_body_proves_exactly_the_same(log: Log, genuine, name: str) -> None:  # type: ignore[no-untyped-def]
    """Harmless malleability (docs/audit.md): the receipt's bytes differ, what it proves does not."""
    extra = SAME[name](log)
    assert extra != base64.b64decode(_extra_text(genuine[0]))
    assert _check(log, genuine, _with_extra(genuine[0], extra)) == genuine[2]


# --- base64 --------------------------------------------------------------------------------------------------

def _proof_line(text: str) -> str:
    return text.split("\n")[3]


def _padding_bits_set(line: str) -> str:
    """A 32-byte hash in base64 ends in one data character with 2 unused low bits; setting one decodes alike."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(line[-2]) ^ 1]
    return line[:-2] + last + "="


BASE64 = {
    "proof hash without its padding": (lambda text: text.replace(_proof_line(text), _proof_line(text)[:-1]),
                                       "the record or a proof hash is not base64"),
    "proof hash with padding bits set": (lambda text: text.replace(_proof_line(text),
                                                                   _padding_bits_set(_proof_line(text))),
                                         "the record or a proof hash is not in canonical base64"),
    "extra in the URL-safe alphabet": (lambda text: _with_extra_text(text, "eJ-_"),
                                       "the record or a proof hash is not base64"),
    "extra with a space inside": (lambda text: _with_extra_text(text, _extra_text(text)[:8] + " "
                                                                + _extra_text(text)[8:]),
                                  "the record or a proof hash is not base64"),
    "extra with a non-ASCII letter": (lambda text: _with_extra_text(text, "\u00e9" + _extra_text(text)[1:]),
                                      "the record or a proof hash is not base64"),
    "extra line with two spaces": (lambda text: _with_extra_text(text, " " + _extra_text(text)),
                                   "the record or a proof hash is not base64"),
}


@pytest.mark.parametrize("name", list(BASE64))
def test_non_canonical_base64_is_refused(log: Log, genuine, name: str) -> None:  # type: ignore[no-untyped-def]
    forge, reason = BASE64[name]
    forged = forge(genuine[0])
    assert forged != genuine[0]
    with pytest.raises(proof.ReceiptError, match=reason):
        _check(log, genuine, forged)


# --- Index, seq, chain and tree ------------------------------------------------------------------------------

def _signed_tree(log: Log, chain: str, lines: list[bytes]) -> tuple[str, merkle.MemoryTree]:
    """A tree checkpoint over ``lines`` for ``chain``, signed by the log's own key (which the host holds)."""
    tree = merkle.MemoryTree([merkle.leaf_hash(line) for line in lines])
    head = json.loads(lines[-1])["chain"]["hash"]
    return cp.sign_tree(cp.load_private(log.key_file), chain, len(lines), merkle.root(tree.subtree, len(lines)),
                        head), tree


def test_a_record_under_another_chains_checkpoint_of_the_same_tree_is_refused(log: Log, genuine) -> None:  # type: ignore[no-untyped-def]
    """Same key, same root, another origin: the inclusion proof holds, only the chain id tells them apart."""
    note, _ = _signed_tree(log, "h2", log.lines)
    forged = genuine[0].split("\n\n")[0] + "\n\n" + note
    assert cp.parse(note).root == cp.parse(genuine[0].split("\n\n", 1)[1]).root
    with pytest.raises(proof.ReceiptError, match="the record is of chain 'h1', the checkpoint of 'h2'"):
        proof.check(forged, log.public)


def test_the_log_key_alone_can_sign_a_forged_tree_but_no_witness_cosigns_it(log: Log, genuine) -> None:  # type: ignore[no-untyped-def]
    """The host holds the log key: a tree with record 77 rewritten is signed alike, so only a witness tells it from
    the log's (its cosignature, moved onto the forged note, does not verify). Why --witness-key matters."""
    lines = list(log.lines)
    doc = _doc(log)
    doc["message"] = f"domain vm-{SEQ + 1} started"
    doc["chain"]["hash"] = hashlib.sha256(_body(doc)).hexdigest()
    lines[SEQ] = canonicalize(doc)
    note, tree = _signed_tree(log, CHAIN, lines)
    cosignature = genuine[0].rstrip("\n").split("\n")[-1] + "\n"
    forged = proof.build(lines[SEQ], SEQ, merkle.inclusion_proof(tree.subtree, SEQ, RECORDS), note + cosignature)
    assert proof.check(forged, log.public)["record"]["message"] == f"domain vm-{SEQ + 1} started"
    with pytest.raises(proof.ReceiptError, match=r"0 of the 1 witnesses given cosigned the checkpoint \(none\)"):
        _check(log, genuine, forged)


def test_a_record_claiming_a_seq_past_the_tree_is_refused(log: Log, genuine) -> None:  # type: ignore[no-untyped-def]
    doc = _doc(log)
    doc["chain"]["seq"] = RECORDS
    forged = _with_extra(genuine[0].replace(f"\nindex {SEQ}\n", f"\nindex {RECORDS}\n"), _packed(_body(doc)))
    with pytest.raises(proof.ReceiptError, match="is not entry 600 of the signed tree: leaf index 600 is not below "
                                                 "the tree size 600"):
        _check(log, genuine, forged)


def test_a_neighbours_genuine_body_under_this_index_is_refused(log: Log, genuine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(proof.ReceiptError, match="the record's seq 76 is not the receipt's index 77"):
        _check(log, genuine, _with_extra(genuine[0], _packed(_body(_doc(log, SEQ - 1)))))


def test_a_neighbours_genuine_body_under_its_own_index_with_this_proof_is_refused(log: Log, genuine) -> None:  # type: ignore[no-untyped-def]
    forged = _with_extra(genuine[0].replace(f"\nindex {SEQ}\n", f"\nindex {SEQ - 1}\n"),
                         _packed(_body(_doc(log, SEQ - 1))))
    with pytest.raises(proof.ReceiptError, match="is not entry 76 of the signed tree: inclusion proof leads to "
                                                 "another root"):
        _check(log, genuine, forged)


# --- Records the shared log cannot hold: floats, non-BMP keys, escapes, integers at 2**53 - 1 ------------------

EXOTIC = {"@timestamp": "2026-11-29T01:00:00Z", "message": "a \"quoted\"\\ line\n\u0000\u001f\u007f",
          "float": [0.1, 1e21, 1e-7, -0.0, 5e-324, 123.456], "big": 2**53 - 1, "small": -(2**53 - 1),
          "\U0001f600": "non-BMP key", "\ufb01": "BMP key after it in UTF-16 order",
          "hash": "a top-level field of that name", "file": {"hash": {"sha256": "ab" * 32}}}


@pytest.fixture(scope="module")
def exotic(log: Log) -> tuple[str, bytes]:
    """A receipt for record 1 of a small chain "x1" whose records hold everything the fast path leaves to the
    reference canonicalization, and that record's stored bytes."""
    head, lines = Head("x1"), []
    for i in range(3):
        doc, head = seal({**EXOTIC, "n": i}, head)
        lines.append(canonicalize(doc))
    note, tree = _signed_tree(log, "x1", lines)
    return proof.build(lines[1], 1, merkle.inclusion_proof(tree.subtree, 1, 3), note), lines[1]


def test_an_exotic_record_round_trips_through_its_hashed_body(log: Log, exotic) -> None:  # type: ignore[no-untyped-def]
    text, line = exotic
    assert proof.parse(text).record == line
    assert proof.check(text, log.public)["record"] == json.loads(line)


def test_an_exotic_body_in_code_point_key_order_is_refused(log: Log, exotic) -> None:  # type: ignore[no-untyped-def]
    """RFC 8785 sorts keys by UTF-16 code units ("\\U0001f600" before "\\ufb01"); Python's sort_keys by code points."""
    text, line = exotic
    doc = json.loads(line)
    del doc["chain"]["hash"]
    respelled = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    assert respelled.index("\ufb01".encode()) < respelled.index("\U0001f600".encode())
    with pytest.raises(proof.ReceiptError, match="the record's content does not match its own hash"):
        proof.check(_with_extra(text, _packed(respelled)), log.public)


@pytest.mark.parametrize(("canonical", "respelled"), [(b"1e+21", b"1E21"), (b"1e-7", b"1.0e-7"), (b"0.1,", b"0.10,")])
def test_an_exotic_body_with_a_float_respelled_is_refused(log: Log, exotic, canonical: bytes,  # type: ignore[no-untyped-def]
                                                          respelled: bytes) -> None:
    text, line = exotic
    body = _body(json.loads(line))
    assert body.count(canonical) == 1
    with pytest.raises(proof.ReceiptError, match="the record's content does not match its own hash"):
        proof.check(_with_extra(text, _packed(body.replace(canonical, respelled))), log.public)


# --- The CLI's --json output ---------------------------------------------------------------------------------

def test_verify_proof_json_is_exactly_what_check_returns(log: Log, genuine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    receipt = tmp_path / "r.tlog-proof"
    receipt.write_text(genuine[0])
    run = subprocess.run([*TEE_AUDIT, "verify-proof", str(receipt), "--public-key", str(log.public_file),
                          "--witness-key", _witness_vkey(genuine[1]), "--json"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert (run.returncode, run.stderr, run.stdout.count("\n")) == (0, "", 1), run.stdout + run.stderr
    assert json.loads(run.stdout) == genuine[2]


def _witness_vkey(witness: WitnessKey) -> str:
    blob = base64.b64encode(b"\x04" + witness.public.public_bytes_raw()).decode()
    return f"{witness.name}+{witness.key_id.hex()}+{blob}"
